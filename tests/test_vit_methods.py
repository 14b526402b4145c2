"""The ViT track: every method builds and trains a step on both ViT trunks (the fair protocol's
ViT recipes at a tiny input size), and one training run per method goes through ``train`` on a
tiny CUB stand-in. Random weights (``pretrained=False``): the weight files are tested in
tests/test_models_backbones.py and tests/test_rehearsal.py."""
from __future__ import annotations

import warnings

import pytest
import torch

from dml_core.methods import build_method, fair
from dml_core.models.backbones import ViTTrunk
from dml_core.models.pooling import ClassToken

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADLINE = [v for v, x in fair.VARIANTS.items() if x.headline]
#: one 384-d and one 128-d setting, one per trunk: (setting, patch size)
SETTINGS = {"vit_dino": 16, "vit_dinov2_d128": 14}
CLASSES = 4


def tiny(variant: str, setting: str, **extra) -> dict:
    """The fair ViT recipe of ``variant`` on CUB at 2x2 patches, random weights."""
    p = SETTINGS[setting]
    r = fair.fair_recipe(variant, setting, "cub", seed=0)
    r.update(pretrained=False, crop_size=2 * p, resize_size=2 * p + 4, **extra)
    return r


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("variant", HEADLINE)
def test_every_method_trains_a_step_on_both_vits(variant, setting):
    s = fair.setting(setting)
    r = tiny(variant, setting)
    assert r["backbone"] == s.backbone and r["embedding_dim"] == s.embedding_dim
    assert r["lr"] == s.lr and r.get("weight_decay") == s.weight_decay == 0.01
    torch.manual_seed(0)
    m = build_method(r, CLASSES)
    trunk = m.model.backbone
    assert isinstance(trunk, ViTTrunk) and trunk.backbone_name == s.backbone
    if r["method"] == "cgd":  # SPoC/MAC/GeM over the patch tokens
        assert trunk.tokens == "patch"
    else:  # the class token, in place of the CNN head's pooling
        assert trunk.tokens == "cls" and isinstance(m.model.pool, ClassToken)
    # the shared build: one AdamW for every method (PP's too), decay on trunk and head only
    assert {type(o).__name__ for o in m.optimizers_for_epoch(1)} == {"AdamW"}
    assert all(g["weight_decay"] == 0.01 for g in m.optimizer.param_groups[:2])

    x = torch.randn(8, 3, r["crop_size"], r["crop_size"])
    y = torch.arange(8) // 2
    m.model.train()
    m.criterion.train()
    m.on_epoch_start(1)
    before = trunk.vit.blocks[0].attn.qkv.weight.detach().clone()
    m.zero_grad()
    out = m.training_step(x, y)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    m.clip_gradients()
    m.optimizer_step(1)
    m.after_optimizer_step(out, y)
    assert not torch.equal(before, trunk.vit.blocks[0].attn.qkv.weight)  # the trunk trains
    m.model.eval()
    with torch.no_grad():
        e = m.model(x)
    assert e.shape == (8, s.embedding_dim)
    assert torch.allclose(e.norm(dim=1), torch.ones(8), atol=1e-4)


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    """A tiny CUB in its real layout: 5 training classes of 4 images (1 held out for
    validation), 3 test classes of 4."""
    from dml_core.data.preparation import prepare
    from data_factories import make_cub_raw

    root = tmp_path_factory.mktemp("vitdata")
    make_cub_raw(root / "cub", classes=(1, 2, 3, 4, 5, 101, 102, 103), per_class=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the standard split has 5864"
        prepare("cub", root, verbose=False)
    return root


@pytest.mark.parametrize("variant", HEADLINE)
def test_one_training_run_per_method_on_a_vit(variant, cub_root, tmp_path):
    """``train`` end to end, 1 step, the trunks alternating between the methods."""
    from dml_core.training import train

    setting = sorted(SETTINGS)[HEADLINE.index(variant) % len(SETTINGS)]
    r = tiny(variant, setting, epochs=1, max_steps_per_epoch=1, batch_size=8,
             samples_per_class=2, eval_batch_size=16, num_workers=0)
    summary = train(r, tmp_path / "run", data_root=cub_root, device="cpu", progress=False)
    assert summary["status"] == "complete" and summary["epochs_completed"] == 1
    assert summary["selection"] == "validation" and summary["recipe"]["backbone"] == r["backbone"]
    assert summary["complexity"]["macs"] > 0
    assert 0.0 <= summary["last"]["metrics"]["test/dense/R@1"] <= 1.0
