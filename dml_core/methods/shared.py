r"""The fair protocol's shared build: one network and one optimiser for every method; the loss is
the method's.

A recipe with ``setup = "shared"`` (what :mod:`dml_core.methods.fair` sets) is built by
:func:`dml_core.methods.build_method` as a :class:`SharedMethod`; ``setup = "paper"`` (every
per-paper recipe) builds the method as its authors did (its own network, optimisers, schedule).

The shared build, for every method:

* **network** (:data:`HEAD`): backbone → GAP + GMP → Linear(C → D; kaiming-normal fan_out,
  bias 0) → :math:`x/\sqrt{\lVert x\rVert^2+10^{-12}}`: Proxy-Anchor's network
  (:class:`~dml_core.models.ProxyAnchorNet`, backbone BatchNorm momentum left as built), the
  baseline two of the compared methods (PP, AMLoss) modify. CGD keeps its own network
  (its global descriptors and auxiliary classifier are the method: :attr:`LossSpec.network`);
* **optimiser** (:data:`OPTIMIZER`): one Adam (fused) with the parameter groups trunk (``lr``,
  ``weight_decay``), head (``lr``, ``weight_decay``), then the loss's own parameters: learnable
  proxies at ``proxy_lr_mult`` × ``lr`` without weight decay (one rule for every method: with
  Adam the step does not depend on the scale of a loss's gradient), AMLoss's margins at its own
  ``mrg_lr`` (a loss hyper-parameter);
* **schedule**: StepLR(``lr_step``, ``lr_gamma``) on every group, stepped after every epoch;
* **warm-up**: epochs 1..``warmup_epochs`` train every parameter except the backbone's;
* **BatchNorm**: with ``freeze_bn`` every backbone BatchNorm2d is in eval mode (running statistics
  frozen; the affine parameters train);
* **clipping**: ``grad_clip_value`` (None = none) on the model and the loss;
* **proxies** (learnable and moving alike) initialised by ``proxy_init``
  (:func:`dml_core.losses.functional.init_proxies`).

The method contributes only its :class:`LossSpec`: the loss built from its own keys
(:attr:`LossSpec.keys`), which loss parameters get which learning rate, and a hook after the
optimiser step (AsymptoticProxy's moving-proxy update). Its paper-only keys (the ones its paper
build reads and the shared build does not, e.g. PP's ``proxy_lr``) must be None in a shared
recipe, so no setting is silently ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from dml_core.methods._util import fused_adam, params_except, set_requires_grad
from dml_core.methods.base import Method, StepOutput

__all__ = ["SETUPS", "SHARED_KEYS", "PAPER_NEUTRAL", "HEAD", "OPTIMIZER", "LossSpec",
           "SharedMethod", "shared_network", "check_paper_recipe", "setup_of", "OPTIMIZERS"]

#: ``setup``: "paper" (the authors' build, the default) or "shared" (the fair protocol's).
SETUPS = ("paper", "shared")

#: The recipe keys the shared build reads besides the engine's (data, batches, epochs) and the
#: method's own loss keys.
SHARED_KEYS = ("setup", "lr", "weight_decay", "lr_step", "lr_gamma", "warmup_epochs",
               "freeze_bn", "grad_clip_value", "proxy_lr_mult", "proxy_init", "shared_optimizer")

#: Every recipe row carries every shared key; where a paper build does not read one, the row
#: holds this neutral value (and :func:`check_paper_recipe` refuses any other).
PAPER_NEUTRAL: dict[str, Any] = {"weight_decay": 0.0, "lr_step": None, "warmup_epochs": 0,
                                 "grad_clip_value": None, "proxy_lr_mult": None,
                                 "proxy_init": None, "shared_optimizer": "adam"}

#: The shared network, in words (docs/PROTOCOL.md shows it).
HEAD = ("GAP + GMP → Linear (kaiming-normal fan_out, bias 0) → L2: Proxy-Anchor's network, for "
        "every method except CGD")
#: The shared optimiser (torch.optim.Adam, fused; L2 weight decay ``weight_decay``); the ViT
#: track's settings ask for AdamW (decoupled weight decay) through ``shared_optimizer``.
OPTIMIZER = "Adam"
OPTIMIZERS = ("adam", "adamw")


def setup_of(recipe: dict[str, Any]) -> str:
    """The recipe's ``setup`` ("paper" when absent), checked."""
    s = recipe.get("setup") or "paper"
    if s not in SETUPS:
        raise ValueError(f"setup must be one of {SETUPS}, got {s!r} (recipe "
                         f"{recipe.get('name')!r})")
    return s


@dataclass(frozen=True)
class LossSpec:
    """What a method contributes to the shared build.

    keys: its own hyper-parameters (recipe keys; under the fair protocol the only keys that may
        differ between methods, and the ones tuned).
    defaults: their values when a recipe lacks one.
    build: ``(options, num_classes, dim, proxy_init) -> criterion``; ``options`` holds ``keys``.
    param_groups: ``(criterion, options, proxy_lr) -> [optimiser groups]``; default: every
        parameter of the criterion at ``proxy_lr`` without weight decay.
    network: ``(recipe, options, num_classes) -> model``; default :func:`shared_network` (CGD:
        its own).
    after_step: ``(method, out, labels)`` after the optimiser step (moving proxies), or None.
    training_step: ``(method, images, labels) -> StepOutput`` or None (the base class's).
    """

    keys: tuple[str, ...]
    defaults: dict[str, Any]
    build: Callable[[dict, int, int, str], nn.Module]
    param_groups: Callable[[nn.Module, dict, float], list[dict]] | None = None
    network: Callable[[dict, dict, int], nn.Module] | None = None
    after_step: Callable[[Method, StepOutput, torch.Tensor], None] | None = None
    training_step: Callable[[Method, torch.Tensor, torch.Tensor], StepOutput] | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def options(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """The method's own keys: the recipe's values, else the defaults."""
        return {k: recipe[k] if k in recipe else self.defaults[k] for k in self.keys}


def shared_network(recipe: dict[str, Any]) -> nn.Module:
    """The shared network (:data:`HEAD`) for the recipe's backbone, pretraining and dimension."""
    from dml_core.methods._util import backbone_weights
    from dml_core.models import ProxyAnchorNet

    return ProxyAnchorNet(recipe["backbone"], int(recipe["embedding_dim"]),
                          **backbone_weights(recipe), bn_momentum=None)


def check_paper_recipe(recipe: dict[str, Any], reads: tuple[str, ...]) -> None:
    """A paper build reads only ``reads`` of :data:`SHARED_KEYS`: every other shared key must hold
    its neutral value (:data:`PAPER_NEUTRAL`), else the setting would be ignored silently."""
    bad = {k: recipe[k] for k in PAPER_NEUTRAL
           if k not in reads and k in recipe and recipe[k] != PAPER_NEUTRAL[k]}
    if bad:
        raise ValueError(
            f"recipe {recipe.get('name')!r} ({recipe.get('method')}, setup 'paper') sets {bad}, "
            f"which the authors' build of this method does not have; leave them at "
            f"{ {k: PAPER_NEUTRAL[k] for k in bad} } or use setup='shared'")


def _number(recipe: dict, key: str, kind=float):
    v = recipe.get(key)
    if v is None or isinstance(v, bool):
        raise ValueError(f"setup 'shared' needs a number for {key!r}, got {v!r} (recipe "
                         f"{recipe.get('name')!r}); dml_core.methods.fair sets it")
    return kind(v)


class SharedMethod(Method):
    """A method under the shared build: :func:`shared_network` (or the spec's own network), one
    Adam, one StepLR, and the method's loss (see the module docstring)."""

    def __init__(self, recipe: dict[str, Any], num_classes: int, name: str, spec: LossSpec,
                 paper_only: tuple[str, ...] = ()):
        self.name = name
        self.spec = spec
        stray = {k: recipe[k] for k in paper_only if recipe.get(k) is not None}
        if stray:
            raise ValueError(f"recipe {recipe.get('name')!r}: {stray} belong to {name}'s paper "
                             "build and are not read under setup 'shared'; set them to None")
        lr = _number(recipe, "lr")
        o = self.options = {
            "lr": lr, "weight_decay": float(recipe.get("weight_decay") or 0.0),
            "lr_step": _number(recipe, "lr_step", int), "lr_gamma": _number(recipe, "lr_gamma"),
            "warmup_epochs": int(recipe.get("warmup_epochs") or 0),
            "freeze_bn": bool(recipe["freeze_bn"]),
            "grad_clip_value": (None if recipe.get("grad_clip_value") is None
                                else float(recipe["grad_clip_value"])),
            "proxy_lr_mult": _number(recipe, "proxy_lr_mult"),
            "proxy_init": recipe.get("proxy_init")}
        if not o["proxy_init"]:
            raise ValueError(f"setup 'shared' needs proxy_init (recipe {recipe.get('name')!r})")
        self.loss_options = spec.options(recipe)
        model = (spec.network(recipe, self.loss_options, num_classes) if spec.network
                 else shared_network(recipe))
        criterion = spec.build(self.loss_options, int(num_classes), int(recipe["embedding_dim"]),
                               o["proxy_init"])
        super().__init__(model, criterion)
        self.trunk_params = list(model.backbone.parameters())
        self.head_params = params_except(model, model.backbone)
        wd = o["weight_decay"]
        proxy_lr = lr * o["proxy_lr_mult"]
        loss_groups = (spec.param_groups(criterion, self.loss_options, proxy_lr)
                       if spec.param_groups else
                       [{"params": list(criterion.parameters()), "lr": proxy_lr,
                         "weight_decay": 0.0}])
        groups = [{"params": self.trunk_params, "lr": lr, "weight_decay": wd},
                  {"params": self.head_params, "lr": lr, "weight_decay": wd}, *loss_groups]
        cls = torch.optim.AdamW if recipe.get("shared_optimizer") == "adamw" else torch.optim.Adam
        self.optimizer = cls([g for g in groups if g["params"]], lr=lr, **fused_adam())
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=o["lr_step"],
                                                         gamma=o["lr_gamma"])
        self.freeze_bn = o["freeze_bn"]
        self.grad_clip_value = o["grad_clip_value"]
        self.warmup_epochs = o["warmup_epochs"]

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        if self.spec.training_step is not None:
            return self.spec.training_step(self, images, labels)
        return super().training_step(images, labels)

    def after_optimizer_step(self, out: StepOutput, labels: torch.Tensor) -> None:
        if self.spec.after_step is not None:
            self.spec.after_step(self, out, labels)

    def on_epoch_start(self, epoch: int) -> None:
        """Warm-up as a function of the epoch (a resumed run gets it right), then BN freezing."""
        if self.warmup_epochs > 0:
            set_requires_grad(self.trunk_params, epoch > self.warmup_epochs)
        super().on_epoch_start(epoch)

    def epoch_log(self) -> dict[str, float]:
        stats = getattr(self.criterion, "margin_stats", None)
        return stats() if callable(stats) else {}
