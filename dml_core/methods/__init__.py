"""The published methods as :class:`~dml_core.methods.base.Method` subclasses.

``build_method(recipe, num_classes, device=None)`` dispatches on ``recipe["method"]``:

==================  =====================================  ==================================
recipe["method"]    class                                  module (its docstring: the recipe)
==================  =====================================  ==================================
normsoftmax         :class:`NormSoftmaxMethod`             :mod:`.normsoftmax`
cgd                 :class:`CGDMethod`                     :mod:`.cgd`
asymptotic_proxy    :class:`AsymptoticProxyMethod`         :mod:`.asymptotic_proxy`
positive_proxy      :class:`PositiveProxyMethod`           :mod:`.positive_proxy`
dynamic_margin      :class:`DynamicMarginMethod`           :mod:`.dynamic_margin`
proxy_anchor        :class:`ProxyAnchorMethod`             :mod:`.dynamic_margin`
==================  =====================================  ==================================

Recipes (the seeds' hyper-parameters as plain dicts) are in :mod:`dml_core.methods.recipes`.
"""
from __future__ import annotations

from typing import Any

import torch

from dml_core.methods.asymptotic_proxy import AsymptoticProxyMethod
from dml_core.methods.base import Method, StepOutput
from dml_core.methods.cgd import CGDLoss, CGDMethod
from dml_core.methods.dynamic_margin import DynamicMarginMethod, ProxyAnchorMethod
from dml_core.methods.normsoftmax import NormSoftmaxMethod
from dml_core.methods.positive_proxy import PositiveProxyMethod
from dml_core.methods.shared import SharedMethod, check_paper_recipe, setup_of
from dml_core.methods.toy import ToyMethod

METHODS: dict[str, type[Method]] = {
    "normsoftmax": NormSoftmaxMethod,
    "cgd": CGDMethod,
    "asymptotic_proxy": AsymptoticProxyMethod,
    "positive_proxy": PositiveProxyMethod,
    "dynamic_margin": DynamicMarginMethod,
    "proxy_anchor": ProxyAnchorMethod,
    "toy": ToyMethod,
}


def build_method(recipe: dict[str, Any], num_classes: int,
                 device: torch.device | str | None = None) -> Method:
    """The method of ``recipe["method"]`` for ``num_classes`` training classes, on ``device``."""
    name = recipe.get("method")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    cls = METHODS[name]
    if setup_of(recipe) == "shared":
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


__all__ = [
    "METHODS", "Method", "StepOutput", "build_method", "NormSoftmaxMethod",
    "CGDMethod", "CGDLoss", "AsymptoticProxyMethod", "PositiveProxyMethod",
    "DynamicMarginMethod", "ProxyAnchorMethod", "SharedMethod",
]
