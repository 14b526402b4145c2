"""The method registry: the one place where a method is declared (timm's registry, in spirit).

Each method is declared once, beside its recipe rows in :mod:`dml_core.methods.recipes` (data,
which a run folder compares on its own; the class and its defaults are in the method's module)::

    declare_method("normsoftmax", "dml_core.methods.normsoftmax:NormSoftmaxMethod",
                   label="NormSoftmax", notebook="01_normsoftmax", loss_hparams=("temperature",),
                   rows=_normsoftmax_rows, demo=Demo("car/resnet50/uncropped", {...}))

The class is named by its import path and imported when first used (:meth:`MethodSpec.load`), so
reading the declarations (the profiles, the report) does not import torch.

Everything else that names methods is derived from :data:`SPECS`: ``dml_core.methods.METHODS``
(name → class), the recipes (:mod:`dml_core.methods.recipes`: every row, the demo rows, the
methods with recipes), the notebooks' method choices (:mod:`dml_core.profiles.params`), the fair
protocol's loss hyper-parameters and notebooks (:mod:`dml_core.methods.fair`), the pre-flight
check and the report's names and colours. Importing anything of :mod:`dml_core.methods` runs
``dml_core/methods/__init__.py`` first, which imports the recipes, so the registry is complete.
Everything derived keeps the declaration order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Demo", "MethodSpec", "SPECS", "declare_method", "published", "methods_of_notebook",
           "notebook_methods"]


@dataclass(frozen=True)
class Demo:
    """How the method's CPU demo recipe is made: the full-size row it starts from (its name
    without the method, e.g. ``"car/resnet50/uncropped"``) and what the demo changes there (on
    top of the shared demo settings, :data:`dml_core.methods.recipes.DEMO_SETTINGS`)."""

    base: str
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """One method, declared once.

    name: the recipe's ``method`` value; path: ``"module:Class"`` of its
    :class:`~dml_core.methods.base.Method` (:meth:`load`); label and color: how the report names
    and draws it; notebook: the stem of the notebook that trains it (``None``: none);
    loss_hparams: the keys it keeps under the fair protocol; rows: ``rows(name)`` → its recipe
    rows (the authors' README rows), ``None`` for a method without recipes (the toy); demo: its
    CPU demo recipe; variant: ``(key, default)``, a method key that selects among its rows
    besides (data set, backbone, crop), e.g. PP's ``("loss", "proxy_anchor")``.
    """

    name: str
    path: str
    label: str
    notebook: str | None = None
    loss_hparams: tuple[str, ...] = ()
    rows: Callable[[str], list[dict[str, Any]]] | None = None
    demo: Demo | None = None
    variant: tuple[str, str] | None = None
    color: str | None = None

    def load(self) -> type:
        """The method's class (its module imported on first use); its ``name`` is set."""
        import importlib

        module, _, qualname = self.path.partition(":")
        cls = getattr(importlib.import_module(module), qualname)
        cls.name = self.name
        return cls


#: Every declared method by name, in declaration order.
SPECS: dict[str, MethodSpec] = {}


def declare_method(name: str, path: str, **spec: Any) -> MethodSpec:
    """Declare the method ``name``, implemented by the class at ``path`` (``"module:Class"``);
    keywords: :class:`MethodSpec`'s fields. A name is declared once."""
    if name in SPECS:
        raise ValueError(f"method {name!r} is declared twice ({SPECS[name].path} and {path})")
    SPECS[name] = MethodSpec(name=name, path=path, **spec)
    return SPECS[name]


def published() -> tuple[str, ...]:
    """The methods with recipe rows (the papers' methods), in declaration order."""
    return tuple(s.name for s in SPECS.values() if s.rows is not None)


def methods_of_notebook(stem: str) -> tuple[str, ...]:
    """The methods the notebook ``stem`` trains, the one it runs by default first."""
    return tuple(s.name for s in SPECS.values() if s.notebook == stem)


def notebook_methods() -> dict[str, tuple[str, ...]]:
    """``{notebook stem: its methods}`` for the notebooks that train a method with recipes."""
    out: dict[str, tuple[str, ...]] = {}
    for name in published():
        out.setdefault(SPECS[name].notebook, ())
        out[SPECS[name].notebook] += (name,)
    return out
