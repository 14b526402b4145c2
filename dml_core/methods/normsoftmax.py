r"""NormSoftmax (leftthomas/NormSoftmax @0648433).

Model (:class:`~dml_core.models.NormSoftmaxNet`): ResNet-50 → GAP → LayerNorm (no affine) →
"refactor" Linear(2048 → D, **with bias**) → L2 = e. Proxies P (C × D, kaiming_uniform) live in
:class:`~dml_core.losses.NormSoftmaxLoss`.

Loss: :math:`L=\frac1B\sum_i -\log\mathrm{softmax}_{y_i}(e_i^\top\hat P^\top/T)`, T = 0.05 (scale 20);
no label smoothing, no margin.

Optimisation (the original code's ``--num_epochs 30`` = **31** epochs, the recipe's ``epochs``):

* epochs ``1..warmup_epochs`` (1): warm-up with its OWN SGD over {refactor, proxies}
  (lr 0.01, momentum 0.9, wd 1e-4). The backbone stays in train mode (its BN running statistics
  update, as in the seed) but is not stepped; its ``requires_grad`` is switched off meanwhile,
  which skips the backbone backward and changes no number (the seed computed those gradients and
  threw them away).
* epochs ``warmup_epochs+1..``: a NEW SGD over all parameters (model + proxies; BN, biases and P
  included), lr 0.01, momentum 0.9, wd 1e-4, with StepLR(``lr_step`` = (epochs − warm-up) // 2 = 15,
  γ 0.1) stepped after each of these epochs: epochs 2–16 at 0.01, 17–31 at 0.001.
* BN is NOT frozen (``freeze_bn`` False).

Method keys (defaults = the seed): ``lr`` 0.01, ``momentum`` 0.9, ``weight_decay`` 1e-4,
``temperature`` 0.05, ``warmup_epochs`` 1, ``lr_step`` None (auto), ``lr_gamma`` 0.1,
``freeze_bn`` False, ``optimizer`` ``"sgd"`` (the original code's; ``"adamw"``, same groups, decoupled weight
decay, is the ViT track's, docs/PROTOCOL.md; ``"adam"``, same groups and weight decay, is the CPU
demo's choice only: a from-scratch ResNet-18 does not leave chance level within the
demo's ~370 SGD steps at any lr tried, 0.01-0.1, while Adam 1e-3 learns), and two switches for the
differences from the official code (azgo14/classification_metric_learning):

* ``refactor``: ``"linear_bias"`` (seed: always a Linear with bias) or ``"official"``
  (azgo14/classification_metric_learning: no remap layer when D equals the backbone width, else a
  Linear without bias);
* ``proxy_weight_decay``: True (the original code and the official one: wd 1e-4 also on the normalised proxies, which
  shrinks ‖p‖ and grows their effective step) or False.

The other differences are recipe overrides: ``samples_per_class=5`` for SOP/In-shop and
``lr=0.001`` for CUB reproduce the official settings.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dml_core.losses import NormSoftmaxLoss
from dml_core.methods._util import (backbone_weights, fused_adam, options, params_except,
                                    set_requires_grad)
from dml_core.methods.base import Method
from dml_core.methods.schema import KEYS
from dml_core.methods.shared import LossSpec
from dml_core.models import NormSoftmaxNet, feature_dim, set_batchnorm_eval

DEFAULTS: dict[str, Any] = {
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "temperature": 0.05,
    "warmup_epochs": 1,
    "lr_step": None,
    "lr_gamma": 0.1,
    "freeze_bn": False,
    "refactor": "linear_bias",
    "proxy_weight_decay": True,
    "optimizer": "sgd",
}
REFACTORS = KEYS["refactor"].choices  # the recipe schema's choices
OPTIMIZERS = KEYS["optimizer"].choices


def build_loss(o: dict[str, Any], num_classes: int, dim: int,
               proxy_init: str = "kaiming_uniform") -> NormSoftmaxLoss:
    """The temperature softmax over cosines to learnable proxies (``o["temperature"]``)."""
    return NormSoftmaxLoss(num_classes, dim, temperature=float(o["temperature"]),
                           proxy_init=proxy_init)


class NormSoftmaxMethod(Method):
    """NormSoftmax (module docstring); declared as ``normsoftmax`` in :mod:`.recipes`."""
    #: Under the fair protocol (:mod:`dml_core.methods.shared`): only the loss is the method's.
    loss_spec = LossSpec(keys=("temperature",), defaults={"temperature": DEFAULTS["temperature"]},
                         build=build_loss)
    #: The shared keys the paper build reads, and the keys only the paper build reads.
    paper_reads = ("weight_decay", "lr_step", "warmup_epochs")
    paper_only = ("momentum", "refactor", "proxy_weight_decay", "optimizer")

    def __init__(self, recipe: dict[str, Any], num_classes: int):
        o = self.options = options(recipe, DEFAULTS, self.name)
        if o["refactor"] not in REFACTORS:
            raise ValueError(f"refactor must be one of {REFACTORS}, got {o['refactor']!r}")
        if o["optimizer"] not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {o['optimizer']!r}")
        dim = int(recipe["embedding_dim"])
        model = NormSoftmaxNet(recipe["backbone"], dim, **backbone_weights(recipe))
        if o["refactor"] == "official":
            width = feature_dim(recipe["backbone"])
            model.embedding = nn.Identity() if dim == width else nn.Linear(width, dim, bias=False)
        criterion = build_loss(o, num_classes, dim)
        super().__init__(model, criterion)
        self.warmup_epochs = int(o["warmup_epochs"])
        lr, mom, wd = float(o["lr"]), float(o["momentum"]), float(o["weight_decay"])
        proxy_wd = wd if o["proxy_weight_decay"] else 0.0
        head = list(model.embedding.parameters())
        if o["optimizer"] == "sgd":
            def make(groups):
                return torch.optim.SGD(groups, lr=lr, momentum=mom)
        elif o["optimizer"] == "adam":  # the CPU demo's from-scratch network (SGD needs
            def make(groups):              # thousands of steps there)
                return torch.optim.Adam(groups, lr=lr, **fused_adam())
        else:  # "adamw": the ViT track's optimiser (hyperbolic-ViT protocol)
            def make(groups):
                return torch.optim.AdamW(groups, lr=lr, **fused_adam())
        self.warmup_optimizer = make(
            [{"params": head, "weight_decay": wd},
             {"params": list(criterion.parameters()), "weight_decay": proxy_wd}]
        ) if self.warmup_epochs > 0 else None
        # The "new" optimiser of epoch 2 on; built now, it has no state until its first step.
        self.optimizer = make(
            [{"params": list(model.parameters()), "weight_decay": wd},
             {"params": list(criterion.parameters()), "weight_decay": proxy_wd}])
        main_epochs = int(recipe["epochs"]) - self.warmup_epochs
        step = o["lr_step"] if o["lr_step"] is not None else max(main_epochs // 2, 1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=int(step),
                                                         gamma=float(o["lr_gamma"]))
        self.freeze_bn = bool(o["freeze_bn"])

    # ------------------------------------------------------------------------ step
    def in_warmup(self, epoch: int) -> bool:
        return epoch <= self.warmup_epochs

    def optimizers_for_epoch(self, epoch: int) -> list[torch.optim.Optimizer]:
        return [self.warmup_optimizer] if self.in_warmup(epoch) else [self.optimizer]

    def all_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        out = {"main": self.optimizer}
        if self.warmup_optimizer is not None:
            out["warmup"] = self.warmup_optimizer
        return out

    # ------------------------------------------------------------------------ epochs
    def on_epoch_start(self, epoch: int) -> None:
        backbone = params_except(self.model, self.model.embedding)
        set_requires_grad(backbone, not self.in_warmup(epoch))
        if self.freeze_bn:
            set_batchnorm_eval(self.model.backbone)

    def on_epoch_end(self, epoch: int) -> None:
        if not self.in_warmup(epoch):
            self.scheduler.step()
