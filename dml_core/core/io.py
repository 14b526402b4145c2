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


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically. Load with ``torch.load(path, weights_only=True)``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
