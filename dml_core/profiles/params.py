"""Notebook parameters: one source, the notebook's own ``parameters`` cell, plus their validation.

Papermill only *warns* when a profile passes a parameter that the notebook does not define, so a
misspelled ``epoch: 1`` would silently run the full recipe. Every notebook therefore validates
its parameters in its second cell::

    # cell 1, tagged "parameters"
    profile = "interactive"  # injected by the batch runner; names runs/<profile>/
    run_dir = None  # injected by the batch; None means runs_root()/<profile>/<notebook>
    dataset = "demo"  # demo | car | cub | sop | isc
    ...
    # cell 2
    from dml_core.profiles.params import validate_parameters
    P = validate_parameters("01_normsoftmax", globals())

The names, defaults and help texts are read from the ``parameters`` cell itself
(``papermill.inspect_notebook``): a parameter is added, renamed or given a new default there and
nowhere else. The type of a parameter is the type of its default (a list's element type from its
elements; an int is accepted where the default is a float). What a cell cannot say is kept here:
the allowed values (:data:`CHOICES`, :data:`NOTEBOOK_CHOICES`) and the type of a parameter whose
default is ``None`` (:data:`NONE_DEFAULT_TYPES`).

``validate_parameters`` accepts a plain dict or the notebook's ``globals()`` (it ignores names
starting with ``_``, IPython's ``In``/``Out``/``exit``/``quit``/``get_ipython``, modules, functions
and classes, so only the parameters and the names injected by papermill remain). It raises
:class:`ParameterError` listing every problem at once: an unknown name (with the closest valid
name and the list of valid ones), a value outside its choices (with the choices), or a wrong type.
It returns the complete parameter dict: defaults filled in, ``None`` placeholders resolved
(``run_dir`` → :func:`default_run_dir`; ``profiles`` → ``[profile]``; ``output_dir`` →
``"figures"``, inside the run folder) and values normalised (tuples → lists, ints → floats where a float is expected).
"""
from __future__ import annotations

import ast
import copy
import difflib
import inspect
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "ParameterError",
    "NOTEBOOK_PARAMETERS",
    "CHOICES",
    "NOTEBOOK_CHOICES",
    "NONE_DEFAULT_TYPES",
    "DATASETS",
    "TRAIN_DATASETS",
    "BACKBONES",
    "DEVICES",
    "TOY_SOURCES",
    "validate_parameters",
    "notebook_stem",
    "notebook_schema",
    "defaults",
    "default_run_dir",
    "check_registries",
]


class ParameterError(ValueError):
    """A notebook received an unknown parameter, a value outside its choices, or a wrong type."""

    def __init__(self, notebook: str, problems: list[str]):
        self.notebook = notebook
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{notebook}: {len(self.problems)} parameter problem(s):\n{lines}")


# --------------------------------------------------------------------------------------------
# What a parameters cell cannot say. tests/test_params.py compares the lists with the registries.
DATASETS = ("car", "cub", "sop", "isc", "stl10", "demo")  # what 00_prepare_data can prepare
TRAIN_DATASETS = ("car", "cub", "sop", "isc", "demo")  # what the retrieval notebooks train on
BACKBONES = ("resnet50", "bninception", "googlenet", "resnext50_32x4d", "resnet18", "vit_s16_dino",
             "vit_s14_dinov2")
DEVICES = ("auto", "cpu", "cuda")
TOY_SOURCES = ("auto", "stl10", "digits")

#: Allowed values by parameter name, in every notebook that has the parameter (for a list
#: parameter the choices apply to every element).
CHOICES: dict[str, tuple] = {
    "device": DEVICES,
    "dataset": TRAIN_DATASETS,
    "datasets": DATASETS,
    "backbone": BACKBONES,
    "source": TOY_SOURCES,
    "feature_dim": (2, 3),
}
#: Allowed values that differ between notebooks: the method variants a notebook can run.
NOTEBOOK_CHOICES: dict[str, dict[str, tuple]] = {
    "03_positive_proxy": {"method": ("positive_proxy",)},
    "05_dynamic_margin": {"method": ("dynamic_margin", "proxy_anchor")},
}
#: The method each retrieval notebook trains (used by check_registries).
NOTEBOOK_METHOD_OF = {
    "01_normsoftmax": ("normsoftmax",),
    "02_asymptotic_proxy": ("asymptotic_proxy",),
    "03_positive_proxy": NOTEBOOK_CHOICES["03_positive_proxy"]["method"],
    "04_cgd": ("cgd",),
    "05_dynamic_margin": NOTEBOOK_CHOICES["05_dynamic_margin"]["method"],
}
#: The type of every parameter whose default is None (the default alone does not say it).
NONE_DEFAULT_TYPES: dict[str, str] = {
    "run_dir": "str|None",
    "data_root": "str|None",
    "profiles": "list[str]|None",
    "output_dir": "str|None",
    "max_train_per_class": "int|None",
}

_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


# --------------------------------------------------------------------------------------------
def notebook_stem(notebook: str | Path) -> str:
    """``"notebooks/01_normsoftmax.ipynb"`` → ``"01_normsoftmax"``."""
    name = Path(str(notebook)).name
    return name[: -len(".ipynb")] if name.endswith(".ipynb") else name


def default_run_dir(profile: str, notebook: str | Path) -> Path:
    """The one default run folder of a notebook: ``runs_root()/<profile>/<notebook stem>``."""
    from dml_core.core import paths

    return paths.runs_root() / profile / notebook_stem(notebook)


def _type_of_default(name: str, default: Any) -> str:
    if default is None:
        if name not in NONE_DEFAULT_TYPES:
            raise ValueError(f"parameter {name!r} defaults to None: add its type to "
                             "dml_core.profiles.params.NONE_DEFAULT_TYPES")
        return NONE_DEFAULT_TYPES[name]
    if isinstance(default, (list, tuple)):
        inner = {_type_of_default(name, v) for v in default} or {"str"}
        if inner == {"int", "float"}:
            inner = {"float"}
        if len(inner) != 1:
            raise ValueError(f"parameter {name!r}: a list default mixes types {sorted(inner)}")
        return f"list[{inner.pop()}]"
    for t in (bool, int, float, str, dict):  # bool before int: True is an int
        if isinstance(default, t):
            return t.__name__
    raise ValueError(f"parameter {name!r}: unsupported default {default!r}")


_CACHE: dict[Path, tuple[float, dict[str, tuple]]] = {}


def notebook_schema(path: str | Path) -> dict[str, tuple]:
    """``{name: (type, default, choices or None, help)}`` read from the notebook's parameters cell.

    The default is the cell's literal, the help its trailing comment, the type that of the
    default (see the module docstring), the choices from :data:`CHOICES`/:data:`NOTEBOOK_CHOICES`.
    """
    import papermill

    path = Path(path)
    mtime = path.stat().st_mtime
    cached = _CACHE.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    stem = notebook_stem(path)
    choices = {**CHOICES, **NOTEBOOK_CHOICES.get(stem, {})}
    schema = {}
    for name, info in papermill.inspect_notebook(str(path)).items():
        default = ast.literal_eval(info["default"])
        schema[name] = (_type_of_default(name, default), default, choices.get(name),
                        info.get("help") or "")
    _CACHE[path] = (mtime, schema)
    return schema


class _NotebookSchemas(Mapping):
    """``{notebook stem: schema}`` of the study notebooks (``notebooks/NN_*.ipynb``), read lazily."""

    def _paths(self) -> dict[str, Path]:
        from dml_core.core import paths

        return {p.stem: p for p in sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))}

    def __getitem__(self, stem: str) -> dict[str, tuple]:
        found = self._paths()
        if stem not in found:
            raise KeyError(stem)
        return notebook_schema(found[stem])

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths())

    def __len__(self) -> int:
        return len(self._paths())

    def __contains__(self, stem: object) -> bool:
        return isinstance(stem, str) and stem in self._paths()


#: ``{stem: {name: (type, default, choices or None, help)}}``, derived from the notebooks.
NOTEBOOK_PARAMETERS: Mapping[str, dict[str, tuple]] = _NotebookSchemas()


def _schema(notebook: str | Path) -> tuple[str, dict[str, tuple]]:
    stem = notebook_stem(notebook)
    if str(notebook).endswith(".ipynb") and Path(notebook).is_file():
        return stem, notebook_schema(notebook)
    if stem not in NOTEBOOK_PARAMETERS:
        close = difflib.get_close_matches(stem, list(NOTEBOOK_PARAMETERS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParameterError(stem, [f"no parameter schema for notebook {stem!r}{hint}; known: "
                                    + ", ".join(NOTEBOOK_PARAMETERS)])
    return stem, NOTEBOOK_PARAMETERS[stem]


def defaults(notebook: str | Path) -> dict[str, Any]:
    """The default value of every parameter of ``notebook`` (a fresh copy)."""
    _, schema = _schema(notebook)
    return {name: copy.deepcopy(spec[1]) for name, spec in schema.items()}


def _is_parameter_like(name: str, value: Any) -> bool:
    if name.startswith("_") or name in _IPYTHON_NAMES:
        return False
    return not (isinstance(value, types.ModuleType) or inspect.isroutine(value)
                or inspect.isclass(value))


_SCALARS = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict}


def _check_one(value: Any, alt: str) -> tuple[bool, Any]:
    """Does ``value`` fit the single type ``alt``? Returns (ok, normalised value)."""
    if alt == "None":
        return value is None, value
    if alt.startswith("list[") and alt.endswith("]"):
        if not isinstance(value, (list, tuple)):
            return False, value
        items = []
        for item in value:
            ok, item = _check_one(item, alt[5:-1])
            if not ok:
                return False, value
            items.append(item)
        return True, items
    if alt == "bool":
        return isinstance(value, bool), value
    if alt == "int":
        return isinstance(value, int) and not isinstance(value, bool), value
    if alt == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, float(value)
    if alt == "dict":
        return isinstance(value, dict) and all(isinstance(k, str) for k in value), value
    if alt in _SCALARS:
        return isinstance(value, _SCALARS[alt]), value
    raise ValueError(f"unknown parameter type {alt!r}")


def _check_type(value: Any, type_spec: str) -> tuple[bool, Any]:
    for alt in type_spec.split("|"):
        ok, normalised = _check_one(value, alt.strip())
        if ok:
            return True, normalised
    return False, value


def _type_name(value: Any) -> str:
    if isinstance(value, (list, tuple)) and value:
        inner = sorted({type(v).__name__ for v in value})
        return f"{type(value).__name__}[{'|'.join(inner)}]"
    return type(value).__name__


def _closest(value: Any, choices) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_parameters(notebook: str | Path, params: Mapping[str, Any], *,
                        resolve: bool = True) -> dict[str, Any]:
    """Check ``params`` against the parameters cell of ``notebook`` (a stem of ``notebooks/`` or
    a ``.ipynb`` path) and return the complete parameter dict.

    ``params`` may be the notebook's ``globals()``. Raises :class:`ParameterError` listing every
    unknown name, wrong type and value outside its choices. With ``resolve`` (default) the
    ``None`` placeholders are resolved (see the module docstring).
    """
    stem, schema = _schema(notebook)
    given = {k: v for k, v in params.items() if _is_parameter_like(k, v)}
    problems: list[str] = []
    valid = ", ".join(sorted(schema))
    for name in given:
        if name not in schema:
            close = difflib.get_close_matches(name, schema, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown parameter {name!r}{hint}; valid parameters: {valid}")
    out: dict[str, Any] = {}
    for name, (type_spec, default, choices, _help) in schema.items():
        value = given[name] if name in given else copy.deepcopy(default)
        ok, value = _check_type(value, type_spec)
        if not ok:
            problems.append(f"{name}={value!r} must be of type {type_spec}, got {_type_name(value)}")
            continue
        if choices is not None and value is not None:
            values = value if type_spec.startswith("list[") else [value]
            for v in values:
                if v not in choices:
                    problems.append(f"{name}: {v!r} is not one of: "
                                    + ", ".join(map(str, choices)) + _closest(v, choices))
        out[name] = value
    if problems:
        raise ParameterError(stem, problems)
    if resolve:
        _resolve(stem, out)
    return out


def _resolve(stem: str, p: dict[str, Any]) -> None:
    from dml_core.core import paths

    if "run_dir" in p and p["run_dir"] is None:
        p["run_dir"] = str(default_run_dir(p.get("profile", "interactive"), stem))
    if "profiles" in p and p["profiles"] is None:
        p["profiles"] = [p["profile"]]
    if "output_dir" in p and p["output_dir"] is None:
        p["output_dir"] = "figures"  # inside the run folder; figures/ only via `make figures`


def check_registries() -> list[str]:
    """Compare the literal choice lists with the registries; return the mismatches found.

    Raises ImportError when a registry is not importable yet. Checked: every backbone choice is in
    ``dml_core.models.backbones.BACKBONES``; every training data set is in
    ``dml_core.methods.recipes.DATASETS``; every method a notebook runs has at least one recipe.
    """
    from dml_core.methods import recipes
    from dml_core.models import backbones

    problems = []
    missing = [b for b in BACKBONES if b not in backbones.BACKBONES]
    if missing:
        problems.append(f"backbones not in dml_core.models.backbones.BACKBONES: {missing}")
    missing = [d for d in TRAIN_DATASETS if d not in recipes.DATASETS]
    if missing:
        problems.append(f"data sets not in dml_core.methods.recipes.DATASETS: {missing}")
    for stem, methods in NOTEBOOK_METHOD_OF.items():
        for method in methods:
            if not recipes.list_recipes(method=method):
                problems.append(f"{stem}: no recipe at all for method {method!r}")
    return problems
