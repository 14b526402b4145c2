"""The contract between a method (NormSoftmax, CGD, AsymptoticProxy, PP, Dynamic Margin, the toy)
and the one training loop in :mod:`dml_core.training.engine`.

A method owns everything that differs between the papers: the model, the criterion (which holds
proxies and margins, pytorch-metric-learning style), the optimisers and schedulers of every phase,
what happens at the start of an epoch (BatchNorm freezing, warm-up) and after each optimiser step
(the moving-proxy update). The loop owns everything that is the same: batches, devices, autocast,
progress bars, evaluation, run folders, checkpoints and resume.

Epochs are numbered from 1. Per step the engine does, in this order::

    method.zero_grad()
    out = method.training_step(images, labels)        # under bf16 autocast on CUDA
    check out.loss is finite (else stop with epoch/step)
    out.loss.backward()
    method.clip_gradients()                           # no-op unless grad_clip_value is set
    method.optimizer_step(epoch)                      # steps this epoch's optimisers
    method.after_optimizer_step(out, labels)          # e.g. the moving-proxy update

and per epoch ``method.on_epoch_start(epoch)`` before the first step and
``method.on_epoch_end(epoch)`` (schedulers) after the last one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class StepOutput:
    """What one training step returns.

    loss: scalar float32 tensor (the total loss).
    logits: (B, C) class scores used for the train accuracy, or None when the method has none.
    embeddings: (B, D) detached embeddings of the batch (for post-step updates), or None.
    parts: named float components of the loss for logging (e.g. {"cls": .., "triplet": ..}).
    """

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    parts: dict[str, float] = field(default_factory=dict)


class Method:
    """Base class: subclasses set ``model``, ``criterion`` and build their optimisers.

    ``model(images) -> (B, D)`` L2-normalised embeddings, in train and eval mode alike; this is
    what retrieval is evaluated on. Extra training outputs (CGD's auxiliary logits) come from
    ``training_step``, which may call sub-modules of the model directly.
    """

    name: str = "method"  # set from its declaration (dml_core.methods.registry) when loaded
    grad_clip_value: float | None = None
    freeze_bn: bool = False
    optimizer: torch.optim.Optimizer | None = None  # the single optimiser of most methods
    scheduler: Any = None  # its LR scheduler

    def __init__(self, model: nn.Module, criterion: nn.Module | None = None):
        self.model = model
        self.criterion = criterion if criterion is not None else nn.Identity()

    # ----------------------------------------------------------------- per-step hooks
    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        """Default for a proxy criterion: ``loss = criterion(model(images), labels)``, train
        accuracy from ``criterion.logits`` (cosines to the proxies); the detached float32 embeddings
        go to ``after_optimizer_step`` (e.g. the moving-proxy update)."""
        emb = self.model(images)
        loss = self.criterion(emb, labels)
        logits = self.criterion.logits(emb.detach())
        return StepOutput(loss=loss, logits=logits, embeddings=emb.detach().float())

    def optimizers_for_epoch(self, epoch: int) -> list[torch.optim.Optimizer]:
        """The optimisers stepped in ``epoch`` (a warm-up epoch may use its own).
        Default: ``self.optimizer``."""
        return [self.optimizer]

    def all_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser of the method by name (for checkpoints). Default: ``self.optimizer``."""
        return {"main": self.optimizer}

    def all_schedulers(self) -> dict[str, Any]:
        """Every LR scheduler by name (for checkpoints). Default: ``self.scheduler`` if set."""
        return {"main": self.scheduler} if self.scheduler is not None else {}

    def zero_grad(self) -> None:
        for opt in self.all_optimizers().values():
            opt.zero_grad(set_to_none=True)
        self.model.zero_grad(set_to_none=True)
        self.criterion.zero_grad(set_to_none=True)

    def clip_gradients(self) -> None:
        if self.grad_clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.model.parameters(), self.grad_clip_value)
            torch.nn.utils.clip_grad_value_(self.criterion.parameters(), self.grad_clip_value)

    def optimizer_step(self, epoch: int) -> None:
        for opt in self.optimizers_for_epoch(epoch):
            opt.step()

    def after_optimizer_step(self, out: StepOutput, labels: torch.Tensor) -> None:
        """Hook after the optimiser step (moving-proxy update). Default: nothing."""

    # ----------------------------------------------------------------- per-epoch hooks
    def on_epoch_start(self, epoch: int) -> None:
        """Called after ``model.train()``: BN freezing, warm-up freezing. Default: put the
        backbone's BatchNorm2d layers in eval mode when ``self.freeze_bn`` (the original code's set_bn_eval)."""
        if self.freeze_bn:
            from dml_core.models.bn import set_batchnorm_eval

            set_batchnorm_eval(self.model.backbone)

    def on_epoch_end(self, epoch: int) -> None:
        """Step the schedulers. Default: step every scheduler once."""
        for sched in self.all_schedulers().values():
            sched.step()

    def epoch_log(self) -> dict[str, float]:
        """Extra per-epoch numbers for the run's metrics (e.g. margin mean/min/max). Default: none."""
        return {}

    # ----------------------------------------------------------------- state
    def to(self, device: torch.device | str) -> "Method":
        self.model.to(device)
        self.criterion.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "criterion": self.criterion.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.all_optimizers().items()},
            "schedulers": {k: v.state_dict() for k, v in self.all_schedulers().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["criterion"])
        for k, opt in self.all_optimizers().items():
            opt.load_state_dict(state["optimizers"][k])
        for k, sched in self.all_schedulers().items():
            sched.load_state_dict(state["schedulers"][k])
