r"""PP, "Positive Proxy" (leftthomas/ProxyAnchor @ecce2af).

Model (:class:`~dml_core.models.ProxyHeadNet`): backbone (resnet50 / bninception / googlenet) →
global MAX pool → LayerNorm (no affine) → Linear(→ D = 512, no bias) → L2 = f. Learnable proxies
W (C × D, row-normalised N(0,1)) live in the loss; :math:`s_{ic}=f_i^\top\hat w_c`.

Loss (``loss``):

* ``proxy_anchor`` (default; α = ``alpha`` 32, δ = ``margin`` 0.1):
  :math:`\frac1{|P^+|}\sum_{c\in P^+}\log(1+\sum_{i\in X_c^+}e^{-\alpha(s_{ic}-\delta)})
  +\frac1C\sum_c\log(1+\sum_{i\in X_c^-}e^{\alpha(s_{ic}+\delta)})`;
* ``normalized_softmax``: :math:`\mathrm{CE}(\text{scale}\cdot s, y)`, ``scale`` 32;
* ``positive_only`` (ablation, commit ``ebad4cb``): the positive half of Proxy-Anchor without
  margin, :math:`\frac1{|P^+|}\sum_{c\in P^+}\log(1+\sum_{i\in X_c^+}e^{-\alpha s_{ic}})` (no
  repulsion: it can collapse).

``positive_proxy`` (the option the README's title refers to; absent from the seed commit
``ecce2af``, whose behaviour ``False`` reproduces): ``True`` / ``"embeddings"`` = commit
``f494707``: the embeddings receive only the positive-proxy part of the gradient,
:math:`\partial L/\partial f_i := (\partial L/\partial s_{iy_i})\,\hat w_{y_i}`, while the proxies
get the full gradient; ``"proxies"`` = the ``af9156d`` ablation (proxies get only the positive
pull). The loss value never changes, only the gradients (and the original code's missing 1/B of the
starred normalized softmax is not reproduced).

Optimisation: AdamP (weight decay 0, betas (0.9, 0.999), delta 0.1, wd_ratio 0.1) with parameter
groups backbone ``lr`` 1e-4, refactor ``refactor_lr`` 1e-4, proxies ``proxy_lr`` 1e-2;
StepLR(``lr_step`` 5, γ ``lr_gamma`` 0.5) stepped after every epoch, warm-up epochs included.
Warm-up: epochs 1..``warmup_epochs`` (2) have every backbone parameter ``requires_grad=False``
(only refactor and proxies train). BN: backbone BatchNorm2d always in eval mode (``freeze_bn``);
the BN affine parameters train after the warm-up. Batch 64, 20 epochs, shuffle sampler, 224 crops.
"""
from __future__ import annotations

from typing import Any

import torch
from adamp import AdamP

from dml_core.losses import NormSoftmaxLoss, PositiveProxyLoss, ProxyAnchorLoss
from dml_core.methods._util import backbone_weights, options, params_except, set_requires_grad
from dml_core.methods.base import Method
from dml_core.methods.schema import KEYS
from dml_core.methods.shared import LossSpec
from dml_core.models import ProxyHeadNet, set_batchnorm_eval

LOSSES = KEYS["loss"].choices  # the recipe schema's choices
DEFAULTS: dict[str, Any] = {
    "loss": "proxy_anchor",
    "positive_proxy": False,
    "alpha": 32.0,
    "margin": 0.1,
    "scale": 32.0,
    "lr": 1e-4,
    "refactor_lr": 1e-4,
    "proxy_lr": 1e-2,
    "weight_decay": 0.0,
    "lr_step": 5,
    "lr_gamma": 0.5,
    "warmup_epochs": 2,
    "freeze_bn": True,
}


def build_pp_loss(loss: str, num_classes: int, dim: int, o: dict[str, Any],
                  proxy_init: str = "unit_randn") -> torch.nn.Module:
    """The PP criterion named ``loss`` (proxies: unit random vectors, the original code's, by default)."""
    pp = o["positive_proxy"]
    if loss == "proxy_anchor":
        return ProxyAnchorLoss(num_classes, dim, margin=float(o["margin"]), alpha=float(o["alpha"]),
                               positive_proxy=pp, proxy_init=proxy_init)
    if loss == "normalized_softmax":
        return NormSoftmaxLoss(num_classes, dim, temperature=1.0 / float(o["scale"]),
                               positive_proxy=pp, proxy_init=proxy_init)
    if loss == "positive_only":
        if pp:
            raise ValueError("positive_proxy has no meaning for loss='positive_only' (it has no "
                             "negative term); set positive_proxy=False")
        return PositiveProxyLoss(num_classes, dim, alpha=float(o["alpha"]), proxy_init=proxy_init)
    raise ValueError(f"unknown PP loss {loss!r}; expected one of {LOSSES}")


def _shared_loss(o: dict[str, Any], num_classes: int, dim: int, proxy_init: str):
    return build_pp_loss(o["loss"], num_classes, dim, o, proxy_init)


class PositiveProxyMethod(Method):
    """PP (module docstring); declared as ``positive_proxy`` in :mod:`.recipes`."""
    #: Under the fair protocol PP is Proxy-Anchor's build (the same network, optimiser, proxy
    #: initialisation and learning rate) with the positive-proxy gradient option.
    loss_spec = LossSpec(keys=("loss", "positive_proxy", "alpha", "margin", "scale"),
                         defaults={k: DEFAULTS[k] for k in ("loss", "positive_proxy", "alpha",
                                                            "margin", "scale")},
                         build=_shared_loss)
    paper_reads = ("weight_decay", "lr_step", "warmup_epochs")
    paper_only = ("refactor_lr", "proxy_lr")

    def __init__(self, recipe: dict[str, Any], num_classes: int):
        o = self.options = options(recipe, DEFAULTS, self.name)
        dim = int(recipe["embedding_dim"])
        model = ProxyHeadNet(recipe["backbone"], dim, **backbone_weights(recipe),
                             pooling="max")
        criterion = build_pp_loss(o["loss"], num_classes, dim, o)
        super().__init__(model, criterion)
        self.backbone_params = params_except(model, model.embedding)
        wd = float(o["weight_decay"])
        self.optimizer = AdamP([
            {"params": self.backbone_params, "lr": float(o["lr"])},
            {"params": list(model.embedding.parameters()), "lr": float(o["refactor_lr"])},
            {"params": list(criterion.parameters()), "lr": float(o["proxy_lr"])},
        ], lr=float(o["lr"]), weight_decay=wd)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=int(o["lr_step"]),
                                                         gamma=float(o["lr_gamma"]))
        self.warmup_epochs = int(o["warmup_epochs"])
        self.freeze_bn = bool(o["freeze_bn"])

    def on_epoch_start(self, epoch: int) -> None:
        # state, not transition: a run resumed at any epoch gets the right flags
        set_requires_grad(self.backbone_params, epoch > self.warmup_epochs)
        if self.freeze_bn:
            set_batchnorm_eval(self.model.backbone)
