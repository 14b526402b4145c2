"""Backbone registry, trunks, stride-1 layer3, weight files and the missing-weights error; the
ViT trunks (timm): token outputs, input sizes, the authors' hub formats, the same weight errors."""
import sys

import pytest
import torch
from torch import nn

from dml_core.models import (BACKBONES, MissingWeightsError, build_backbone, feature_dim,
                             input_convention, list_backbones)
from dml_core.models.backbones import CorruptWeightsError, ResNetTrunk, ViTTrunk

WIDTHS = {"resnet50": 2048, "bninception": 1024, "googlenet": 1024, "resnext50_32x4d": 2048,
          "resnet18": 512, "resnet18_s2": 128}
#: name -> (width, patch size, hub file)
VITS = {"vit_s16_dino": (384, 16, "dino_deitsmall16_pretrain.pth"),
        "vit_s14_dinov2": (384, 14, "dinov2_vits14_pretrain.pth")}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_registry_names_widths_and_files():
    assert list_backbones() == sorted(WIDTHS | VITS)
    for name, c in (WIDTHS | {n: v[0] for n, v in VITS.items()}).items():
        assert feature_dim(name) == c
        spec = BACKBONES[name]
        assert len(spec.weight_files) == len(spec.urls) >= 1
        assert all(u.endswith(f) for f, u in zip(spec.weight_files, spec.urls))
    assert set(BACKBONES["resnet50"].weight_files) == {"resnet50-19c8e357.pth", "resnet50-0676ba61.pth"}
    assert set(BACKBONES["resnet18"].weight_files) == {"resnet18-f37072fd.pth", "resnet18-5c106cde.pth"}
    assert BACKBONES["bninception"].weight_files == ("bn_inception-52deb4733.pth",)
    assert BACKBONES["googlenet"].pooled_dropout == 0.2
    for name, (_, _, fname) in VITS.items():
        assert BACKBONES[name].weight_files == (fname,) and BACKBONES[name].is_vit
    assert not any(BACKBONES[n].is_vit for n in WIDTHS)
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        feature_dim("vgg")


def test_input_conventions():
    bn = input_convention("bninception")
    assert bn.bgr and bn.scale_255 and bn.mean == (104.0, 117.0, 128.0) and bn.std == (1.0, 1.0, 1.0)
    for name in ("resnet50", "resnext50_32x4d", "googlenet", "resnet18", "resnet18_s2", *VITS):
        c = input_convention(name)
        assert not c.bgr and not c.scale_255 and c.mean == (0.485, 0.456, 0.406)
        assert c.std == (0.229, 0.224, 0.225)
        assert c.patch_size == (VITS[name][1] if name in VITS else None)
    assert input_convention("vit_s14_dinov2").native_size == 518  # its 37x37 position embeddings


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_trunk_returns_feature_map(name):
    with torch.device("meta"):  # shapes only: no arithmetic
        m = build_backbone(name, pretrained=False).eval()
        side = 28 if name == "resnet18_s2" else 7  # up to layer2: stride 8
        assert m(torch.empty(1, 3, 224, 224)).shape == (1, WIDTHS[name], side, side)
    assert not any(isinstance(mod, nn.Linear) for mod in m.modules())  # no classifier left


def test_bninception_real_forward():
    torch.manual_seed(0)
    m = build_backbone("bninception", pretrained=False).eval()
    with torch.no_grad():
        y = m(torch.randn(1, 3, 64, 64) * 50)
    assert y.shape == (1, 1024, 2, 2) and torch.isfinite(y).all() and (y >= 0).all()


def _stage_sizes(model, size=224):
    sizes = {}
    for stage in ("layer2", "layer3", "layer4"):
        getattr(model, stage).register_forward_hook(
            lambda mod, i, o, stage=stage: sizes.__setitem__(stage, tuple(o.shape[-2:])))
    with torch.no_grad():
        out = model(torch.empty(1, 3, size, size, device="meta"))
    return sizes, out.shape


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d"])
def test_layer3_stride1_map_sizes(name):
    with torch.device("meta"):
        plain = build_backbone(name, False)
        cgd = build_backbone(name, False, layer3_stride1=True)
    sizes, shape = _stage_sizes(plain)
    assert sizes == {"layer2": (28, 28), "layer3": (14, 14), "layer4": (7, 7)}
    sizes, shape = _stage_sizes(cgd)
    assert sizes == {"layer2": (28, 28), "layer3": (28, 28), "layer4": (14, 14)}
    assert shape == (1, 2048, 14, 14)
    assert cgd.layer3[0].conv2.dilation == (1, 1)  # no dilation added


def test_backbone_options_and_errors():
    with pytest.raises(ValueError, match="layer3_stride1"):
        build_backbone("resnet18", False, layer3_stride1=True)
    with pytest.raises(ValueError, match="remove_maxpool"):
        build_backbone("googlenet", False, remove_maxpool=True)
    with pytest.raises(TypeError, match="pretrained"):
        build_backbone("resnet18", "imagenet")
    m = build_backbone("resnet18", False, remove_maxpool=True, bn_momentum=0.9)
    assert isinstance(m.maxpool, nn.Identity)
    assert all(b.momentum == 0.9 for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 512, 4, 4)


def test_missing_weights_error_names_file_url_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    with pytest.raises(MissingWeightsError) as err:
        build_backbone("resnet50", pretrained=True)
    msg = str(err.value)
    for text in ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth", str(folder),
                 "https://download.pytorch.org/models/resnet50-19c8e357.pth"):
        assert text in msg
    with pytest.raises(MissingWeightsError, match="bn_inception-52deb4733.pth") as err:
        build_backbone("bninception", pretrained=True)
    assert "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth" in str(err.value)


def test_pretrained_loads_from_local_cache_old_file_name(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)  # full torchvision keys, fc included
    torch.save(ref.state_dict(), folder / "resnet18-5c106cde.pth")
    m = build_backbone("resnet18", pretrained=True)
    assert isinstance(m, ResNetTrunk)
    assert torch.equal(m.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert torch.equal(m.bn1.running_var, ref.bn1.running_var)
    # the demo's trunk: the same file, its first two stages (layer3/4.* and fc.* not loaded)
    s2 = build_backbone("resnet18_s2", pretrained=True)
    assert not hasattr(s2, "layer3") and not hasattr(s2, "layer4")
    assert not any(k.startswith(("layer3.", "layer4.")) for k in s2.state_dict())
    assert torch.equal(s2.layer2[1].conv2.weight, ref.layer2[1].conv2.weight)
    ref.eval(), s2.eval()
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        want = ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))
        got = s2(x)
    assert got.shape == (2, 128, 3, 3) and torch.allclose(got, want, atol=1e-6)


def test_bninception_checkpoint_with_singleton_dims(tmp_path, monkeypatch):
    """The Cadene file stores some 1-d tensors as (1, C) and keeps last_linear: both handled."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    ref = build_backbone("bninception", False)
    with torch.no_grad():
        ref.conv1_7x7_s2_bn.weight.uniform_()
    state = {k: (v.unsqueeze(0) if v.dim() == 1 else v) for k, v in ref.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    state["last_linear.weight"] = torch.zeros(1000, 1024)
    state["last_linear.bias"] = torch.zeros(1, 1000)
    torch.save(state, folder / "bn_inception-52deb4733.pth")
    m = build_backbone("bninception", True)
    assert torch.equal(m.conv1_7x7_s2_bn.weight, ref.conv1_7x7_s2_bn.weight)
    assert not hasattr(m, "last_linear")


def test_building_backbones_never_touches_the_network(monkeypatch, tmp_path):
    """pretrainedmodels is imported afresh with sockets disabled; building must not connect."""
    import socket
    import urllib.request

    def boom(*args, **kwargs):
        raise RuntimeError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", boom)
    monkeypatch.setattr(socket, "create_connection", boom)
    monkeypatch.setattr(urllib.request, "urlopen", boom)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for mod in [m for m in sys.modules if m == "pretrainedmodels" or m.startswith("pretrainedmodels.")]:
        monkeypatch.delitem(sys.modules, mod)
    with torch.device("meta"):
        assert build_backbone("bninception", False)(torch.empty(1, 3, 224, 224)).shape == (1, 1024, 7, 7)
        build_backbone("googlenet", False)
    assert "pretrainedmodels" in sys.modules  # it really was re-imported under the patch
    with pytest.raises(MissingWeightsError):
        build_backbone("googlenet", True)


# ------------------------------------------------------------------------------------ ViTs
@pytest.mark.parametrize("name", sorted(VITS))
def test_vit_trunk_returns_class_token_or_patch_grid(name):
    width, patch, _ = VITS[name]
    torch.manual_seed(0)
    cls = build_backbone(name, False).eval()
    patches = build_backbone(name, False, tokens="patch").eval()
    patches.load_state_dict(cls.state_dict())
    x = torch.randn(2, 3, 2 * patch, 3 * patch)
    with torch.no_grad():
        c, g = cls(x), patches(x)
        tokens = cls.vit.forward_features(x)
    assert isinstance(cls, ViTTrunk) and c.shape == (2, width, 1, 1) and g.shape == (2, width, 2, 3)
    assert torch.equal(c[:, :, 0, 0], tokens[:, 0])  # the class token after the final norm
    assert torch.equal(g[1, :, 1, 2], tokens[1, 1 + 1 * 3 + 2])  # row-major patch grid
    with torch.device("meta"):  # the ViT track's size: 14x14 / 16x16 patches
        assert build_backbone(name, False, tokens="patch")(
            torch.empty(1, 3, 224, 224)).shape == (1, width, 224 // patch, 224 // patch)
    with pytest.raises(ValueError, match=f"multiple of {patch} px.*set crop_size"):
        cls(torch.randn(1, 3, 2 * patch + 1, 2 * patch))


def test_vit_options_and_errors():
    with pytest.raises(ValueError, match="tokens= is for the vision transformers"):
        build_backbone("resnet18", False, tokens="cls")
    with pytest.raises(ValueError, match="tokens must be one of"):
        build_backbone("vit_s16_dino", False, tokens="mean")
    with pytest.raises(ValueError, match="layer3_stride1"):
        build_backbone("vit_s16_dino", False, layer3_stride1=True)


@pytest.mark.parametrize("name", sorted(VITS))
def test_vit_weights_missing_and_corrupt_errors_are_the_others(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    fname = VITS[name][2]
    with pytest.raises(MissingWeightsError) as err:
        build_backbone(name, pretrained=True)
    for text in (fname, str(folder), BACKBONES[name].urls[0], "pretrained=False"):
        assert text in str(err.value)
    assert BACKBONES[name].urls[0].startswith("https://dl.fbaipublicfiles.com/")
    folder.mkdir(parents=True)
    (folder / fname).write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptWeightsError, match=r"its SHA-256 is [0-9a-f]{64}\. Download it again"):
        build_backbone(name, pretrained=True)  # no checksum published: the full digest is printed


def test_dinov2_hub_layout_is_converted_to_timm(tmp_path, monkeypatch):
    """DINOv2's file: mask_token (dropped) and 37x37 position embeddings (resampled to 16x16);
    every other tensor is copied as is."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    ref = build_backbone("vit_s14_dinov2", False)
    state = {k[len("vit."):]: v.clone() for k, v in ref.state_dict().items()}
    grid = torch.linspace(0, 1, 37).view(1, 1, 37, 1).expand(1, 384, 37, 37)  # a ramp down the rows
    state["pos_embed"] = torch.cat([torch.randn(1, 1, 384), grid.flatten(2).transpose(1, 2)], 1)
    state["mask_token"] = torch.zeros(1, 384)
    torch.save(state, folder / "dinov2_vits14_pretrain.pth")
    m = build_backbone("vit_s14_dinov2", True)
    own = m.state_dict()
    assert own["vit.pos_embed"].shape == (1, 1 + 16 * 16, 384)
    assert torch.equal(own["vit.pos_embed"][:, 0], state["pos_embed"][:, 0])  # the class slot
    assert torch.equal(own["vit.blocks.11.ls2.gamma"], state["blocks.11.ls2.gamma"])
    assert not any("mask_token" in k for k in own)
    # resampled as an image, rows stay rows: constant along each row, rising down the columns
    new = own["vit.pos_embed"][0, 1:, 0].view(16, 16)
    assert torch.allclose(new, new[:, :1].expand(16, 16), atol=1e-5)
    assert (new[1:, 0] > new[:-1, 0]).all() and new[0, 0] < 0.05 and new[-1, 0] > 0.95
