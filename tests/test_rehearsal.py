"""The rehearsal's subset: one run per backbone and per data set of the ``full`` profile, through
the batch runner, on stand-ins in the real raw layouts with random weights in the published
checkpoint formats (``make rehearsal`` runs every run of the profile at the real image sizes)."""
from __future__ import annotations

import json

import pytest
import torch

from tools import rehearsal
from dml_core.models.backbones import BACKBONES, build_backbone


def test_published_formats_load_into_every_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    written = rehearsal.write_weights(tmp_path, ["bninception", "googlenet"])
    assert [p.name for p in written] == ["bn_inception-52deb4733.pth", "googlenet-1378be20.pth"]
    bn = torch.load(written[0], weights_only=True)
    assert bn["conv1_7x7_s2_bn.running_var"].shape == (1, 64)  # the Caffe port's (1, C)
    assert not any(k.endswith("num_batches_tracked") for k in bn)
    assert any(k.startswith("aux1.") for k in torch.load(written[1], weights_only=True))
    for name in ("bninception", "googlenet"):
        model = build_backbone(name, True)
        assert torch.equal(model.state_dict()["conv1_7x7_s2_bn.running_var" if name == "bninception"
                                              else "conv1.conv.weight"],
                           bn["conv1_7x7_s2_bn.running_var"][0] if name == "bninception"
                           else torch.load(written[1], weights_only=True)["conv1.conv.weight"])
    assert set(BACKBONES) == {"resnet50", "resnext50_32x4d", "googlenet", "resnet18", "resnet18_s2",
                              "bninception",
                              "vit_s16_dino", "vit_s14_dinov2"}


def test_vit_hub_formats_load_into_the_vit_trunks(tmp_path, monkeypatch):
    """DINO's file is timm's ViT-S/16 layout without a head; DINOv2's adds mask_token and keeps
    its 518-px (37 x 37) position embeddings: both load through the same path as the others."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    written = rehearsal.write_weights(tmp_path, ["vit_s16_dino", "vit_s14_dinov2"])
    assert [p.name for p in written] == ["dino_deitsmall16_pretrain.pth", "dinov2_vits14_pretrain.pth"]
    dino, dinov2 = (torch.load(p, weights_only=True) for p in written)
    assert dino["pos_embed"].shape == (1, 197, 384) and "mask_token" not in dino
    assert dinov2["pos_embed"].shape == (1, 1370, 384) and dinov2["mask_token"].shape == (1, 384)
    assert not any(k.startswith(("vit.", "head")) for k in list(dino) + list(dinov2))
    for name, state in (("vit_s16_dino", dino), ("vit_s14_dinov2", dinov2)):
        own = build_backbone(name, True).state_dict()
        assert torch.equal(own["vit.blocks.5.mlp.fc2.weight"], state["blocks.5.mlp.fc2.weight"])
        assert torch.equal(own["vit.cls_token"], state["cls_token"])


def test_vit_rehearsal_covers_every_trunk_method_and_data_set():
    from dml_core.methods import fair

    runs = rehearsal.vit_runs()
    training = [r for r in runs if r.startswith("fair_")]
    assert runs[0] == "00_prepare_data" and runs[-2:] == ["06_benchmarks", "08_figures"]
    assert len(training) == len(set(training)) == 40 and all(r.endswith("_s0") for r in training)
    per_trunk = {bb: set() for _, bb, *_ in fair.VIT_TRUNKS}
    settings_methods = set()
    for r in training:
        name = max((n for n in fair.VIT_SETTINGS if r.startswith(f"fair_{n}_")), key=len)
        rest = r[len(f"fair_{name}_"):]
        variant = next(v for v in fair.VARIANTS if rest.startswith(f"{v}_"))
        ds = rest[len(variant) + 1:].split("_")[0]
        per_trunk[fair.SETTINGS[name].backbone].add((variant, ds))
        settings_methods.add((name, variant))
    every = {(v, d) for v, x in fair.VARIANTS.items() if x.headline
             for d in fair.SETTINGS["vit_dino"].datasets
             if fair.available(x.method, d, "vit_s16_dino")}
    assert all(pairs == every for pairs in per_trunk.values())
    assert {n for n, _ in settings_methods} == set(fair.VIT_SETTINGS)
    assert len(settings_methods) == len(fair.VIT_SETTINGS) * len({v for v, _ in every})


def test_standins_have_the_real_layouts_and_sizes(tmp_path):
    from PIL import Image

    counts = rehearsal.write_standins(tmp_path, classes=2, per_class=2)
    assert counts == {"car": 8, "cub": 8, "sop": 8, "isc": 12, "stl10": 660}
    assert (tmp_path / "sop/Ebay_train.txt").read_text().startswith("image_id class_id super_class_id path\n")
    lines = (tmp_path / "isc/Eval/list_eval_partition.txt").read_text().splitlines()
    assert lines[0] == "12" and lines[1] == "image_name item_id evaluation_status"
    with Image.open(tmp_path / "cub/images/001.Bird_1/Bird_1_0001.jpg") as im:
        assert im.size == rehearsal.IMAGE_SIZES["cub"] and im.format == "JPEG"


@pytest.mark.filterwarnings("ignore:.*the standard split has")
def test_standin_test_splits_sized_apart_through_the_real_preparation(tmp_path):
    """The rehearsal's small test splits (:data:`rehearsal.STANDINS`) as the loading code reads
    them; each split keeps >= 2 classes of >= 2 images, and every run gets its training steps."""
    from collections import Counter

    from dml_core.data.index import read_index
    from dml_core.data.preparation import prepare

    counts = rehearsal.write_standins(tmp_path, classes=3, per_class=4, test=(2, 2),
                                      datasets=("car", "cub", "sop", "isc"))
    assert counts == {"car": 16, "cub": 16, "sop": 16, "isc": 20}
    for ds in counts:
        splits = Counter(r.split for r in read_index(prepare(ds, tmp_path, verbose=False)))
        assert splits == ({"train": 12, "query": 4, "gallery": 4} if ds == "isc"
                          else {"train": 12, "test": 4}), (ds, splits)
    with pytest.raises(ValueError, match=">= 2 classes of >= 2 images"):
        rehearsal.write_standins(tmp_path / "x", test=(4, 1), datasets=("cub",))
    s, st = rehearsal.STANDINS, rehearsal.SETTINGS
    assert s["classes"] * s["per_class"] >= st["max_steps_per_epoch"] * st["batch_size"]
    assert s["classes"] >= st["batch_size"] // st["samples_per_class"]
    assert s["test"][0] * s["test"][1] >= 8  # the notebooks retrieve the top 8


#: The subset without the toy and 08_figures (20–40 s and ~1 min on 2 cores; make rehearsal
#: runs them): STL-10 is still prepared by 00_prepare_data.
TEST_SUBSET = [r for r in rehearsal.SUBSET if r not in ("07_toy_proxies", "08_figures")]


@pytest.mark.slow
def test_rehearsal_subset_through_the_batch_runner(tmp_path, monkeypatch):
    """One training run per backbone and data set, the preparation of all five, the tables."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # rehearse() sets it; undone after
    # small crops keep the subset short; make rehearsal uses the recipes' sizes
    result, problems = rehearsal.rehearse(tmp_path, only=TEST_SUBSET, quiet=True,
                                          settings={"crop_size": 64, "resize_size": 72})
    assert problems == [] and result.ok, problems
    assert len(result.results) == len(TEST_SUBSET)
    run = tmp_path / "runs/full/05_dynamic_margin_cub_bninception"
    summary = json.loads((run / "summary.json").read_text())
    recipe = summary["recipe"]
    assert recipe["shortened"] is True and recipe["reported"] is None
    assert recipe["base_reported"] == "dynamic_margin/cub/bninception"
    assert recipe["overrides"]["epochs"] == 1
    assert json.loads((run / "batch_settings.json").read_text())["shortened"] is True
    assert (tmp_path / "runs/full/06_benchmarks/notebook.html").is_file()
