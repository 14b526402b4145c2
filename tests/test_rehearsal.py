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
    assert set(BACKBONES) == {"resnet50", "resnext50_32x4d", "googlenet", "resnet18", "bninception"}


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
