"""Notebook parameter schemas and their validation.

Papermill only *warns* when a profile passes a parameter that the notebook does not define, so a
misspelled ``epoch: 1`` would silently run the full recipe. Every notebook therefore validates
its parameters in its second cell::

    # cell 1, tagged "parameters"
    profile = "interactive"
    run_dir = None
    dataset = "demo"
    ...
    # cell 2
    from dml_core.params import validate_parameters
    P = validate_parameters("01_normsoftmax", globals())

``validate_parameters`` accepts a plain dict or the notebook's ``globals()`` (it ignores names
starting with ``_``, IPython's ``In``/``Out``/``exit``/``quit``/``get_ipython``, modules, functions
and classes, so only the parameters and the names injected by papermill remain). It raises
:class:`ParameterError` listing every problem at once: an unknown name (with the closest valid
name and the list of valid ones), a value outside its choices (with the choices), or a wrong type.
It returns the complete parameter dict: defaults filled in, ``None`` placeholders resolved
(``run_dir`` → ``runs_root()/<profile>/<notebook>``, ``profiles`` → ``[profile]``, ``output_dir`` →
``"figures"``, inside the run folder) and values normalised (tuples → lists, ints → floats where a float is expected).

The schema is plain data: :data:`NOTEBOOK_PARAMETERS` maps a notebook stem to
``{name: (type, default, choices_or_None, help)}``. Types are strings: ``str``, ``int``, ``float``,
``bool``, ``dict``, ``list[str]``, ``list[int]``, ``list[float]``, each optionally ``|None``. For a
list type the choices apply to every element. The choice lists (data sets, backbones, methods) are
kept here once, as literals; ``check_registries()`` compares them with ``dml_core.recipes`` and
``dml_core.models.backbones`` when those are importable (the test suite calls it).
"""
from __future__ import annotations

import copy
import difflib
import inspect
import types
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "ParameterError",
    "NOTEBOOK_PARAMETERS",
    "DATASETS",
    "TRAIN_DATASETS",
    "BACKBONES",
    "DEVICES",
    "validate_parameters",
    "notebook_stem",
    "defaults",
    "parameters_cell_source",
    "describe",
    "check_registries",
    "missing_recipes",
]


class ParameterError(ValueError):
    """A notebook received an unknown parameter, a value outside its choices, or a wrong type."""

    def __init__(self, notebook: str, problems: list[str]):
        self.notebook = notebook
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{notebook}: {len(self.problems)} parameter problem(s):\n{lines}")


# --------------------------------------------------------------------------------------------
# The choice lists, in one place. tests/test_params.py compares them with the registries.
DATASETS = ("car", "cub", "sop", "isc", "stl10", "demo")  # what 00_prepare_data can prepare
TRAIN_DATASETS = ("car", "cub", "sop", "isc", "demo")  # what the retrieval notebooks train on
BACKBONES = ("resnet50", "bninception", "googlenet", "resnext50_32x4d", "resnet18")
DEVICES = ("auto", "cpu", "cuda")
TOY_SOURCES = ("auto", "stl10", "digits")
# Methods a notebook can run, by notebook stem (notebooks without an entry have no `method`).
NOTEBOOK_METHODS = {
    "03_positive_proxy": ("positive_proxy",),
    "05_dynamic_margin": ("dynamic_margin", "proxy_anchor"),
}
# The method each retrieval notebook trains (used by check_registries).
NOTEBOOK_METHOD_OF = {
    "01_normsoftmax": ("normsoftmax",),
    "02_asymptotic_proxy": ("asymptotic_proxy",),
    "03_positive_proxy": NOTEBOOK_METHODS["03_positive_proxy"],
    "04_cgd": ("cgd",),
    "05_dynamic_margin": NOTEBOOK_METHODS["05_dynamic_margin"],
}

# (type, default, choices or None, help)
COMMON_PARAMETERS: dict[str, tuple] = {
    "profile": ("str", "interactive", None,
                "profile name (injected by the batch); names runs/<profile>/"),
    "run_dir": ("str|None", None, None,
                "run folder (injected by the batch); None means runs_root()/<profile>/<notebook>"),
    "data_root": ("str|None", None, None, "data root; None means dml_core.paths.data_root()"),
    "device": ("str", "auto", DEVICES, "auto means cuda when available, else cpu"),
}


def _retrieval(stem: str) -> dict[str, tuple]:
    spec = {
        **COMMON_PARAMETERS,
        "dataset": ("str", "demo", TRAIN_DATASETS, "data set to train and evaluate on"),
        "backbone": ("str", "resnet18", BACKBONES, "backbone network"),
        "crop": ("bool", False, None, "crop images to their bounding box (car, cub, demo)"),
        "overrides": ("dict", {}, None,
                      "recipe keys to override (e.g. {epochs: 1}); checked by the recipe code"),
    }
    if stem in NOTEBOOK_METHODS:
        methods = NOTEBOOK_METHODS[stem]
        spec["method"] = ("str", methods[0], methods, "method variant")
    return spec


NOTEBOOK_PARAMETERS: dict[str, dict[str, tuple]] = {
    "00_prepare_data": {
        **COMMON_PARAMETERS,
        "datasets": ("list[str]", ["demo"], DATASETS, "data sets to prepare"),
    },
    **{stem: _retrieval(stem) for stem in (
        "01_normsoftmax", "02_asymptotic_proxy", "03_positive_proxy", "04_cgd",
        "05_dynamic_margin")},
    "06_benchmarks": {
        **COMMON_PARAMETERS,
        "profiles": ("list[str]|None", None, None,
                     "profiles whose runs to tabulate; None means [profile]"),
    },
    "07_toy_proxies": {
        **COMMON_PARAMETERS,
        "source": ("str", "auto", TOY_SOURCES, "toy images: auto = stl10 if prepared, else digits"),
        "feature_dim": ("int", 2, (2, 3), "embedding dimension of the toy (2 or 3)"),
        "epochs": ("int", 20, None, "training epochs of the toy"),
        "momenta": ("list[float]", [0.0, 0.5, 0.9, 0.99], None, "proxy momenta of the sweep"),
        "batch_size": ("int", 128, None, "batch size"),
        "pretrained": ("bool", True, None, "start from ImageNet weights"),
        "max_train_per_class": ("int|None", None, None,
                                "cap on training images per class; None means all"),
    },
    "08_figures": {
        **COMMON_PARAMETERS,
        "profiles": ("list[str]|None", None, None, "profiles whose runs to plot; None means [profile]"),
        "output_dir": ("str|None", None, None, "where figures go; None means figures/ inside run_dir"),
    },
}

_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


# --------------------------------------------------------------------------------------------
def notebook_stem(notebook: str | Path) -> str:
    """``"notebooks/01_normsoftmax.ipynb"`` → ``"01_normsoftmax"``."""
    name = Path(str(notebook)).name
    return name[: -len(".ipynb")] if name.endswith(".ipynb") else name


def _schema(notebook: str | Path) -> tuple[str, dict[str, tuple]]:
    stem = notebook_stem(notebook)
    if stem not in NOTEBOOK_PARAMETERS:
        close = difflib.get_close_matches(stem, NOTEBOOK_PARAMETERS, n=1)
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
    raise ValueError(f"unknown type {alt!r} in the parameter schema")


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
    """Check ``params`` against the schema of ``notebook`` and return the complete parameter dict.

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
    from dml_core import paths

    if "run_dir" in p and p["run_dir"] is None:
        p["run_dir"] = str(paths.runs_root() / p.get("profile", "interactive") / stem)
    if "profiles" in p and p["profiles"] is None:
        p["profiles"] = [p["profile"]]
    if "output_dir" in p and p["output_dir"] is None:
        p["output_dir"] = "figures"  # inside the run folder; figures/ only via `make figures`


def parameters_cell_source(notebook: str | Path) -> str:
    """The source of a ``parameters`` cell for ``notebook`` with the schema's defaults and help."""
    _, schema = _schema(notebook)
    lines = []
    for name, (type_spec, default, choices, help_) in schema.items():
        note = help_ + (f" [{' | '.join(map(str, choices))}]" if choices else "")
        lines.append(f"{name} = {default!r}  # {type_spec}: {note}")
    return "\n".join(lines) + "\n"


def describe(notebook: str | Path) -> str:
    """A human-readable table of the parameters of ``notebook``."""
    stem, schema = _schema(notebook)
    rows = [f"Parameters of {stem}:"]
    for name, (type_spec, default, choices, help_) in schema.items():
        rows.append(f"  {name:<20} {type_spec:<16} default={default!r}")
        rows.append(f"  {'':<20} {help_}" + (f"; choices: {', '.join(map(str, choices))}"
                                               if choices else ""))
    return "\n".join(rows)


def check_registries() -> list[str]:
    """Compare the literal choice lists with the registries; return the mismatches found.

    Raises ImportError when a registry is not importable yet. Checked: every backbone choice is in
    ``dml_core.models.backbones.BACKBONES``; every training data set is in
    ``dml_core.recipes.DATASETS``; every method a notebook runs has at least one recipe.
    (:func:`missing_recipes` lists the finer (method, data set) gaps, for information.)
    """
    from dml_core import recipes
    from dml_core.models import backbones

    problems = []
    missing = [b for b in BACKBONES if b not in backbones.BACKBONES]
    if missing:
        problems.append(f"backbones not in dml_core.models.backbones.BACKBONES: {missing}")
    missing = [d for d in TRAIN_DATASETS if d not in recipes.DATASETS]
    if missing:
        problems.append(f"data sets not in dml_core.recipes.DATASETS: {missing}")
    for stem, methods in NOTEBOOK_METHOD_OF.items():
        for method in methods:
            if not recipes.list_recipes(method=method):
                problems.append(f"{stem}: no recipe at all for method {method!r}")
    return problems


def missing_recipes() -> list[tuple[str, str, str]]:
    """(notebook, method, data set) choices that have no recipe in ``dml_core.recipes``."""
    from dml_core import recipes

    return [(stem, method, ds) for stem, methods in NOTEBOOK_METHOD_OF.items()
            for method in methods for ds in TRAIN_DATASETS
            if not recipes.list_recipes(method=method, dataset=ds)]
