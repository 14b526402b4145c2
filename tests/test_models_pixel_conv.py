"""The convolution fast paths compute what nn.Conv2d computes (dml_core.models.pixel_conv)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dml_core.models import build_backbone
from dml_core.models.pixel_conv import (BatchIm2colConv2d, PixelConv2d, use_batch_im2col_convs,
                                       use_pixel_convs)


def _same_outputs_and_gradients(conv, fast, x, rtol, atol):
    """``fast(x)`` equals ``conv(x)``, and so do the gradients of the input, the weight and the
    bias under one random output gradient; returns ``conv(x)``."""
    x = x.requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = conv(x), fast(x2)
    assert y2.shape == y.shape
    torch.testing.assert_close(y2, y, rtol=rtol, atol=atol)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x.grad, rtol=rtol, atol=atol)
    torch.testing.assert_close(fast.weight.grad, conv.weight.grad, rtol=rtol, atol=atol)
    if conv.bias is not None:
        torch.testing.assert_close(fast.bias.grad, conv.bias.grad, rtol=rtol, atol=atol)
    return y


@pytest.mark.parametrize("conv", [
    nn.Conv2d(16, 8, 3, padding=1),  # ResNet's 3x3
    nn.Conv2d(16, 8, 3, stride=2, padding=1, bias=False),  # a stage's first, strided
    nn.Conv2d(16, 8, 1),  # a 1x1 projection
    nn.Conv2d(16, 8, (5, 3), padding=(2, 1)),
])
def test_single_pixel_input_gives_the_convolution_and_its_gradients(conv):
    torch.manual_seed(0)
    fast = use_pixel_convs(copy.deepcopy(conv))
    assert type(fast) is PixelConv2d
    y = _same_outputs_and_gradients(conv, fast, torch.randn(4, 16, 1, 1), rtol=1e-5, atol=1e-6)
    assert y.shape == (4, 8, 1, 1)
    # the taps that read padding get exactly zero gradient, as in the convolution
    kh, kw = conv.kernel_size
    off = fast.weight.grad.clone()
    off[:, :, kh // 2, kw // 2] = 0
    assert off.abs().max() == 0


def test_other_inputs_and_convolutions_keep_the_plain_path():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 8, 3, padding=1)
    fast = use_pixel_convs(copy.deepcopy(conv))
    x = torch.randn(2, 16, 3, 3)
    assert torch.equal(fast(x), conv(x))  # a map larger than 1x1: nn.Conv2d.forward itself
    no_pad = use_pixel_convs(nn.Conv2d(16, 8, 3, padding=0))
    with pytest.raises(RuntimeError):  # a 3x3 kernel cannot run on a 1x1 map without padding
        no_pad(torch.randn(2, 16, 1, 1))
    grouped = nn.Conv2d(16, 8, 3, padding=1, groups=2)
    g_fast = use_pixel_convs(copy.deepcopy(grouped))
    x1 = torch.randn(2, 16, 1, 1)
    assert torch.equal(g_fast(x1), grouped(x1))  # groups: the plain path, bit for bit


def test_the_trunk_uses_it_and_keeps_its_state_dict():
    torch.manual_seed(0)
    trunk = build_backbone("resnet18", False)
    convs = [m for m in trunk.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is PixelConv2d for m in convs)
    plain = copy.deepcopy(trunk)
    for m in plain.modules():
        if type(m) is PixelConv2d:
            m.__class__ = nn.Conv2d
    assert list(trunk.state_dict()) == list(plain.state_dict())
    trunk.eval(), plain.eval()
    x = torch.randn(3, 3, 24, 24)  # the demo's crops: the last stage runs on 1x1 maps
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), plain(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("conv, size", [
    (nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False), 24),  # ResNet's stem
    (nn.Conv2d(8, 8, 3, padding=1), 6),
    (nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), 5),  # odd map, strided
    (nn.Conv2d(8, 16, 1, stride=2, bias=False), 6),  # a downsample projection
    (nn.Conv2d(8, 8, 3, padding=1), 1),  # single pixel: PixelConv2d's linear path
    (nn.Conv2d(8, 8, 3, padding=1, groups=2), 4),  # grouped: nn.Conv2d's own forward
])
def test_batch_im2col_convolution_gives_the_convolution_and_its_gradients(conv, size):
    torch.manual_seed(0)
    fast = use_batch_im2col_convs(copy.deepcopy(conv))
    assert type(fast) is BatchIm2colConv2d
    assert fast.state_dict().keys() == conv.state_dict().keys()
    _same_outputs_and_gradients(conv, fast, torch.randn(5, conv.in_channels, size, size),
                                rtol=1e-4, atol=1e-4)
