"""Every method through the real engine on the embedded demo data (CPU), fine-tuning the demo's
pretrained stand-in trunk (dml_core.models.standin; built once per session into the session's
torch cache, conftest.py).

* A capped run per method (1 epoch of 3 steps + evaluation) checks that the method, the engine,
  the data, the stand-in weights and the evaluation fit together.
* The demo recipe of each method (its published recipe, docs/DEMO.md) must LEARN: test R@1 on
  the 50 unseen numbers at the last epoch at least ``MARGIN`` above the pretrained network's
  before fine-tuning (epoch 0: same recipe, seed and initialisation, evaluated by the engine
  before any step). Checked twice: on the committed study's 5 seeds (the mean gain; every
  recipe), and live at seed 0 (marked ``slow``; ``pytest -m 'not slow'`` skips it), where two
  recipes gain less than ``MARGIN`` (strict expected failures, with their numbers).
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
    weights = summary["provenance"]["weights"]  # the stand-in, recorded by its hash
    assert weights["source"] == "digits" and weights["file"].startswith("resnet18_digits-v")
    assert weights["file"].split("-")[-1].startswith(weights["sha256"][:8])


MARGIN = 0.05  # absolute test R@1 over the pretrained network before fine-tuning


def test_each_published_recipe_learns_on_average_over_the_committed_study_s_seeds():
    """The acceptance criterion on the committed study (``results/study/per_seed.csv``, written
    by ``make study``): for every published recipe, the mean over its 5 seeds of (last-epoch test
    R@1 − the same seed's pretrained baseline) is at least MARGIN. One seed moves a recipe's gain
    by several points (NormSoftmax: 2.5 to 16.5), so a recipe is judged on its seeds."""
    import pandas as pd

    from dml_core.core.paths import REPO_ROOT

    table = pd.read_csv(REPO_ROOT / "results" / "study" / "per_seed.csv")
    table = table[table["variant"].str.startswith("paper_")]
    wide = table.pivot_table(index=["variant", "seed"], columns="metric", values="value")
    gain = (wide["last/dense/R@1"] - wide["untrained/dense/R@1"]).groupby("variant")
    assert sorted(gain.size().index) == sorted(f"paper_{m}" for m in METHODS)
    assert (gain.size() >= 5).all()  # the study's 5 seeds
    means = gain.mean()
    assert (means >= MARGIN).all(), means.round(3).to_dict()


#: Published recipes whose seed-0 run gains less than MARGIN on the demo (they pass on their
#: seeds' mean, above), with the numbers (docs/DEMO.md). Strict: the day one reaches MARGIN at
#: seed 0, this test fails until the docs and this entry are updated.
BELOW_MARGIN_AT_SEED_0 = {
    "normsoftmax": "seed 0 gains 2.5 points of test R@1 (1.7 with AVX2 kernels); its 5 seeds "
                   "2.5 to 16.5, mean 6.5 (docs/DEMO.md)",
    "asymptotic_proxy": "seed 0 gains 3.5 points of test R@1 (3.1 with AVX2 kernels); its 5 "
                        "seeds 3.5 to 10.2, mean 7.1 (docs/DEMO.md)",
}


@pytest.mark.slow
@pytest.mark.parametrize("method", [
    pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=BELOW_MARGIN_AT_SEED_0[m]))
    if m in BELOW_MARGIN_AT_SEED_0 else m for m in METHODS])
def test_demo_recipe_learns_beyond_the_pretrained_baseline(method, demo_root, train_fn, tmp_path):
    recipe = demo_recipe(method, num_workers=0)
    assert recipe["pretrained"]
    summary = train_fn(recipe, tmp_path / method, data_root=demo_root, device="cpu",
                       resume=False, progress=False)
    assert summary["status"] == "complete"
    r = rows(tmp_path / method)
    assert len(r) == recipe["epochs"]
    before = summary["untrained"]["metrics"]["test/dense/R@1"]  # epoch 0: the baseline
    after = float(r[-1]["test/dense/R@1"])
    message = f"{method}: pretrained baseline R@1 {before:.3f}, fine-tuned {after:.3f}"
    assert after >= before + MARGIN, message
