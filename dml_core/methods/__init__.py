"""The published methods as :class:`~dml_core.methods.base.Method` subclasses.

Each method is declared once (:mod:`dml_core.methods.registry`; the declarations sit beside the
recipe rows in :mod:`dml_core.methods.recipes`, imported here): its name (the recipe's
``method``), class, notebook, loss hyper-parameters, rows and demo recipe. ``build_method(recipe,
num_classes, device=None)`` dispatches on ``recipe["method"]``; :data:`METHODS` (name → class)
is derived from the declarations. Each class's module documents its recipe keys; their types and
ranges are in :mod:`dml_core.methods.schema` (``python -m dml_core.methods`` prints both).

Importing this package does not import torch: a class is imported when it is first built.
"""
from __future__ import annotations

from typing import Any

from dml_core.methods import recipes  # declares every method (dml_core.methods.registry)
from dml_core.methods.registry import SPECS

__all__ = ["METHODS", "build_method", "recipes"]


def build_method(recipe: dict[str, Any], num_classes: int, device: Any = None):
    """The :class:`~dml_core.methods.base.Method` of ``recipe["method"]`` for ``num_classes``
    training classes, on ``device`` (a ``torch.device`` or its name)."""
    name = recipe.get("method")
    if name not in SPECS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(SPECS)}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    from dml_core.methods.shared import SharedMethod, check_paper_recipe, setup_of  # imports torch

    cls = SPECS[name].load()
    if setup_of(recipe) == "shared":  # the fair protocol: one network and optimiser, the method's loss
        spec = getattr(cls, "loss_spec", None)
        if spec is None:
            raise ValueError(f"{name} has no shared build (setup 'shared'); use setup 'paper'")
        method = SharedMethod(recipe, int(num_classes), name, spec,
                              paper_only=getattr(cls, "paper_only", ()))
    else:
        if hasattr(cls, "paper_reads"):
            check_paper_recipe(recipe, cls.paper_reads)
        method = cls(recipe, int(num_classes))
    if device is not None:
        method.to(device)
    return method


def __getattr__(name: str) -> Any:
    """``METHODS``: every declared method's class by name (the toy's included), imported now."""
    if name == "METHODS":
        return {n: spec.load() for n, spec in SPECS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
