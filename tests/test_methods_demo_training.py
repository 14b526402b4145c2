"""Every method through the real engine on the embedded demo data (resnet18 from scratch, CPU).

Default: a capped run per method (1 epoch of 3 steps + evaluation) checks the method, the engine,
the data and the evaluation fit together. With ``DML_SLOW_TESTS=1``: the demo profile of each
method must beat the UNTRAINED network (same recipe, seed and initialisation, evaluated before
any step) on the unseen digits 5-9 by ``MARGIN`` test R@1.

Status (reported to the lead): the demo data now randomises colours, background, size and stroke
thickness (dml_core/data/demo.py), which brings the untrained network down from R@1 ≈ 0.73 to
≈ 0.35; NormSoftmax with ``epochs=10, lr=0.03, lr_step=8`` reaches ≈ 0.38 and is still rising;
the demo recipes themselves (≤ 6 epochs) are not tuned for this yet. The learning test is therefore the acceptance target and stays behind
``DML_SLOW_TESTS`` until the recipes meet it within the CPU time budget.
"""
from __future__ import annotations

import csv
import math
import os

import pytest
import torch

from dml_core.recipes import demo_recipe

METHODS = ["normsoftmax", "cgd", "asymptotic_proxy", "positive_proxy", "dynamic_margin",
           "proxy_anchor"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    data = pytest.importorskip("dml_core.data")
    root = tmp_path_factory.mktemp("demo_data")
    data.prepare("demo", root)
    return root


@pytest.fixture(scope="module")
def train_fn():
    training = pytest.importorskip("dml_core.training")
    pytest.importorskip("dml_core.evaluation")
    if not hasattr(training, "train"):
        pytest.skip("dml_core.training.train not available yet")
    return training.train


@pytest.fixture()
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", METHODS)
def test_capped_demo_run_through_the_engine(method, demo_root, train_fn, tmp_path, one_thread):
    recipe = demo_recipe(method, epochs=1, max_steps_per_epoch=3, num_workers=0, crop_size=24,
                         resize_size=28)
    summary = train_fn(recipe, tmp_path / method, data_root=demo_root, device="cpu",
                       resume=False, progress=False)
    assert summary["status"] == "complete" and summary["epochs_completed"] == 1
    (row,) = rows(tmp_path / method)
    assert math.isfinite(float(row["train_loss"]))
    assert 0.0 <= float(row["test/dense/R@1"]) <= 1.0
    if method == "dynamic_margin":
        assert {"margin_mean", "margin_min", "margin_max"} <= set(row)
        assert float(row["margin_mean"]) != pytest.approx(0.1, abs=1e-9)  # the margins moved


MARGIN = 0.10  # absolute test R@1 over the untrained network


def untrained_r1(recipe, data_root) -> float:
    """Test dense R@1 of the method's freshly built model, exactly as ``train`` initialises it."""
    from dml_core.methods import build_method
    from dml_core.training.seeding import seed_everything
    from dml_core.training.trainer import build_data, build_evaluator

    seed_everything(int(recipe["seed"]))
    data = build_data(recipe, data_root)
    method = build_method(recipe, data.num_classes, device=torch.device("cpu"))
    result = build_evaluator(data.test_loader, data.protocol, "cpu", progress=False)(method.model, 0)
    metrics = getattr(result, "metrics", result)
    return float(metrics["test/dense/R@1"])


@pytest.mark.skipif(not os.environ.get("DML_SLOW_TESTS"), reason="demo profile, ~1-2 min/method")
@pytest.mark.parametrize("method", METHODS)
def test_demo_profile_beats_the_untrained_network(method, demo_root, train_fn, tmp_path,
                                                  one_thread):
    recipe = demo_recipe(method, num_workers=0)
    before = untrained_r1(recipe, demo_root)
    summary = train_fn(recipe, tmp_path / method, data_root=demo_root, device="cpu",
                       resume=False, progress=False)
    assert summary["status"] == "complete"
    r = rows(tmp_path / method)
    assert len(r) == recipe["epochs"]
    after = float(r[-1]["test/dense/R@1"])
    assert after >= before + MARGIN, f"{method}: untrained R@1 {before:.3f}, trained {after:.3f}"
