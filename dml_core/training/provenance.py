"""What produced a training run (its provenance, also in its summary) and where it ran.

:func:`code_fingerprint` is the SHA-256 of every ``.py`` file of the ``dml_core`` parts that
training runs (:data:`TRAINING_CODE`: the run folder's writers and checkpoint format in core/, data,
evaluation, losses, methods (its recipes, declarations, schema and fair setting aside), models, training; not the report,
the batch runner, notebook helpers or the toy). :func:`dml_core.training.train` records it with the
data fingerprints (``v<prepare version>:<SHA-256 of index.csv>`` per prepared data set read) and
:func:`git_commit` (informational only: a dirty tree has the same commit); the run folder
(:class:`dml_core.core.run_folder.RunFolder`) reuses or resumes a run only when they match.
:func:`hardware_info` and :func:`library_versions` go into the summary.
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from dml_core.core.paths import PACKAGE_DIR, REPO_ROOT

#: The parts of ``dml_core`` (relative to the package) whose source a training run depends on.
TRAINING_CODE = ("core/io.py", "core/checkpoint.py", "core/run_folder.py", "data", "evaluation",
                 "losses", "methods", "models", "training")
#: Inside those, the recipes (with the methods' declarations), the fair setting and the recipe schema
#: are data and checks, not code: a change there that matters
#: to a run changes its resolved recipe, which the run folder compares on its own.
NOT_TRAINING_CODE = ("methods/recipes.py", "methods/fair.py", "methods/registry.py",
                     "methods/schema.py", "methods/__main__.py")

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


def hardware_info(device: torch.device | str) -> dict:
    """The device trained on, the CPU model, the instruction set torch's CPU kernels use
    (``cpu_isa``: AVX512, AVX2, DEFAULT, ...; it changes the order of their sums, so numbers
    from two ISAs are not bit-identical), the GPU name (or None), cores and memory."""
    device = torch.device(device)
    gpu = None
    if device.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(device)
    info = {"device": str(device), "cpu": _cpu_name(),
            "cpu_isa": torch.backends.cpu.get_cpu_capability(), "gpu": gpu,
            "cpu_count": os.cpu_count()}
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
