r"""Learnable Dynamic Margin (AMLoss; wyfan714/LDM @684f657) and its Proxy-Anchor baseline
(official Proxy-Anchor code).

Model (:class:`~dml_core.models.ProxyAnchorNet`): backbone (bninception / resnet50) →
GAP + GMP → Linear(→ D = 512; kaiming-normal fan_out, zero bias) → :math:`x/\sqrt{\lVert x\rVert^2+10^{-12}}`.

Loss, ``dynamic_margin`` (:class:`~dml_core.losses.DynamicMarginLoss`):
:math:`L=\frac1{|P^+|}\sum_{c\in P^+}\log(1+\sum_{i\in X_c^+}e^{-\alpha_p(s_{ic}-m_c)})
+\frac1C\sum_c\log(1+\sum_{i\in X_c^-}e^{\alpha_n(s_{ic}+\delta_n)})
+\frac{\lambda}{C}\sum_i\log(1+\sum_{j\ne i}e^{\hat w_i\cdot\hat w_j-m_i+\delta})`
with learnable, unconstrained per-class margins :math:`m_c` (init ``margin`` 0.1), fixed
:math:`\delta_n` = ``margin``, ``delta`` 0.1, ``lam`` 1, ``alpha_p``/``alpha_n`` (48 car/cub, 32
sop/isc). ``proxy_anchor``: :class:`~dml_core.losses.ProxyAnchorLoss` (``alpha`` 32, ``margin`` 0.1).
Proxies: N(0,1) then kaiming-normal fan_out (std √(2/C)).

Optimisation:

* AdamW (weight decay ``weight_decay`` 1e-4) with groups {every non-embedding model parameter:
  ``lr``; embedding Linear: ``lr``; proxies: ``proxy_lr_mult`` (100) × ``lr``},
  StepLR(``lr_step``, ``lr_gamma``; the READMEs' ``--lr-decay-step``, ``--lr-decay-gamma``)
  stepped after every epoch;
* AMLoss only: a second AdamW on the margins (``mrg_lr`` 1e-4, wd 1e-4) with its own
  StepLR(``mrg_lr_step`` 10, ``mrg_lr_gamma`` 0.5), stepped after the main one;
* gradient clipping ``clip_grad_value_`` ±``grad_clip_value`` (10) on the model and the criterion
  (proxies and margins) before the steps.

Warm-up: epochs 1..``warmup_epochs`` freeze every non-embedding model parameter (proxies and
margins train); from the next epoch on ALL of them are unfrozen — including the BN affine
parameters that ``freeze_bn`` froze at construction (the PA/LDM "partial freeze" quirk, on by
default: ``unfreeze_bn_affine_after_warmup``; False keeps them frozen). ``freeze_bn`` (the
READMEs' ``--bn-freeze``): BN2d affine
``requires_grad=False`` at construction and every backbone BatchNorm2d in eval mode at every epoch
start. ``bn_momentum`` "original" keeps the BN-Inception port's momentum 0.9 (see the model).
Shuffle sampler with drop_last. ``epoch_log()`` returns the margins' mean / min / max.

Further AMLoss switches (defaults = LDM HEAD; ``neg_uses_learnable_margin=True`` is LDM at
e4e4832): ``neg_uses_learnable_margin`` False,
``pp_scale`` 1, ``pp_normaliser`` "C". The authors' ``mrg_lr`` (5e-4 CUB, 5e-5 In-shop) is an
override.
"""
from __future__ import annotations

from typing import Any

import torch

from dml_core.losses import DynamicMarginLoss, ProxyAnchorLoss, make_margin_optimizer
from dml_core.methods._util import (backbone_weights, fused_adam, options, params_except,
                                    set_requires_grad)
from dml_core.methods.base import Method
from dml_core.methods.shared import LossSpec
from dml_core.models import (
    ProxyAnchorNet,
    batchnorm_modules,
    freeze_batchnorm_affine,
    set_batchnorm_eval,
)

COMMON_DEFAULTS: dict[str, Any] = {
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "proxy_lr_mult": 100.0,
    "lr_step": 10,
    "lr_gamma": 0.5,
    "warmup_epochs": 1,
    "freeze_bn": True,
    "unfreeze_bn_affine_after_warmup": True,
    "bn_momentum": "original",
    "grad_clip_value": 10.0,
    "margin": 0.1,
}
DM_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "alpha_p": 32.0,
    "alpha_n": 32.0,
    "delta": 0.1,
    "lam": 1.0,
    "mrg_lr": 1e-4,
    "mrg_lr_step": 10,
    "mrg_lr_gamma": 0.5,
    "neg_uses_learnable_margin": False,
    "pp_scale": 1.0,
    "pp_normaliser": "C",
}
PA_DEFAULTS: dict[str, Any] = {**COMMON_DEFAULTS, "alpha": 32.0}


PA_LOSS_KEYS = ("alpha", "margin")
DM_LOSS_KEYS = ("alpha_p", "alpha_n", "margin", "delta", "lam", "mrg_lr",
                "neg_uses_learnable_margin", "pp_scale", "pp_normaliser")


def build_pa_loss(o: dict[str, Any], num_classes: int, dim: int,
                  proxy_init: str = "kaiming_normal_fan_out") -> ProxyAnchorLoss:
    """Proxy-Anchor with scale ``o["alpha"]`` and margin ``o["margin"]``."""
    return ProxyAnchorLoss(num_classes, dim, margin=float(o["margin"]), alpha=float(o["alpha"]),
                           proxy_init=proxy_init)


def build_dm_loss(o: dict[str, Any], num_classes: int, dim: int,
                  proxy_init: str = "kaiming_normal_fan_out") -> DynamicMarginLoss:
    """AMLoss (learnable per-class margins) from ``o``'s loss keys."""
    return DynamicMarginLoss(
        num_classes, dim, alpha_p=float(o["alpha_p"]), alpha_n=float(o["alpha_n"]),
        margin=float(o["margin"]), delta=float(o["delta"]), lam=float(o["lam"]),
        neg_uses_learnable_margin=bool(o["neg_uses_learnable_margin"]),
        pp_scale=float(o["pp_scale"]), pp_normaliser=o["pp_normaliser"], proxy_init=proxy_init)


def _dm_groups(criterion: DynamicMarginLoss, o: dict[str, Any], proxy_lr: float) -> list[dict]:
    """Proxies at the shared proxy learning rate; the margins at AMLoss's own ``mrg_lr``."""
    return [{"params": criterion.proxy_parameters(), "lr": proxy_lr, "weight_decay": 0.0},
            {"params": criterion.margin_parameters(), "lr": float(o["mrg_lr"]),
             "weight_decay": 0.0}]


class ProxyAnchorMethod(Method):
    """Proxy-Anchor baseline; :class:`DynamicMarginMethod` adds the margins and their optimiser."""

    defaults = PA_DEFAULTS
    #: Under the fair protocol (:mod:`dml_core.methods.shared`) only the loss is the method's.
    loss_spec = LossSpec(keys=PA_LOSS_KEYS, defaults={k: PA_DEFAULTS[k] for k in PA_LOSS_KEYS},
                         build=build_pa_loss)
    paper_reads = ("weight_decay", "lr_step", "warmup_epochs", "grad_clip_value",
                   "proxy_lr_mult")
    paper_only = ("unfreeze_bn_affine_after_warmup", "bn_momentum")

    def __init__(self, recipe: dict[str, Any], num_classes: int):
        o = self.options = options(recipe, self.defaults, self.name)
        dim = int(recipe["embedding_dim"])
        model = ProxyAnchorNet(recipe["backbone"], dim, **backbone_weights(recipe),
                               bn_momentum=o["bn_momentum"])
        self.freeze_bn = bool(o["freeze_bn"])
        if self.freeze_bn:
            freeze_batchnorm_affine(model.backbone)
        super().__init__(model, self._build_loss(num_classes, dim, o))
        self.grad_clip_value = (float(o["grad_clip_value"]) if o["grad_clip_value"] is not None
                                else None)
        self.warmup_epochs = int(o["warmup_epochs"])
        self.unfreeze_bn_affine = bool(o["unfreeze_bn_affine_after_warmup"])
        self.trunk_params = params_except(model, model.embedding)
        lr = float(o["lr"])
        self.optimizer = torch.optim.AdamW([
            {"params": self.trunk_params, "lr": lr},
            {"params": list(model.embedding.parameters()), "lr": lr},
            {"params": [self.criterion.proxies], "lr": lr * float(o["proxy_lr_mult"])},
        ], lr=lr, weight_decay=float(o["weight_decay"]), **fused_adam())
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=int(o["lr_step"]), gamma=float(o["lr_gamma"]))

    def _build_loss(self, num_classes: int, dim: int, o: dict[str, Any]) -> torch.nn.Module:
        return build_pa_loss(o, num_classes, dim)

    # ------------------------------------------------------------------------ step
    # ------------------------------------------------------------------------ epochs
    def on_epoch_start(self, epoch: int) -> None:
        """Warm-up flags as a function of the epoch (so a resumed run gets them right)."""
        if self.warmup_epochs > 0:
            if epoch <= self.warmup_epochs:
                set_requires_grad(self.trunk_params, False)
            else:
                set_requires_grad(self.trunk_params, True)
                if self.freeze_bn and not self.unfreeze_bn_affine:
                    freeze_batchnorm_affine(self.model.backbone)
        if self.freeze_bn:
            set_batchnorm_eval(self.model.backbone)

    def bn_affine_trainable(self) -> bool:
        """Whether any backbone BatchNorm2d weight currently requires grad (for tests / logs)."""
        return any(m.weight is not None and m.weight.requires_grad
                   for m in batchnorm_modules(self.model.backbone))


class DynamicMarginMethod(ProxyAnchorMethod):
    defaults = DM_DEFAULTS
    #: Under the fair protocol: the loss, its margins and their learning rate ``mrg_lr``.
    loss_spec = LossSpec(keys=DM_LOSS_KEYS, defaults={k: DM_DEFAULTS[k] for k in DM_LOSS_KEYS},
                         build=build_dm_loss, param_groups=_dm_groups)
    paper_only = ProxyAnchorMethod.paper_only + ("mrg_lr_step", "mrg_lr_gamma")

    def __init__(self, recipe: dict[str, Any], num_classes: int):
        super().__init__(recipe, num_classes)
        o = self.options
        self.margin_optimizer, self.margin_scheduler = make_margin_optimizer(
            self.criterion, lr=float(o["mrg_lr"]), weight_decay=float(o["weight_decay"]),
            step=int(o["mrg_lr_step"]), gamma=float(o["mrg_lr_gamma"]))

    def _build_loss(self, num_classes: int, dim: int, o: dict[str, Any]) -> torch.nn.Module:
        return build_dm_loss(o, num_classes, dim)

    def optimizers_for_epoch(self, epoch: int) -> list[torch.optim.Optimizer]:
        return [self.optimizer, self.margin_optimizer]

    def all_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": self.optimizer, "margin": self.margin_optimizer}

    def all_schedulers(self) -> dict[str, Any]:
        return {"main": self.scheduler, "margin": self.margin_scheduler}

    def epoch_log(self) -> dict[str, float]:
        return self.criterion.margin_stats()
