"""Where things live: the repository root, the data root, run folders and figures.

Every default can be moved with an environment variable, so a GPU machine can keep the data on a
fast disk without editing code:

- ``DML_DATA_ROOT``: raw and prepared data sets (default ``<repo>/data``).
- ``DML_RUNS_ROOT``: run folders and executed notebooks (default ``<repo>/runs``).
- ``TORCH_HOME``: the standard torch cache; pretrained weights are read from
  ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``).

Names that become folders (profile names, run ids) are checked by :func:`check_name`: letters,
digits, ``_``, ``.``, ``-``, starting with a letter or digit, matched in full (no ``/``, no
``..``, no trailing newline).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the dml_core folder
REPO_ROOT = PACKAGE_DIR.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PROFILES_DIR = REPO_ROOT / "profiles"
FIGURES_DIR = REPO_ROOT / "figures"


def data_root() -> Path:
    """The data root: ``$DML_DATA_ROOT`` or ``<repo>/data``."""
    return Path(os.environ.get("DML_DATA_ROOT", REPO_ROOT / "data")).expanduser()


def runs_root() -> Path:
    """The root of all run output: ``$DML_RUNS_ROOT`` or ``<repo>/runs``."""
    return Path(os.environ.get("DML_RUNS_ROOT", REPO_ROOT / "runs")).expanduser()


def torch_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints``, where torchvision and pretrainedmodels cache weights."""
    torch_home = os.environ.get(
        "TORCH_HOME",
        os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"),
    )
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


#: What a profile name or a run id may be (matched in full: :func:`re.fullmatch`).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_valid_name(value: object) -> bool:
    """True when ``value`` is a string usable as one folder name (:data:`NAME_PATTERN`)."""
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


def check_name(value: object, what: str = "name") -> str:
    """``value`` when :func:`is_valid_name`, else a ValueError saying what a name may hold."""
    if not is_valid_name(value):
        raise ValueError(f"{what} {value!r} must be letters, digits, '_', '.', '-' (starting with "
                         "a letter or digit; it names a folder)")
    return value
