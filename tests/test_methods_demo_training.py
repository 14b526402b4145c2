"""Every method through the real engine on the embedded demo data (resnet18 from scratch, CPU).

Default: a capped run per method (1 epoch of 3 steps + evaluation) checks the method, the engine,
the data and the evaluation fit together. With ``DML_SLOW_TESTS=1``: the full demo profile
(~1 min per method on 2 cores) must learn its training classes.

Known limit (reported to the lead): on the digits demo, an UNTRAINED random resnet18 already
reaches test R@1 ≈ 0.73 on the unseen digits 5–9, and a few epochs from scratch on digits 0–4 fit
the training classes without beating that; the slow test therefore asserts learning on the
training classes and a test R@1 clearly above chance (0.2), not above the untrained network.
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


@pytest.mark.skipif(not os.environ.get("DML_SLOW_TESTS"), reason="full demo profile, ~1 min/method")
@pytest.mark.parametrize("method", METHODS)
def test_full_demo_profile_learns(method, demo_root, train_fn, tmp_path):
    recipe = demo_recipe(method, num_workers=0)
    summary = train_fn(recipe, tmp_path / method, data_root=demo_root, device="cpu",
                       resume=False, progress=False)
    assert summary["status"] == "complete"
    r = rows(tmp_path / method)
    assert len(r) == recipe["epochs"]
    assert float(r[-1]["train_loss"]) < float(r[0]["train_loss"])
    assert float(r[-1]["train_accuracy"]) > 0.4  # 5 classes: chance 0.2
    assert max(float(x["test/dense/R@1"]) for x in r) > 0.3  # unseen digits: chance ~0.2
