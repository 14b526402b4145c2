"""BatchNorm helpers: the original code's ``set_bn_eval`` and the BN affine freeze."""
from __future__ import annotations

from torch import nn

__all__ = ["set_batchnorm_eval", "freeze_batchnorm_affine", "batchnorm_modules"]


def batchnorm_modules(module: nn.Module, kinds: tuple[type, ...] = (nn.BatchNorm2d,)) -> list[nn.Module]:
    """Every sub-module of ``module`` (itself included) that is an instance of ``kinds``."""
    return [m for m in module.modules() if isinstance(m, kinds)]


def set_batchnorm_eval(module: nn.Module, kinds: tuple[type, ...] = (nn.BatchNorm2d,)) -> int:
    """Put every BatchNorm of ``kinds`` in eval mode (running statistics frozen); returns the count.

    Call after ``model.train()`` at the start of every epoch, as the original code's ``set_bn_eval`` does.
    Only BatchNorm2d by default, so CGD's auxiliary BatchNorm1d stays in train mode. The affine
    parameters still train (see :func:`freeze_batchnorm_affine`).
    """
    mods = batchnorm_modules(module, kinds)
    for m in mods:
        m.eval()
    return len(mods)


def freeze_batchnorm_affine(module: nn.Module, kinds: tuple[type, ...] = (nn.BatchNorm2d,),
                            frozen: bool = True) -> int:
    """Set ``requires_grad = not frozen`` on the weight and bias of every BatchNorm of ``kinds``.

    PA/LDM's ``--bn-freeze 1`` does this in the constructor; returns the number of tensors touched.
    """
    n = 0
    for m in batchnorm_modules(module, kinds):
        for p in (m.weight, m.bias):
            if p is not None:
                p.requires_grad_(not frozen)
                n += 1
    return n
