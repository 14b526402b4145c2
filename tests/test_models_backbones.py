"""Backbone registry, trunks, stride-1 layer3, weight files and the missing-weights error."""
import sys

import pytest
import torch
from torch import nn

from dml_core.models import (BACKBONES, MissingWeightsError, build_backbone, feature_dim,
                             input_convention, list_backbones)
from dml_core.models.backbones import ResNetTrunk

WIDTHS = {"resnet50": 2048, "bninception": 1024, "googlenet": 1024, "resnext50_32x4d": 2048,
          "resnet18": 512}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_registry_names_widths_and_files():
    assert list_backbones() == sorted(WIDTHS)
    for name, c in WIDTHS.items():
        assert feature_dim(name) == c
        spec = BACKBONES[name]
        assert len(spec.weight_files) == len(spec.urls) >= 1
        assert all(u.endswith(f) for f, u in zip(spec.weight_files, spec.urls))
    assert set(BACKBONES["resnet50"].weight_files) == {"resnet50-19c8e357.pth", "resnet50-0676ba61.pth"}
    assert set(BACKBONES["resnet18"].weight_files) == {"resnet18-f37072fd.pth", "resnet18-5c106cde.pth"}
    assert BACKBONES["bninception"].weight_files == ("bn_inception-52deb4733.pth",)
    assert BACKBONES["googlenet"].pooled_dropout == 0.2
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        feature_dim("vgg")


def test_input_conventions():
    bn = input_convention("bninception")
    assert bn.bgr and bn.scale_255 and bn.mean == (104.0, 117.0, 128.0) and bn.std == (1.0, 1.0, 1.0)
    for name in ("resnet50", "resnext50_32x4d", "googlenet", "resnet18"):
        c = input_convention(name)
        assert not c.bgr and not c.scale_255 and c.mean == (0.485, 0.456, 0.406)


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_trunk_returns_feature_map(name):
    with torch.device("meta"):  # shapes only: no arithmetic
        m = build_backbone(name, pretrained=False).eval()
        assert m(torch.empty(1, 3, 224, 224)).shape == (1, WIDTHS[name], 7, 7)
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
