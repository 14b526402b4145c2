r"""The STL-10 toy of AsymptoticProxy (leftthomas/ProxyAnchor, ``toy.py``): moving vs learnable proxies in 2-D (or 3-D).

Model (:class:`~dml_core.models.ToyNet`): resnet18 with the stem max pool removed → global MAX
pool (512) → Linear(512 → ``feature_dim`` = 2 or 3, with bias) → L2, so every embedding f lies on
the unit circle (sphere).

Loss (:class:`~dml_core.losses.MovingProxyLoss`), T = 0.03:
:math:`L=\frac1B\sum_i-\log\mathrm{softmax}_{y_i}(f_i^\top\hat W^\top/T)`, with
:math:`\hat w_c = w_c/\lVert w_c\rVert`.

- ``learnable=False`` (the original code's default): W (C × d) is a BUFFER, not in the optimiser, and after
  every optimiser step it moves with the detached embeddings of the same forward pass:
  :math:`w_c \leftarrow (1-m)\,\hat w_c + m\sum_{i\in B_c} f_i` (m weights the NEW features).
- ``learnable=True`` (``--with_learnable_proxy``): W is an ``nn.Parameter`` trained by the same
  Adam; no moving update.

Optimisation: Adam(model [+ proxies], ``lr`` 1e-4, no weight decay; the seed hard-coded lr, here it
is a key), StepLR(``lr_step`` = epochs // 2, γ = ``lr_gamma`` 0.1) stepped after each epoch. BN:
every backbone BatchNorm2d in eval mode at each epoch start when ``freeze_bn``.

Method keys (recipe dict): ``feature_dim`` (or ``embedding_dim``) 2, ``pretrained`` False,
``epochs`` (for the default ``lr_step``), ``temperature`` 0.03, ``momentum`` 0.5, ``learnable``
False, ``lr`` 1e-4, ``lr_step`` None, ``lr_gamma`` 0.1, ``freeze_bn`` True, ``record_steps`` True.

With ``record_steps`` the normalised proxies after every step are appended to ``proxy_trail``
(a list of (C, d) CPU tensors) for the pictures; :meth:`pop_proxy_trail` hands them over.
"""
from __future__ import annotations

from typing import Any

import torch

from dml_core.losses import MovingProxyLoss, normalize_rows
from dml_core.methods._util import options
from dml_core.methods.base import Method, StepOutput
from dml_core.models import ToyNet

DEFAULTS: dict[str, Any] = {
    "temperature": 0.03,
    "momentum": 0.5,
    "learnable": False,
    "lr": 1e-4,
    "lr_step": None,
    "lr_gamma": 0.1,
    "freeze_bn": True,
    "record_steps": True,
}


class ToyMethod(Method):
    """Moving (buffer + update) or learnable (Parameter + Adam) proxies on a 2-/3-D ToyNet."""

    def __init__(self, recipe: dict[str, Any], num_classes: int):
        o = self.options = options(recipe, DEFAULTS, self.name)
        dim = int(recipe.get("feature_dim", recipe.get("embedding_dim", 2)))
        if dim not in (2, 3):
            raise ValueError(f"the toy's feature_dim must be 2 or 3, got {dim}")
        self.feature_dim = dim
        model = ToyNet(dim, pretrained=bool(recipe.get("pretrained", False)))
        criterion = MovingProxyLoss(num_classes, dim, temperature=float(o["temperature"]),
                                    momentum=float(o["momentum"]), learnable=bool(o["learnable"]))
        super().__init__(model, criterion)
        self.learnable = bool(o["learnable"])
        params = list(model.parameters()) + (list(criterion.parameters()) if self.learnable else [])
        self.optimizer = torch.optim.Adam(params, lr=float(o["lr"]))
        step = o["lr_step"] if o["lr_step"] is not None else max(int(recipe.get("epochs", 30)) // 2, 1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=int(step),
                                                         gamma=float(o["lr_gamma"]))
        self.freeze_bn = bool(o["freeze_bn"])
        self.record_steps = bool(o["record_steps"])
        self.proxy_trail: list[torch.Tensor] = []

    @property
    def proxies(self) -> torch.Tensor:
        """The normalised proxies :math:`\\hat W` (C, d), detached, on the CPU."""
        return normalize_rows(self.criterion.proxies.detach().float()).cpu()

    def after_optimizer_step(self, out: StepOutput, labels: torch.Tensor) -> None:
        """The moving-proxy update (a no-op for learnable proxies), then record the proxies."""
        self.criterion.update(out.embeddings, labels)
        if self.record_steps:
            self.proxy_trail.append(self.proxies.clone())

    def pop_proxy_trail(self) -> list[torch.Tensor]:
        """The proxies recorded since the last call (list of (C, d)); clears the record."""
        trail, self.proxy_trail = self.proxy_trail, []
        return trail

    def epoch_log(self) -> dict[str, float]:
        """How far apart the proxies are: min/mean pairwise angle (degrees) between classes."""
        p = self.proxies
        cos = (p @ p.t()).clamp(-1.0, 1.0)
        iu = torch.triu_indices(p.shape[0], p.shape[0], offset=1)
        ang = torch.rad2deg(torch.arccos(cos[iu[0], iu[1]]))
        if ang.numel() == 0:
            return {}
        return {"proxy_angle_min_deg": float(ang.min()), "proxy_angle_mean_deg": float(ang.mean())}


__all__ = ["ToyMethod", "DEFAULTS"]
