"""Every network: images -> unit-norm (B, D) embeddings in train and eval mode; sub-module names."""
import pytest
import torch
from torch import nn

from dml_core.models import (GD_CONFIGS, CGDNet, GeM, NormSoftmaxNet, ProxyAnchorNet, ProxyHeadNet,
                             ToyNet, build_model, list_models)
from dml_core.models.pooling import GlobalAvgPool, GlobalMaxPool

X = torch.randn(2, 3, 32, 32)  # tiny: CPU is shared


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check_embedding(net, d, x=X):
    for train in (True, False):
        net.train(train)
        with torch.no_grad():
            e = net(x)
        assert e.shape == (x.shape[0], d)
        assert torch.isfinite(e).all()
        assert torch.allclose(e.norm(dim=1), torch.ones(x.shape[0]), atol=1e-5)
    assert isinstance(net.backbone, nn.Module) and isinstance(net.pool, nn.Module)
    assert isinstance(net.embedding, nn.Module)


def test_normsoftmax_net():
    net = NormSoftmaxNet("resnet18", 64, pretrained=False)
    _check_embedding(net, 64)
    assert net.embedding.bias is not None and net.embedding.in_features == 512
    assert not net.norm.elementwise_affine and net.norm.eps == 1e-5
    assert isinstance(net.pool, GlobalAvgPool)


def test_proxy_head_net_resnet18_and_layernorm_without_bias():
    net = ProxyHeadNet("resnet18", 32, pretrained=False)
    _check_embedding(net, 32)
    assert net.embedding.bias is None and isinstance(net.pool, GlobalMaxPool)
    assert isinstance(net.dropout, nn.Identity) and not list(net.norm.parameters())


def test_proxy_head_net_googlenet_keeps_transform_input_and_dropout():
    torch.manual_seed(0)
    net = ProxyHeadNet("googlenet", 16, pretrained=False)
    assert net.backbone.transform_input is True
    assert isinstance(net.dropout, nn.Dropout) and net.dropout.p == 0.2
    _check_embedding(net, 16)
    net.train()
    with torch.no_grad():
        assert not torch.allclose(net(X), net(X))  # dropout active in train mode
        net.eval()
        assert torch.equal(net(X), net(X))


def test_proxy_anchor_net_init_and_l2():
    net = ProxyAnchorNet("resnet18", 32, pretrained=False)
    _check_embedding(net, 32, torch.randn(2, 3, 64, 64))  # 2x2 map: avg != max
    assert torch.count_nonzero(net.embedding.bias) == 0
    # kaiming_normal fan_out: std = sqrt(2 / fan_out) = sqrt(2 / 32)
    assert abs(net.embedding.weight.std().item() - (2 / 32) ** 0.5) < 0.02
    assert not any(isinstance(m, nn.LayerNorm) for m in net.modules())
    net.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        fmap = net.backbone(x)
        h = net.embedding(fmap.mean((2, 3)) + fmap.amax((2, 3)))
        assert torch.allclose(net(x), h / torch.sqrt((h ** 2).sum(1, keepdim=True) + 1e-12))


def test_proxy_anchor_bninception_seed_bn_momentum():
    with torch.device("meta"):
        seed = ProxyAnchorNet("bninception", 512, pretrained=False)
        plain = ProxyAnchorNet("bninception", 512, pretrained=False, bn_momentum=None)
    mom = {m.momentum for m in seed.backbone.modules() if isinstance(m, nn.BatchNorm2d)}
    assert mom == {0.9}
    assert {m.momentum for m in plain.backbone.modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}


@pytest.mark.parametrize("dim", [2, 3])
def test_toy_net(dim):
    net = ToyNet(dim, pretrained=False)
    assert isinstance(net.backbone.maxpool, nn.Identity)
    assert net.embedding.in_features == 512 and net.embedding.bias is not None
    _check_embedding(net, dim, torch.randn(2, 3, 16, 16))


def test_cgd_net_forward_and_aux():
    torch.manual_seed(0)
    net = CGDNet("resnet50", "SMG", 96, num_classes=7, pretrained=False)
    net.train()
    e, z = net.forward_with_aux(X)
    assert z.shape == (2, 7) and e.shape == (2, 96)
    blocks = e.detach().reshape(2, 3, 32).norm(dim=2)  # each block has norm 1/sqrt(n)
    assert torch.allclose(blocks, torch.full((2, 3), 3 ** -0.5), atol=1e-5)
    assert isinstance(net.aux[0], nn.BatchNorm1d) and net.aux[1].bias is not None
    assert all(fc.bias is None for fc in net.embedding)
    assert net.backbone.layer3[0].conv2.stride == (1, 1)
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    net.eval()
    with torch.no_grad():
        e_eval, z_eval = net.forward_with_aux(X)
        assert torch.allclose(e_eval, net(X), atol=1e-6)
        assert torch.allclose(e_eval.norm(dim=1), torch.ones(2), atol=1e-5)
        # the aux classifier sees the FIRST raw descriptor (S = average pool)
        g1 = net.backbone(X).mean((2, 3))
        assert torch.allclose(z_eval, net.aux(g1), atol=1e-5)


@pytest.mark.parametrize("backbone, stage, width, side, want", [
    ("resnet18", "layer3", 512, 64, 4),     # 2x2 with layer3's stride, 4x4 without
    ("resnet18_s2", "layer2", 128, 24, 6),  # the demo's two stages: 3x3 with, 6x6 without
])
def test_cgd_net_basicblock_resnet_last_stride_removed(backbone, stage, width, side, want):
    torch.manual_seed(0)
    net = CGDNet(backbone, "SG", 64, num_classes=5, pretrained=False)
    block = getattr(net.backbone, stage)[0]
    assert block.conv1.stride == (1, 1) and block.downsample[0].stride == (1, 1)
    assert net.aux[0].num_features == width and net.embedding[0].in_features == width
    net.eval()
    with torch.no_grad():
        assert net.backbone(torch.randn(1, 3, side, side)).shape == (1, width, want, want)
    e, z = net.forward_with_aux(X)
    assert e.shape == (2, 64) and z.shape == (2, 5)
    _check_embedding(net, 64)


@pytest.mark.parametrize("cfg", GD_CONFIGS)
def test_cgd_all_gd_configs(cfg):
    assert len(GD_CONFIGS) == 12
    with torch.device("meta"):
        net = CGDNet("resnext50_32x4d", cfg, 1536, num_classes=5, pretrained=False)
        e, z = net.forward_with_aux(torch.empty(2, 3, 64, 64))
    kinds = {"S": GlobalAvgPool, "M": GlobalMaxPool, "G": GeM}
    assert [type(p) for p in net.pool] == [kinds[c] for c in cfg]
    assert [fc.out_features for fc in net.embedding] == [1536 // len(cfg)] * len(cfg)
    assert e.shape == (2, 1536) and z.shape == (2, 5)


def test_cgd_errors_and_gem_clamp_option():
    with pytest.raises(ValueError, match="divisible by the number of descriptors n=3"):
        CGDNet("resnet50", "SMG", 1000, num_classes=3, pretrained=False)
    with pytest.raises(ValueError, match="unknown gd_config 'SS'"):
        CGDNet("resnet50", "SS", 1536, num_classes=3, pretrained=False)
    with pytest.raises(ValueError, match="CGDNet backbone must be one of"):
        CGDNet("googlenet", "SG", 1536, num_classes=3, pretrained=False)
    with torch.device("meta"):
        net = CGDNet("resnet50", "GS", 1536, num_classes=3, pretrained=False, gem_clamp=False)
    assert net.pool[0].clamp is False


def test_build_model_registry():
    assert {"normsoftmax", "cgd", "asymptotic_proxy", "positive_proxy", "proxy_anchor",
            "dynamic_margin", "toy"} <= set(list_models())
    net = build_model("asymptotic_proxy", backbone="resnet18", embedding_dim=8, pretrained=False)
    assert isinstance(net, ProxyHeadNet) and net.embedding_dim == 8
    assert net.input_convention.mean == (0.485, 0.456, 0.406)
    with pytest.raises(ValueError, match="unknown model 'arcface'"):
        build_model("arcface")
