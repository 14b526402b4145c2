"""Parameter and MAC counts against the authors' README tables (224×224, models on the meta device)."""
import pytest
import torch
from torch import nn

from dml_core.models import (CGDNet, NormSoftmaxNet, complexity_report, count_macs,
                             count_parameters)

CLASSES = {"car": 98, "sop": 11318, "isc": 3997}


def test_count_parameters_dedupes_and_accepts_tensors():
    lin = nn.Linear(4, 3)
    extra = nn.Parameter(torch.zeros(5, 2))
    assert count_parameters(lin) == 15
    assert count_parameters(lin, lin.weight, [extra]) == 25
    lin.bias.requires_grad_(False)
    assert count_parameters(lin, trainable_only=True) == 12


def test_count_macs_conventions_on_a_tiny_net():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    conv = 8 * 10 * 10 * 3 * 9
    assert count_macs(net, (1, 3, 10, 10)) == conv + 8 * 5
    thop = (conv + 8 * 100) + 2 * 8 * 100 + 8 * (100 + 1) + 5 * (2 * 8 - 1)
    assert count_macs(net, (1, 3, 10, 10), convention="thop") == thop
    assert net.training  # mode restored
    with pytest.raises(ValueError, match="convention"):
        count_macs(net, (1, 3, 10, 10), convention="fvcore")


def _m(n):
    return round(n / 1e6, 2)


def _g(n):
    return round(n / 1e9, 2)


def test_normsoftmax_resnet50_matches_readme():
    with torch.device("meta"):
        net = NormSoftmaxNet("resnet50", 2048, pretrained=False)
    # the C×D proxies of NormSoftmaxLoss count in the authors' tables
    params = {k: _m(count_parameters(net, nn.Parameter(torch.empty(c, 2048, device="meta"))))
              for k, c in CLASSES.items()}
    assert params == {"car": 27.91, "sop": 50.88, "isc": 35.89}
    rep = complexity_report(net, proxies=torch.empty(11318, 2048, device="meta"))
    assert _g(rep["macs_thop"]) == 4.12  # the README's "4.12G" (thop rules)
    assert _g(rep["macs"]) == 4.09 and rep["flops"] == 2 * rep["macs"]  # conv + matmul only
    assert rep["proxy_macs"] == 11318 * 2048  # missed by the authors' thop
    assert rep["macs_with_proxies"] == rep["macs"] + rep["proxy_macs"]


@pytest.mark.parametrize("backbone, params, gmacs", [
    ("resnet50", {"car": 26.86, "sop": 49.85, "isc": 34.85}, {"car": 10.64, "sop": 10.69, "isc": 10.66}),
    ("resnext50_32x4d", {"car": 26.33, "sop": 49.32, "isc": 34.32}, {"car": 10.84, "sop": 10.89, "isc": 10.86}),
])
def test_cgd_matches_readme(backbone, params, gmacs):
    got_p, got_g = {}, {}
    for k, c in CLASSES.items():
        with torch.device("meta"):
            net = CGDNet(backbone, "SG", 1536, num_classes=c, pretrained=False)
        got_p[k] = _m(count_parameters(net))
        got_g[k] = _g(count_macs(net, convention="thop", forward="forward_with_aux"))
    assert got_p == params
    assert got_g == gmacs
    rep = complexity_report(net)  # picks forward_with_aux
    assert rep["params"] == count_parameters(net)
    assert 10.6e9 < rep["macs"] < rep["macs_thop"]


def _vit_macs(patches: int, patch: int, width: int = 384, depth: int = 12, mlp: int = 4) -> int:
    """ViT-S forward MACs by hand: patch embedding (a patch x patch conv, stride patch) and per
    block qkv, the attention products QK^T and AV over N = patches + 1 tokens, proj, the MLP."""
    n = patches + 1
    block = n * width * 3 * width + 2 * n * n * width + n * width * width + 2 * n * width * mlp * width
    return patches * 3 * patch * patch * width + depth * block


@pytest.mark.parametrize("name, arch, patch", [("vit_s16_dino", "vit_small_patch16_224", 16),
                                               ("vit_s14_dinov2", "vit_small_patch14_dinov2", 14)])
def test_vit_trunk_counts_match_timm_and_torch(name, arch, patch):
    """Parameters: timm's own model (no head; DINOv2 at 224 px: 257 position embeddings, not the
    1370 of its 518-px file). MACs: the closed form above, and torch's FlopCounterMode on timm's
    model with the attention written out as matmuls (the fused CPU kernel is counted alike)."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    from dml_core.models import build_backbone

    with torch.device("meta"):
        trunk = build_backbone(name, False)
        ref = timm.create_model(arch, pretrained=False, num_classes=0, img_size=224)
    assert count_parameters(trunk) == sum(p.numel() for p in ref.parameters())
    assert count_parameters(trunk) == {"vit_s16_dino": 21_665_664, "vit_s14_dinov2": 21_628_800}[name]
    macs = count_macs(trunk)
    assert macs == _vit_macs((224 // patch) ** 2, patch)
    for m in ref.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ref.eval()(torch.empty(1, 3, 224, 224, device="meta"))
    assert macs == counter.get_total_flops() // 2
    assert _g(macs) == {"vit_s16_dino": 4.60, "vit_s14_dinov2": 6.12}[name]
