"""Small helpers shared by the method modules (options, parameter groups, freezing)."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn


def options(recipe: dict[str, Any], defaults: dict[str, Any], method: str) -> dict[str, Any]:
    """The method's own keys: ``defaults`` overridden by the recipe's values for those keys.

    Keys not in ``defaults`` are ignored here (they belong to the engine / data / another method).
    """
    out = dict(defaults)
    for key in defaults:
        if key in recipe:
            out[key] = recipe[key]
    return out


def backbone_weights(recipe: dict[str, Any]) -> dict[str, Any]:
    """The network's ``pretrained`` and ``source`` arguments for ``recipe``: pretrained weights
    (when ``recipe["pretrained"]``) of the recipe's data set's world (ImageNet, or the demo's
    stand-in; :func:`dml_core.models.backbones.pretraining_source`)."""
    from dml_core.models.backbones import pretraining_source

    return {"pretrained": bool(recipe["pretrained"]),
            "source": pretraining_source(str(recipe["dataset"]))}


def set_requires_grad(params: Iterable[torch.Tensor], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def params_except(module: nn.Module, *excluded: nn.Module) -> list[nn.Parameter]:
    """Parameters of ``module`` that are not in any of ``excluded`` (module order kept)."""
    skip = {id(p) for m in excluded for p in m.parameters()}
    return [p for p in module.parameters() if id(p) not in skip]


def fused_adam() -> dict[str, Any]:
    """Keyword arguments for ``torch.optim.Adam``/``AdamW``: the fused implementation (one kernel
    for every parameter). The same update rule as the per-tensor loop, with other rounding; on a
    CPU it is ~6x faster for ResNet-18 (0.015 s against 0.088 s a step, one thread, measured
    with 11.2 M parameters), where the loop was ~40 % of a demo training step. Deterministic."""
    return {"fused": True}


#: The trunk optimisers a method with an ``optimizer`` key can take (the ViT track's AdamW).
ADAM_FAMILY = ("adam", "adamw")


def adam_family(kind: str, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (``"adam"``: weight decay added to the gradient, L2) or ``AdamW``
    (``"adamw"``: decoupled, θ ← θ − lr·wd·θ), fused. ``"adam"`` with weight decay 0 is exactly
    what AsymptoticProxy and CGD always built."""
    if kind not in ADAM_FAMILY:
        raise ValueError(f"optimizer must be one of {ADAM_FAMILY}, got {kind!r}")
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, weight_decay=weight_decay, **fused_adam())

