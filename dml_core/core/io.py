"""Atomic file writes: a file either exists complete or not at all.

Every writer goes through :func:`atomic_path`: it yields a temporary path in the same folder
(``.<name>.<random>.tmp``), and only when the block finishes without an exception is the
temporary file flushed to the disk (``fsync``), renamed over the target (``os.replace``, atomic on
POSIX) and the rename itself made durable (``fsync`` of the folder). On any error the temporary
file is removed, so no partial file survives a failure; a process killed mid-write leaves only a
``.*.tmp`` file, which the next start of the same writer removes (:func:`remove_temporaries`).

A full disk (``ENOSPC``, ``EDQUOT``; or ``torch.save``'s ``RuntimeError`` on a file system with
no space left) becomes ONE :class:`DiskFullError` naming the file, the space it needs and the
space free.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)

#: errno values that mean "no space left" (a full disk, or a quota).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Below this many free bytes, a writer's failure without an errno (torch.save) is a full disk.
_NEARLY_FULL = 16 * 2**20
#: What :func:`atomic_path` names its temporary files: ``.<name>.<random>.tmp``.
TEMPORARY_GLOB = ".*.tmp"


def fmt_bytes(n: float | None) -> str:
    """``1.5 GB``, ``320 MB``, ``12 kB``, ``17 bytes`` (decimal units, as ``df -H``)."""
    if n is None:
        return "an unknown amount"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes free for this user on the file system of ``folder`` (its nearest existing parent)."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


class DiskFullError(OSError):
    """The disk (or a quota) filled while writing ``path``. The message names the file, the space
    it needs (``needed``, bytes; at least what was written when the disk filled) and the space
    free; nothing partial is left behind. ``errno`` is ``ENOSPC``, so ``except OSError`` sees it."""

    def __init__(self, path: str | os.PathLike, needed: int | None, free: int | None,
                 written: int | None = None):
        self.path, self.needed, self.free, self.written = Path(path), needed, free, written
        done = (f"; {fmt_bytes(written)} had been written when it filled"
                if written else "")
        self.message = (
            f"disk full: writing {self.path} needs {'at least ' if needed == written else ''}"
            f"{fmt_bytes(needed)}, but only {fmt_bytes(free)} is free on its file system{done}. "
            "The partial file was removed and everything finished before is kept: free some "
            "space (or point DML_RUNS_ROOT / DML_DATA_ROOT at a larger disk) and run the same "
            "command again")
        super().__init__(errno.ENOSPC, self.message, str(self.path))

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable (worker processes, Slurm jobs)
        return (type(self), (self.path, self.needed, self.free, self.written))


def is_disk_full(exc: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """True when ``exc`` (or an exception it was raised from) is ENOSPC / EDQUOT, or, for an
    error without an errno (``torch.save`` reports a failed write as ``RuntimeError``), when the
    file system of ``folder`` has almost no space left."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError) or (isinstance(e, OSError)
                                            and e.errno in DISK_FULL_ERRNOS):
            return True
        e = e.__cause__ or e.__context__
    if folder is not None and isinstance(exc, RuntimeError):
        free = free_bytes(folder)
        return free is not None and free < _NEARLY_FULL
    return False


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk. File systems that cannot
    fsync a folder (EINVAL, ...) are skipped; a full disk or an I/O error is raised."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS or exc.errno == errno.EIO:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None,
                durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, fsync it, rename it to
    ``path`` and fsync the folder. On any error the temporary file is removed; a full disk
    raises :class:`DiskFullError` (``needed``: the bytes the file takes, when known).

    ``durable=False`` skips both fsyncs (the rename stays atomic): for the many files of a
    folder whose completion a last durable file marks, written after one ``os.sync()`` (the
    demo's 4,500 images: one fsync each cost ~2 s of its 9)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        yield tmp_path
        if durable:
            _fsync(tmp_path)
        os.replace(tmp_path, path)
        if durable:
            _fsync(path.parent, directory=True)
    except Exception as exc:
        if isinstance(exc, DiskFullError) or not is_disk_full(exc, path.parent):
            raise
        written = None
        with contextlib.suppress(OSError):
            written = tmp_path.stat().st_size if tmp_path is not None else None
        with contextlib.suppress(OSError):
            if tmp_path is not None:
                tmp_path.unlink()
        raise DiskFullError(path, max(needed or 0, written or 0) or None, free_bytes(path.parent),
                            written) from exc
    finally:
        if tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()


def remove_temporaries(folder: str | os.PathLike, patterns: Iterable[str] = (TEMPORARY_GLOB,),
                       recursive: bool = False) -> list[Path]:
    """Delete the files of ``folder`` (and its subfolders when ``recursive``) matching
    ``patterns`` (default: :func:`atomic_path`'s ``.*.tmp``): what a killed writer left. Call
    only while no other process writes there (hold the folder's lock). Returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for pattern in patterns:
        for path in folder.rglob(pattern) if recursive else folder.glob(pattern):
            if path.is_file() or path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


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


def load_yaml12(text: str) -> Any:
    """``text`` read as YAML with the YAML 1.2 core schema's scalars (what a person typing a value
    means), not PyYAML's YAML 1.1 ones: ``1e-3`` is the float 0.001 (1.1: a string), ``010`` is
    10 (1.1: octal 8), ``yes``/``on`` and ``12:30`` are strings (1.1: True and 750), only
    ``true``/``false`` (any case) are booleans and ``null``, ``~`` or nothing is None. Lists and
    mappings as usual; quoted text is always a string."""
    import yaml

    return yaml.load(text, Loader=_yaml12_loader())  # noqa: S506 - a SafeLoader subclass


_YAML12: dict[str, Any] = {}


def _yaml12_loader() -> type:
    """A ``yaml.SafeLoader`` with the YAML 1.2 core schema's implicit scalars (built once)."""
    if "loader" in _YAML12:
        return _YAML12["loader"]
    import re

    import yaml

    class Yaml12Loader(yaml.SafeLoader):
        pass

    Yaml12Loader.yaml_implicit_resolvers = {}  # drop every YAML 1.1 rule (bool, int, timestamp...)
    rules = [
        ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", list("~nN") + [""]),
        ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
        ("tag:yaml.org,2002:int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
        ("tag:yaml.org,2002:float",
         r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)", list("-+.0123456789")),
    ]
    for tag, pattern, first in rules:
        Yaml12Loader.add_implicit_resolver(tag, re.compile(f"^(?:{pattern})$"), first)

    def to_int(loader, node):
        text = loader.construct_scalar(node)
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)  # "010" is ten

    def to_float(loader, node):
        text = loader.construct_scalar(node).lower()
        if text.endswith(("inf", "nan")):
            return float(text.replace(".", ""))
        return float(text)

    Yaml12Loader.add_constructor("tag:yaml.org,2002:int", to_int)
    Yaml12Loader.add_constructor("tag:yaml.org,2002:float", to_float)
    Yaml12Loader.add_constructor(
        "tag:yaml.org,2002:bool", lambda loader, node: loader.construct_scalar(node).lower() == "true")
    _YAML12["loader"] = Yaml12Loader
    return Yaml12Loader
def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts, lists, tuples): what ``torch.save`` of it
    writes, give or take a few kB of structure."""
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):
        return int(obj.numel()) * int(obj.element_size())
    return 0


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically. Load with ``torch.load(path, weights_only=True)``."""
    import torch

    with atomic_path(path, needed=tensor_bytes(obj)) as tmp:
        torch.save(obj, tmp)
