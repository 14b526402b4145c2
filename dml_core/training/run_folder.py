"""The run folder: where one training run writes everything, atomically (``dml_core.core.io``).

Layout (docs/ARCHITECTURE.md)::

    <run_dir>/config.yaml            resolved recipe
    <run_dir>/metrics.csv            one row per epoch, rewritten every epoch
    <run_dir>/summary.json           status, best and last epoch, timing, hardware, versions
    <run_dir>/checkpoints/last.pt    resume point (end of the last complete epoch)
    <run_dir>/checkpoints/best.pt    model + criterion of the selected epoch
    <run_dir>/features/best.pt       test features of the selected epoch
    <run_dir>/features/last.pt       test features of the last epoch
    <run_dir>/provenance.json        what produced the run: code, data, git commit (below)
    <run_dir>/.lock                  held while a process trains into the folder

Provenance (``provenance.json``, also in summary.json): ``code`` = :func:`code_fingerprint`,
the SHA-256 of every ``.py`` file of the ``dml_core`` subpackages that training runs
(:data:`TRAINING_CODE`: core/io.py, data, evaluation, losses, methods (its recipes and fair
setting aside), models, training; not the report, the batch runner, notebook helpers or the
toy); ``data`` = per prepared data set read, ``v<prepare version>:<SHA-256 of index.csv>``;
``weights`` = the pretrained weights' file name, SHA-256 and source (None from scratch;
``trainer.pretrained_weights``); ``git_commit`` (informational only; a dirty tree has the same
commit). ``train`` reuses a complete run, or resumes an interrupted one, only when recipe
(epochs aside), code, data and weights are the same; otherwise every file of the old run
is moved aside and deleted (:meth:`RunFolder.clear`) and training starts from scratch.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from dml_core.core import io as dio
from dml_core.core.paths import PACKAGE_DIR, REPO_ROOT

#: The leading columns of metrics.csv, in this order; then test/*, val/*, then the method's own.
BASE_COLUMNS = ["epoch", "lr", "train_loss", "train_accuracy", "images_per_s", "epoch_time_s"]

#: What a training run writes into its folder; :meth:`RunFolder.clear` moves exactly these aside
#: (a notebook's own files in the same folder, notebook.ipynb, log.txt, status.json, stay).
OUTPUTS = ("config.yaml", "metrics.csv", "summary.json", "provenance.json", "checkpoints",
           "features", "figures")

#: The parts of ``dml_core`` (relative to the package) whose source a training run depends on.
TRAINING_CODE = ("core/io.py", "data", "evaluation", "losses", "methods", "models", "training")
#: Inside those, the recipes and the fair setting are data, not code: a change there that matters
#: to a run changes its resolved recipe, which the run folder compares on its own.
NOT_TRAINING_CODE = ("methods/recipes.py", "methods/fair.py")

_PACKAGE = PACKAGE_DIR


def code_fingerprint(package: str | os.PathLike = _PACKAGE) -> str:
    """SHA-256 over the path and bytes of every ``.py`` file of :data:`TRAINING_CODE` under
    ``package`` (the ``dml_core`` folder), in sorted order."""
    package = Path(package)
    h = hashlib.sha256()
    files: list[Path] = []
    for part in TRAINING_CODE:
        p = package / part
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.is_file() else []
    for f in files:
        if "__pycache__" in f.parts or f.relative_to(package).as_posix() in NOT_TRAINING_CODE:
            continue
        h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


class RunFolder:
    """Paths and writers of one run folder."""

    def __init__(self, run_dir: str | os.PathLike):
        self.root = Path(run_dir)
        self.provenance = self.root / "provenance.json"
        self.lock_file = self.root / ".lock"
        self.config = self.root / "config.yaml"
        self.metrics = self.root / "metrics.csv"
        self.summary = self.root / "summary.json"
        self.last_checkpoint = self.root / "checkpoints" / "last.pt"
        self.best_checkpoint = self.root / "checkpoints" / "best.pt"
        self.best_features = self.root / "features" / "best.pt"
        self.last_features = self.root / "features" / "last.pt"

    def write_config(self, recipe: dict) -> None:
        dio.write_yaml(self.config, plain(recipe))

    def write_metrics(self, rows: list[dict]) -> None:
        dio.write_text(self.metrics, metrics_csv(rows))

    def write_summary(self, summary: dict) -> None:
        dio.write_json(self.summary, summary)

    def read_summary(self) -> dict | None:
        return dio.read_json(self.summary) if self.summary.exists() else None

    def recipe_changes(self, recipe: dict) -> list[str]:
        """Keys whose value differs from this folder's ``config.yaml`` (``epochs`` excepted: more
        epochs than before means "continue"). Empty when there is no config yet."""
        if not self.config.is_file():
            return []
        try:
            old = dio.read_yaml(self.config) or {}
        except (OSError, ValueError):
            return ["<unreadable config.yaml>"]
        new = plain(recipe)
        return [k for k in sorted(set(old) | set(new)) if k != "epochs" and old.get(k) != new.get(k)]

    def discard_progress(self) -> None:
        """Forget the progress of a previous run (summary, metrics, last checkpoint) so that it
        is not resumed; ``train`` uses :meth:`clear`, which removes every file it wrote."""
        for path in (self.summary, self.metrics, self.last_checkpoint):
            path.unlink(missing_ok=True)

    def lock(self, timeout: float | None = None):
        """The folder's lock (:class:`dml_core.core.locks.FileLock`): one trainer at a time; a
        second one waits (``timeout=None``) and then finds the run complete or resumes it."""
        from dml_core.core.locks import FileLock

        return FileLock(self.lock_file, what=f"the run folder {self.root}", timeout=timeout)

    def has_outputs(self) -> bool:
        return any((self.root / name).exists() for name in OUTPUTS)

    def clear(self) -> Path | None:
        """Move every output of a previous run (:data:`OUTPUTS`) into ``.old-<time>/`` (renames,
        atomic each), then delete that folder. A kill in between leaves only ``.old-*``, which
        :meth:`remove_leftovers` deletes on the next start. Returns the aside folder or None."""
        present = [self.root / n for n in OUTPUTS if (self.root / n).exists()]
        if not present:
            return None
        aside = self.root / f".old-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        aside.mkdir(parents=True, exist_ok=True)
        for path in present:
            os.replace(path, aside / path.name)
        shutil.rmtree(aside, ignore_errors=True)
        return aside

    def remove_leftovers(self) -> list[Path]:
        """Delete what a killed process left behind: ``.*.tmp`` files of interrupted atomic
        writes (``dml_core.core.io``) in the folder and its checkpoints/features/figures, and
        ``.old-*`` folders of an interrupted :meth:`clear`. Call only while holding the lock."""
        removed = []
        for folder in (self.root, self.root / "checkpoints", self.root / "features",
                       self.root / "figures"):
            if folder.is_dir():
                for path in folder.glob(".*.tmp"):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        for path in self.root.glob(".old-*") if self.root.is_dir() else []:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        return removed

    def read_provenance(self) -> dict | None:
        try:
            return dio.read_json(self.provenance) if self.provenance.is_file() else None
        except (OSError, ValueError):
            return None

    def write_provenance(self, provenance: dict) -> None:
        dio.write_json(self.provenance, provenance)

    def restart_reasons(self, recipe: dict, provenance: dict) -> list[str]:
        """Why the run in this folder cannot be reused or resumed for ``recipe`` produced with
        ``provenance`` (code, data): empty when it can, or when the folder holds no run."""
        if not self.has_outputs():
            return []
        reasons = []
        changes = self.recipe_changes(recipe)
        if changes:
            reasons.append(f"the recipe changed ({', '.join(changes)})")
        old = self.read_provenance()
        if old is None:
            reasons.append("it has no provenance.json (made by an older version)")
            return reasons
        if old.get("code") != provenance.get("code"):
            reasons.append("the training code changed")
        if old.get("data") != provenance.get("data"):
            changed = sorted(k for k in set(old.get("data") or {}) | set(provenance.get("data") or {})
                             if (old.get("data") or {}).get(k) != (provenance.get("data") or {}).get(k))
            reasons.append(f"the prepared data changed ({', '.join(changed)})")
        if old.get("weights") != provenance.get("weights"):
            reasons.append("the pretrained weights changed")
        return reasons

    def reuse_or_restart(self, recipe: dict, provenance: dict, epochs: int,
                         resume: bool = True) -> bool:
        """Decide, holding :meth:`lock`, whether the run in this folder may be reused or resumed
        for ``recipe`` made with ``provenance``; return the ``resume`` flag for ``fit``. When
        :meth:`restart_reasons` gives reasons, or ``checkpoints/last.pt`` of an unfinished run
        cannot be read (it is moved to ``last.pt.corrupt``), every old output is removed
        (:meth:`clear`), the reasons are printed, and False is returned."""
        from . import checkpoint

        reasons = self.restart_reasons(recipe, provenance)
        if not reasons and resume and self.last_checkpoint.exists() and not self.is_complete(epochs):
            problem = checkpoint.unreadable(self.last_checkpoint)
            if problem:
                aside = self.root / "last.pt.corrupt"
                os.replace(self.last_checkpoint, aside)
                reasons = [f"{self.last_checkpoint} cannot be read ({problem}); moved aside to "
                           f"{aside}, nothing to resume from"]
        if reasons:
            print(f"{self.root}: training from scratch, the old run's files are removed: "
                  + "; ".join(reasons), flush=True)
            self.clear()
            return False
        return resume

    def is_complete(self, epochs: int) -> bool:
        """True when summary.json says the run finished ``epochs`` (or more) epochs."""
        try:
            summary = self.read_summary()
        except (OSError, ValueError):
            return False
        return bool(summary and summary.get("status") == "complete"
                    and int(summary.get("epochs_completed", 0)) >= int(epochs))


def metric_columns(rows: Iterable[dict]) -> list[str]:
    """Column order: BASE_COLUMNS, then test/*, val/*, then every other key as first seen."""
    seen: list[str] = []
    for row in rows:
        seen.extend(k for k in row if k not in seen)
    rest = [k for k in seen if k not in BASE_COLUMNS]
    return (BASE_COLUMNS + [k for k in rest if k.startswith("test/")]
            + [k for k in rest if k.startswith("val/")]
            + [k for k in rest if not k.startswith(("test/", "val/"))])


def metrics_csv(rows: list[dict]) -> str:
    """The CSV text of ``rows``; floats with full precision (``repr``), missing cells empty."""
    columns = metric_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def plain(obj: Any) -> Any:
    """Recipes as YAML-safe plain data (tuples → lists, numpy scalars → Python, paths → str)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def hardware_info(device: torch.device | str) -> dict:
    """The device trained on, the CPU model, the GPU name (or None), cores and memory."""
    device = torch.device(device)
    gpu = None
    if device.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(device)
    info = {"device": str(device), "cpu": _cpu_name(), "gpu": gpu, "cpu_count": os.cpu_count()}
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict:
    import numpy

    import dml_core

    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:
        tv = None
    return {"torch": torch.__version__, "torchvision": tv, "numpy": numpy.__version__,
            "python": sys.version.split()[0], "dml_core": getattr(dml_core, "__version__", None),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()
            if torch.backends.cudnn.is_available() else None}


def git_commit(repo: str | os.PathLike = REPO_ROOT) -> str | None:
    """``git rev-parse HEAD`` in the repository, or None (no git, not a repository)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
