"""Every method through the real engine on the embedded demo data (resnet18 from scratch, CPU).

* A capped run per method (1 epoch of 3 steps + evaluation) checks that the method, the engine,
  the data and the evaluation fit together.
* The demo recipe of each method (8 epochs, ~370 steps, about 1-2 min on 2 cores) must LEARN:
  test R@1 on the 50 unseen numbers at least ``MARGIN`` above the UNTRAINED network's (same
  recipe, seed and initialisation, evaluated before any step) and at least twice it. This is the
  acceptance test of every method; marked ``slow`` (``pytest -m 'not slow'`` skips it).
"""
from __future__ import annotations

import csv
import math

import pytest
import torch

from dml_core.methods.recipes import demo_recipe

METHODS = ["normsoftmax", "cgd", "asymptotic_proxy", "positive_proxy", "dynamic_margin",
           "proxy_anchor"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from dml_core import data

    root = tmp_path_factory.mktemp("demo_data")
    data.prepare("demo", root)
    return root


@pytest.fixture(scope="module")
def train_fn():
    from dml_core.training import train

    return train


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


MARGIN = 0.08  # absolute test R@1 over the untrained network (≈ 0.10; chance ≈ 0.02)


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


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_demo_recipe_learns_beyond_the_untrained_network(method, demo_root, train_fn, tmp_path):
    recipe = demo_recipe(method, num_workers=0)
    before = untrained_r1(recipe, demo_root)
    summary = train_fn(recipe, tmp_path / method, data_root=demo_root, device="cpu",
                       resume=False, progress=False)
    assert summary["status"] == "complete"
    r = rows(tmp_path / method)
    assert len(r) == recipe["epochs"]
    after = float(r[-1]["test/dense/R@1"])
    message = f"{method}: untrained R@1 {before:.3f}, trained {after:.3f}"
    assert after >= before + MARGIN and after >= 2 * before, message
