r"""AsymptoticProxy: moving proxies (leftthomas/ProxyAnchor @b3786cd = 4137a7d).

Model (:class:`~dml_core.models.ProxyHeadNet`): backbone (resnet50 / bninception / googlenet) →
global MAX pool [→ GoogLeNet's dropout 0.2] → LayerNorm (no affine) → Linear(→ D = 512, no bias)
→ L2 = f.

Loss (:class:`~dml_core.losses.MovingProxyLoss`):
:math:`L=\frac1B\sum_i-\log\mathrm{softmax}_{y_i}(f_i^\top\hat W^\top/T)`, T = 0.03 (car, cub) /
0.05 (sop, isc). The proxies W (C × D, N(0,1)) are a BUFFER: no gradient, no optimiser. After every
optimiser step they move (``after_optimizer_step``), with the detached embeddings of the SAME
forward pass (pre-step weights, augmented images):

.. math:: w_c \leftarrow (1-m)\,\hat w_c + m\sum_{i:y_i=c} f_i\quad(c\text{ in the batch})

``momentum`` m weights the NEW features (0.5 car/cub, 0.95 sop/isc); the sum over same-class samples
is the original code's (not a mean).

Optimisation: Adam(all model parameters, ``lr`` 1e-4 car/cub, 4e-5 sop/isc; no weight decay),
StepLR(``lr_step`` = E // 2 = 15, γ 0.1) stepped after each epoch; batch 128, 30 epochs, shuffle
sampler without drop_last; 256-px crops (train RandomResizedCrop 256, test Resize 292 +
CenterCrop 256). No warm-up. BN: every backbone BatchNorm2d in eval mode at every epoch start
(``freeze_bn`` True); the affine parameters train.

Method keys: ``temperature``, ``momentum``, ``lr``, ``lr_step`` (None = epochs // 2),
``lr_gamma`` 0.1, ``freeze_bn`` True; ``optimizer`` ``"adam"`` and ``weight_decay`` 0 (the original code's;
only the ViT track's recipes have these keys: ``"adamw"`` with its weight decay, docs/PROTOCOL.md).
"""
from __future__ import annotations

from typing import Any

import torch

from dml_core.losses import MovingProxyLoss
from dml_core.methods._util import adam_family, backbone_weights, options
from dml_core.methods.base import Method, StepOutput
from dml_core.methods.shared import LossSpec
from dml_core.models import ProxyHeadNet

DEFAULTS: dict[str, Any] = {
    "temperature": 0.03,
    "momentum": 0.5,
    "lr": 1e-4,
    "lr_step": None,
    "lr_gamma": 0.1,
    "freeze_bn": True,
    "optimizer": "adam",
    "weight_decay": 0.0,
}


def build_loss(o: dict[str, Any], num_classes: int, dim: int,
               proxy_init: str = "randn") -> MovingProxyLoss:
    """Moving proxies (a buffer, no optimiser) with ``o["temperature"]`` and ``o["momentum"]``."""
    return MovingProxyLoss(num_classes, dim, temperature=float(o["temperature"]),
                           momentum=float(o["momentum"]), learnable=False, proxy_init=proxy_init)


def _move_proxies(method: Method, out: StepOutput, labels: torch.Tensor) -> None:
    """The moving-proxy update with the same forward pass's detached embeddings."""
    method.criterion.update(out.embeddings, labels)


class AsymptoticProxyMethod(Method):
    """Moving proxies (module docstring); declared as ``asymptotic_proxy`` in :mod:`.recipes`."""
    #: Under the fair protocol: the moving proxies and their update are the method.
    loss_spec = LossSpec(keys=("temperature", "momentum"),
                         defaults={k: DEFAULTS[k] for k in ("temperature", "momentum")},
                         build=build_loss, after_step=_move_proxies)
    paper_reads = ("lr_step", "weight_decay")  # weight decay: the AdamW option (ViT track)
    paper_only = ("optimizer",)

    def __init__(self, recipe: dict[str, Any], num_classes: int):
        o = self.options = options(recipe, DEFAULTS, self.name)
        dim = int(recipe["embedding_dim"])
        model = ProxyHeadNet(recipe["backbone"], dim, **backbone_weights(recipe),
                             pooling="max")
        criterion = build_loss(o, num_classes, dim)
        super().__init__(model, criterion)
        self.optimizer = adam_family(o["optimizer"], model.parameters(), float(o["lr"]),
                                     float(o["weight_decay"]))
        step = o["lr_step"] if o["lr_step"] is not None else max(int(recipe["epochs"]) // 2, 1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=int(step),
                                                         gamma=float(o["lr_gamma"]))
        self.freeze_bn = bool(o["freeze_bn"])

    def after_optimizer_step(self, out: StepOutput, labels: torch.Tensor) -> None:
        _move_proxies(self, out, labels)

