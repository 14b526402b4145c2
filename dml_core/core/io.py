"""Atomic file writes: a file either exists complete or not at all.

Every writer goes through :func:`atomic_path`: it yields a temporary path in the same folder, and
only when the block finishes without an exception is the temporary file renamed over the target
(``os.replace`` is atomic on POSIX). An interrupted run therefore never leaves a partial file that
looks complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NaN is written as ``NaN``)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as YAML atomically, keys in insertion order."""
    import yaml  # imported here: the data and model code runs without PyYAML (GPU check)

    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_yaml(path: str | os.PathLike) -> Any:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically. Load with ``torch.load(path, weights_only=True)``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
