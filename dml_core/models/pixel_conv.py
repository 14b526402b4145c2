"""An exact fast path for a convolution whose input map is a single pixel (1×1).

On the demo's 24-px images a ResNet's last stage runs on 1×1 maps: each of its 3×3 convolutions
(zero padding 1) then reads only its centre tap, since the other eight multiply padding. oneDNN's
kernels do not see that: on one CPU thread the forward and backward of a 512→512 3×3
convolution on a (32, 512, 1, 1) batch take ~49 ms, the same product as a linear layer takes
~5.5 ms (``benchmarks/conv_speed.py``), and three such convolutions were half of a demo training
step. :class:`PixelConv2d` computes them as that linear layer.

Exactness: for a 1×1 input, ``conv2d(x, W, b, padding=k//2)`` (any stride) is
``linear(x.flatten(1), W[:, :, k//2, k//2], b)`` reshaped to (B, C_out, 1, 1): the same sum
without the zero terms, so only the rounding of the accumulation can differ. The gradient of
every other tap is exactly 0 in both, and the module keeps its parameters, state dict and
``repr``, so optimisers, weight decay, checkpoints and pretrained weights see no difference.
Every other input (a map larger than 1×1, groups, dilation, another padding) goes to
``nn.Conv2d.forward`` unchanged; at the GPU setting's 224-px crops the path never triggers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PixelConv2d", "use_pixel_convs", "BatchIm2colConv2d", "use_batch_im2col_convs"]


class PixelConv2d(nn.Conv2d):
    """``nn.Conv2d`` with the single-pixel fast path (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        if (x.dim() == 4 and x.shape[-2:] == (1, 1) and self.groups == 1
                and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and kh % 2 == 1 and kw % 2 == 1 and self.padding == (kh // 2, kw // 2)):
            y = F.linear(x.flatten(1), self.weight[:, :, kh // 2, kw // 2], self.bias)
            return y[:, :, None, None]
        return super().forward(x)


def use_pixel_convs(model: nn.Module) -> nn.Module:
    """Give every plain ``nn.Conv2d`` of ``model`` the fast path, in place (their class becomes
    :class:`PixelConv2d`; parameters and buffers are untouched). Returns ``model``."""
    for m in model.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = PixelConv2d
    return model


class BatchIm2colConv2d(PixelConv2d):
    """A convolution as ONE matrix product over the batch, for the stand-in's pinned numeric path
    (:mod:`dml_core.models.standin`): ``W (C_out, C·k·k) @ unfold(x) (C·k·k, B·L)`` reshaped to
    ``(B, C_out, H_out, W_out)``; a 1×1 input map takes :class:`PixelConv2d`'s linear path.

    The same sums as ``nn.Conv2d`` in another order (not bitwise equal to it). With oneDNN off,
    torch's convolution falls back to one small product per image, which on the stand-in's
    24-px batches of 64 is ~2x slower than this. Square kernels and strides, one group, no
    dilation, zero padding (every convolution of a ResNet); any other goes to ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        if (x.dim() != 4 or x.shape[-2:] == (1, 1) or self.groups != 1 or kh != kw
                or isinstance(self.padding, str) or self.dilation != (1, 1)
                or self.padding_mode != "zeros" or self.stride[0] != self.stride[1]
                or self.padding[0] != self.padding[1]):
            return super().forward(x)
        (b, c, h, w), s, p = x.shape, self.stride[0], self.padding[0]
        ho, wo = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
        cols = F.unfold(x, kh, padding=p, stride=s)  # (B, C·k·k, L)
        cols = cols.transpose(0, 1).reshape(c * kh * kw, b * ho * wo)
        y = self.weight.reshape(self.out_channels, -1) @ cols  # (C_out, B·L)
        y = y.reshape(self.out_channels, b, ho, wo).transpose(0, 1)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


def use_batch_im2col_convs(model: nn.Module) -> nn.Module:
    """Give every plain ``nn.Conv2d`` of ``model`` :class:`BatchIm2colConv2d`'s forward, in place
    (parameters and buffers untouched). Returns ``model``."""
    for m in model.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = BatchIm2colConv2d
    return model
