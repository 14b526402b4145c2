"""The engine on the demo data (tiny settings, CPU): ``build_data`` + ``build_evaluator`` + ``fit``
with a tiny conv method, and ``train(recipe, run_dir)`` end to end with a real method.

"""
from __future__ import annotations

import importlib

import pytest
import torch


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    importlib.import_module("dml_core.data").prepare("demo", root)
    return root


DATA_KEYS = dict(dataset="demo", crop=False, num_workers=0, seed=0, transform="random_resized_crop",
                 backbone="resnet18", crop_size=32, resize_size=36, eval_batch_size=256,
                 sampler="shuffle", batch_size=32, samples_per_class=4, drop_last=True)


def test_build_data_carves_a_class_disjoint_validation_split(demo_root):
    from dml_core.training.trainer import build_data

    data = build_data({**DATA_KEYS, "validation_fraction": 0.4}, demo_root)
    train_set, val_set = data.train_loader.dataset, data.val_loader.dataset
    assert data.num_classes == 30 and len(data.info["val_classes"]) == 20  # demo: 50 train classes
    assert set(train_set.labels.tolist()) == set(range(30))  # relabelled densely for the proxies
    assert not set(train_set.paths) & set(val_set.paths)
    assert len(train_set) + len(val_set) == data.info["train_images"] + data.info["val_images"]
    assert data.val_protocol == "demo" and data.gallery_loader is None
    again = build_data({**DATA_KEYS, "validation_fraction": 0.4}, demo_root)
    assert again.info["val_classes"] == data.info["val_classes"]  # seeded


def test_train_demo_recipe_end_to_end(demo_root, tmp_path):
    from dml_core.methods import recipes
    from dml_core.core.io import read_json
    from dml_core.training import load_checkpoint, train

    recipe = recipes.get_recipe("normsoftmax", "demo", "resnet18_s2")
    # 16-px images keep it fast; 20 of the 50 demo training classes are held out for validation
    recipe.update(epochs=1, max_steps_per_epoch=2, pretrained=False, num_workers=0, crop_size=16,
                  resize_size=18, validation_fraction=0.4, batch_size=12, samples_per_class=4)
    summary = train(recipe, tmp_path / "run", data_root=demo_root, device="cpu", progress=False)
    assert summary["status"] == "complete" and summary["epochs_completed"] == 1
    assert summary["protocol"] == "demo" and summary["selection"] == "validation"
    assert summary["num_classes"] == 30 and len(summary["data"]["val_classes"]) == 20
    assert {"val/dense/R@1", "test/dense/R@1"} <= set(summary["best"]["metrics"])
    assert summary["best"]["epoch"] == 1 and summary["last"]["epoch"] == 1
    assert 0.0 <= summary["last"]["metrics"]["test/dense/R@1"] <= 1.0
    # the trunk (ResNet-18's first two stages), then the 64-d head and 30 proxies: ~12 k more
    from dml_core.models.backbones import build_backbone

    trunk = sum(p.numel() for p in build_backbone("resnet18_s2", pretrained=False).parameters())
    assert trunk + 30 * 64 < summary["num_parameters"] < trunk + 20_000
    assert read_json(tmp_path / "run" / "summary.json") == summary
    feats = load_checkpoint(tmp_path / "run" / "features" / "last.pt")
    assert feats["features"].shape[1] == recipe["embedding_dim"]
    assert torch.allclose(feats["features"].norm(dim=1), torch.ones(len(feats["paths"])), atol=1e-3)
    # finished: a second call returns the summary without training
    assert train(recipe, tmp_path / "run", data_root=demo_root, device="cpu",
                 progress=False) == summary
