"""Global pooling of a feature map ``(B, C, H, W) -> (B, C)``.

- ``avg``: GAP, g_c = mean x (CGD's S / SPoC, NormSoftmax, ...).
- ``max``: GMP, g_c = max x (CGD's M / MAC; AsymptoticProxy, PP, the toy).
- ``avgmax``: GAP + GMP summed (Proxy-Anchor / Learnable Dynamic Margin).
- ``gem``: GeM with fixed p = 3 (CGD's G), see :class:`GeM`.
- ``token``: the class token a ViT trunk returns as a 1×1 map (``tokens="cls"``), see
  :class:`ClassToken`.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["GlobalAvgPool", "GlobalMaxPool", "GlobalAvgMaxPool", "GeM", "ClassToken",
           "build_pooling", "POOLINGS"]


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


class ClassToken(nn.Module):
    """g = the class token of a ViT trunk built with ``tokens="cls"``; (B,C,1,1) -> (B,C).

    The ViT heads read the class token in place of their CNN pooling (GAP, GMP, GAP + GMP of a
    1×1 map would be the token, the token, twice the token)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"ClassToken expects the (B, C, 1, 1) class-token map of a ViT trunk "
                             f"built with tokens='cls', got shape {tuple(x.shape)}")
        return x.flatten(1)


POOLINGS = {"avg": GlobalAvgPool, "max": GlobalMaxPool, "avgmax": GlobalAvgMaxPool, "gem": GeM,
            "token": ClassToken}


def build_pooling(name: str, **kwargs) -> nn.Module:
    """Pooling module by name (``avg``, ``max``, ``avgmax``, ``gem``); kwargs go to GeM."""
    try:
        cls = POOLINGS[name]
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}; expected one of {sorted(POOLINGS)}") from None
    return cls(**kwargs)
