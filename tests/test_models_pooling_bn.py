"""Pooling (avg, max, avgmax, GeM clamp vs the original code's NaN gradient) and the BatchNorm helpers."""
import pytest
import torch
from torch import nn

from dml_core.models import GeM, build_pooling, freeze_batchnorm_affine, set_batchnorm_eval


def test_pool_values_and_shapes():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    avg, mx, am = (build_pooling(n)(x) for n in ("avg", "max", "avgmax"))
    assert avg.shape == mx.shape == am.shape == (2, 3)
    assert torch.allclose(avg, x.flatten(2).mean(-1))
    assert torch.equal(mx, x.flatten(2).max(-1).values)
    assert torch.allclose(am, avg + mx)
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        build_pooling("sum")


def test_gem_p3_formula_and_clamp_agree_on_positive_input():
    x = torch.rand(2, 4, 3, 3) + 0.1
    expected = x.pow(3).mean(dim=(2, 3)).pow(1 / 3)
    assert torch.allclose(build_pooling("gem")(x), expected, atol=1e-6)
    assert torch.allclose(GeM(clamp=False)(x), expected, atol=1e-6)
    assert GeM().p == 3.0 and GeM().eps == 1e-6 and not any(True for _ in GeM().parameters())


def test_gem_unclamped_gives_nan_gradient_on_all_zero_channel():
    x = torch.rand(1, 3, 4, 4)
    x[0, 1] = 0.0  # one channel all zero, as can happen after ReLU
    seed = x.clone().requires_grad_()
    GeM(clamp=False)(seed).sum().backward()
    assert torch.isnan(seed.grad[0, 1]).all()
    assert torch.isfinite(seed.grad[0, [0, 2]]).all()  # only the zero channel is hit
    fixed = x.clone().requires_grad_()
    GeM(clamp=True)(fixed).sum().backward()
    assert torch.isfinite(fixed.grad).all()


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5),
                         nn.BatchNorm1d(5))


def test_set_batchnorm_eval_keeps_running_stats_fixed():
    torch.manual_seed(0)
    net = _net()
    net(torch.randn(4, 3, 6, 6))  # materialise the lazy layer; stats move once
    net.train()
    assert set_batchnorm_eval(net) == 1
    bn2d, bn1d = net[1], net[4]
    mean2d, var2d, mean1d = bn2d.running_mean.clone(), bn2d.running_var.clone(), bn1d.running_mean.clone()
    net(torch.randn(4, 3, 6, 6) * 3 + 1)
    assert not bn2d.training and bn1d.training  # BN1d (CGD's aux BN) stays in train mode
    assert torch.equal(bn2d.running_mean, mean2d) and torch.equal(bn2d.running_var, var2d)
    assert not torch.equal(bn1d.running_mean, mean1d)
    assert bn2d.weight.requires_grad  # affine parameters still train


def test_freeze_batchnorm_affine():
    net = _net()
    assert freeze_batchnorm_affine(net) == 2
    assert not net[1].weight.requires_grad and not net[1].bias.requires_grad
    assert net[4].weight.requires_grad and net[0].weight.requires_grad
    freeze_batchnorm_affine(net, frozen=False)
    assert net[1].weight.requires_grad


def test_class_token_pooling_reads_a_one_by_one_map_only():
    from dml_core.models.pooling import build_pooling

    tok = build_pooling("token")
    x = torch.randn(2, 5, 1, 1)
    assert torch.equal(tok(x), x[:, :, 0, 0])
    with pytest.raises(ValueError, match="tokens='cls'"):
        tok(torch.randn(2, 5, 2, 2))  # a patch grid is not a class token
