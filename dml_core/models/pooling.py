"""Global pooling of a feature map ``(B, C, H, W) -> (B, C)``.

- ``avg``: GAP, g_c = mean x (CGD's S / SPoC, NormSoftmax, ...).
- ``max``: GMP, g_c = max x (CGD's M / MAC; AsymptoticProxy, PP, the toy).
- ``avgmax``: GAP + GMP summed (Proxy-Anchor / Learnable Dynamic Margin).
- ``gem``: GeM with fixed p = 3 (CGD's G), see :class:`GeM`.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["GlobalAvgPool", "GlobalMaxPool", "GlobalAvgMaxPool", "GeM", "build_pooling", "POOLINGS"]


class GlobalAvgPool(nn.Module):
    """g_c = (1/HW) sum_{h,w} x_chw; (B,C,H,W) -> (B,C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class GlobalMaxPool(nn.Module):
    """g_c = max_{h,w} x_chw; (B,C,H,W) -> (B,C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


class GlobalAvgMaxPool(nn.Module):
    """g_c = mean x + max x (Proxy-Anchor's ``avgpool(x) + maxpool(x)``); (B,C,H,W) -> (B,C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))


class GeM(nn.Module):
    """Generalised mean pooling with a fixed exponent p; (B,C,H,W) -> (B,C).

    clamp=True (default, standard GeM): g_c = (mean clamp(x, eps)^p)^(1/p), eps = 1e-6.
    clamp=False (CGD seed): s_c = mean x^p, g_c = sign(s_c) |s_c|^(1/p). On a channel that is
    all zero (possible after ReLU) s_c = 0 and the backward of |s|^(1/p) is 0 * inf = NaN, which
    poisons every gradient of the backbone; the clamp avoids it.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, clamp: bool = True):
        super().__init__()
        self.p, self.eps, self.clamp = float(p), float(eps), bool(clamp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clamp:
            return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
        s = x.pow(self.p).mean(dim=(2, 3))
        return torch.sign(s) * torch.abs(s).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, eps={self.eps}, clamp={self.clamp}"


POOLINGS = {"avg": GlobalAvgPool, "max": GlobalMaxPool, "avgmax": GlobalAvgMaxPool, "gem": GeM}


def build_pooling(name: str, **kwargs) -> nn.Module:
    """Pooling module by name (``avg``, ``max``, ``avgmax``, ``gem``); kwargs go to GeM."""
    try:
        cls = POOLINGS[name]
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}; expected one of {sorted(POOLINGS)}") from None
    return cls(**kwargs)
