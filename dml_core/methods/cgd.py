r"""CGD, Combination of Global Descriptors (leftthomas/CGD @c9cd98f).

Model (:class:`~dml_core.models.CGDNet`): ResNet-50 / ResNeXt-50 (the demo: ResNet-18) with a
stride-1 ``layer3`` (14 × 14 map at 224). Per letter of ``gd_config`` (S = avg, M = max, G = GeM p = 3):
:math:`h_i=\widehat{W_i g_i}` (no bias, D/n dims each), :math:`\phi=\widehat{[h_1;\dots;h_n]}`;
auxiliary classifier :math:`z = W_a\,\mathrm{BN1d}(g_1) + b_a` on the FIRST descriptor only.

Loss: :math:`L = L_{cls}(z) + L_{tri}(\phi)` with label-smoothed temperature CE
(ε = ``smoothing`` 0.1, τ = ``temperature`` 0.5, :class:`~dml_core.losses.LabelSmoothingCrossEntropy`)
and batch-hard triplet on non-squared Euclidean distances (``margin`` 0.1,
:class:`~dml_core.losses.BatchHardTripletLoss`), both weights 1, averaged over all anchors.

Optimisation: Adam(all parameters, ``lr`` 1e-4, no weight decay), MultiStepLR(milestones
``lr_milestones`` = [⌊0.6 E⌋, ⌊0.8 E⌋] = [12, 16] for E = 20, γ 0.1), stepped after each epoch; no
warm-up. BN: every backbone BatchNorm2d is put in eval mode at every epoch start (running
statistics frozen, affine still trained; ``freeze_bn`` True); the auxiliary BatchNorm1d trains.
Batches: MPerClass sampler, 128 = 32 classes × 4 (recipe keys).

Method keys: ``gd_config`` ('SG'), ``smoothing`` 0.1, ``temperature`` 0.5, ``margin`` 0.1,
``lr`` 1e-4, ``lr_milestones`` None (= from the epochs as above), ``lr_gamma`` 0.1,
``freeze_bn`` True, ``gem_clamp`` True; ``optimizer`` ``"adam"`` and ``weight_decay`` 0 (the
seed's; only the ViT track's recipes have these keys: ``"adamw"`` with its weight decay).

Fix vs the original: GeM is the standard clamped form (ε 1e-6), because the original code's
``sign(s)|s|^{1/3}`` gives a NaN gradient on an all-zero channel; ``gem_clamp=False`` is the seed.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from dml_core.losses import BatchHardTripletLoss, LabelSmoothingCrossEntropy
from dml_core.methods._util import adam_family, backbone_weights, options
from dml_core.methods.base import Method, StepOutput
from dml_core.methods.shared import LossSpec
from dml_core.models import CGDNet

DEFAULTS: dict[str, Any] = {
    "gd_config": "SG",
    "smoothing": 0.1,
    "temperature": 0.5,
    "margin": 0.1,
    "lr": 1e-4,
    "lr_milestones": None,
    "lr_gamma": 0.1,
    "freeze_bn": True,
    "gem_clamp": True,
    "optimizer": "adam",
    "weight_decay": 0.0,
}


class CGDLoss(nn.Module):
    """:math:`L_{cls}(z, y) + L_{tri}(\\phi, y)`; holds no parameters (the classifier is the model's)."""

    def __init__(self, smoothing: float = 0.1, temperature: float = 0.5, margin: float = 0.1):
        super().__init__()
        self.classification = LabelSmoothingCrossEntropy(smoothing, temperature)
        self.triplet = BatchHardTripletLoss(margin)

    def forward(self, embeddings: torch.Tensor, logits: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cls = self.classification(logits, labels)
        tri = self.triplet(embeddings, labels)
        return cls + tri, cls, tri


CGD_BACKBONES = CGDNet.BACKBONES  # the original code's two + resnet18 and the CPU demo's resnet18_s2


def cgd_milestones(epochs: int) -> list[int]:
    """The original code's ``[int(0.6 E), int(0.8 E)]``: [12, 16] for 20 epochs."""
    return [int(math.floor(0.6 * epochs)), int(math.floor(0.8 * epochs))]


CGD_OWN_KEYS = ("gd_config", "gem_clamp", "smoothing", "temperature", "margin")


def build_network(recipe: dict[str, Any], o: dict[str, Any], num_classes: int) -> CGDNet:
    """CGD's network: the global descriptors of ``o["gd_config"]`` and the auxiliary classifier."""
    return CGDNet(recipe["backbone"], o["gd_config"], int(recipe["embedding_dim"]),
                  num_classes=num_classes, **backbone_weights(recipe),
                  gem_clamp=bool(o["gem_clamp"]))


def build_loss(o: dict[str, Any], num_classes: int = 0, dim: int = 0,
               proxy_init: str | None = None) -> "CGDLoss":
    """Label-smoothed classification of the auxiliary logits + batch-hard triplet (no proxies)."""
    return CGDLoss(float(o["smoothing"]), float(o["temperature"]), float(o["margin"]))


def cgd_step(method: Method, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
    """One step: the descriptors and the auxiliary logits, both terms of the loss."""
    emb, logits = method.model.forward_with_aux(images)
    loss, cls, tri = method.criterion(emb, logits, labels)
    return StepOutput(loss=loss, logits=logits.detach(), embeddings=emb.detach(),
                      parts={"cls": float(cls.detach()), "triplet": float(tri.detach())})


class CGDMethod(Method):
    """CGD (module docstring); declared as ``cgd`` in :mod:`.recipes`."""
    #: Under the fair protocol CGD keeps its own network (the descriptors and the auxiliary
    #: classifier are the method) and loss; the optimiser and schedule are the shared ones.
    loss_spec = LossSpec(keys=CGD_OWN_KEYS, defaults={k: DEFAULTS[k] for k in CGD_OWN_KEYS},
                         build=build_loss, network=build_network, training_step=cgd_step)
    paper_reads = ("weight_decay",)  # the AdamW option (ViT track)
    paper_only = ("lr_milestones", "optimizer")

    def __init__(self, recipe: dict[str, Any], num_classes: int):
        o = self.options = options(recipe, DEFAULTS, self.name)
        model = build_network(recipe, o, num_classes)
        criterion = build_loss(o)
        super().__init__(model, criterion)
        self.optimizer = adam_family(o["optimizer"], model.parameters(), float(o["lr"]),
                                     float(o["weight_decay"]))
        milestones = (list(o["lr_milestones"]) if o["lr_milestones"] is not None
                      else cgd_milestones(int(recipe["epochs"])))
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones,
                                                              gamma=float(o["lr_gamma"]))
        self.freeze_bn = bool(o["freeze_bn"])

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        return cgd_step(self, images, labels)

