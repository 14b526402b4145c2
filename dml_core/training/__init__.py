"""The training engine: one loop (:func:`fit`) for every method, and :func:`train`, which builds
data, method and evaluator from a recipe and calls it. The run folder it writes is
:class:`dml_core.core.run_folder.RunFolder`'s (re-exported here)."""
from dml_core.core.checkpoint import load as load_checkpoint
from dml_core.core.run_folder import RunFolder

from .engine import Evaluation, NonFiniteLossError, fit, resolve_device, train_epoch
from .provenance import git_commit, hardware_info, library_versions
from .seeding import get_rng_state, seed_everything, set_rng_state
from .selection import ClassSubset, is_better, split_classes
from .trainer import build_evaluator, train

__all__ = [
    "ClassSubset", "Evaluation", "NonFiniteLossError", "RunFolder", "build_evaluator",
    "fit", "get_rng_state", "git_commit", "hardware_info", "is_better",
    "library_versions", "load_checkpoint", "resolve_device", "seed_everything", "set_rng_state",
    "split_classes", "train", "train_epoch",
]
