"""The study end to end: the `smoke` profile runs every notebook through the real batch runner
(papermill, CPU) into a temporary runs root with a temporary data root; the tests read its
outputs. Plus static checks of the committed notebooks and profiles (no execution).

The batch runs once per module (fixture ``smoke``); it takes a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from dml_core.core import paths
from dml_core.batch import code_fingerprint, load_profile, run_profile
from dml_core.profiles.params import NOTEBOOK_PARAMETERS, validate_parameters

STUDY_NOTEBOOKS = ["00_prepare_data", "01_normsoftmax", "02_asymptotic_proxy",
                   "03_positive_proxy", "04_cgd", "05_dynamic_margin", "06_benchmarks",
                   "07_toy_proxies", "08_figures"]
TRAINING_RUNS = {"01_normsoftmax": "normsoftmax", "02_asymptotic_proxy": "asymptotic_proxy",
                 "03_positive_proxy": "positive_proxy", "04_cgd": "cgd",
                 "05_dynamic_margin": "dynamic_margin"}


def _nb(stem: str):
    return nbformat.read(str(paths.NOTEBOOKS_DIR / f"{stem}.ipynb"), as_version=4)


# ------------------------------------------------------------------------------ static checks
@pytest.mark.parametrize("stem", STUDY_NOTEBOOKS)
def test_notebook_committed_without_outputs(stem):
    nb = _nb(stem)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{stem} has no code cell"
    for c in code:
        assert c.get("outputs", []) == [], f"{stem}: a code cell has outputs"
        assert c.get("execution_count") is None, f"{stem}: a code cell has an execution count"


@pytest.mark.parametrize("stem", STUDY_NOTEBOOKS)
def test_notebook_parameters_cell_then_validation(stem):
    nb = _nb(stem)
    assert nb.cells[0].cell_type == "markdown", f"{stem} must open with its explanation"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), \
        f"{stem}: the first code cell must be tagged 'parameters'"
    assert "validate_parameters" in code[1].source and f'"{stem}"' in code[1].source, \
        f"{stem}: the second code cell must call validate_parameters(\"{stem}\", ...)"
    # the defaults of the parameters cell are valid and complete (the schema's names, no more)
    ns: dict = {}
    exec(code[0].source, ns)  # noqa: S102 - our own committed notebook
    defaults = {k: v for k, v in ns.items() if not k.startswith("__")}
    assert set(defaults) == set(NOTEBOOK_PARAMETERS[stem]), stem
    validate_parameters(stem, defaults, resolve=False)


@pytest.mark.parametrize("stem", sorted(TRAINING_RUNS))
def test_training_notebook_defaults_are_a_demo_recipe(stem):
    from dml_core.methods.recipes import get_recipe

    ns: dict = {}
    exec(next(c for c in _nb(stem).cells if c.cell_type == "code").source, ns)  # noqa: S102
    method = ns.get("method", TRAINING_RUNS.get(stem))
    recipe = get_recipe(method, ns["dataset"], ns["backbone"], crop=ns["crop"], **ns["overrides"])
    # the demo's published recipe, starting from the demo's stand-in trunk (docs/DEMO.md)
    assert recipe["dataset"] == "demo" and recipe["pretrained"] is True


@pytest.mark.parametrize("name", ["smoke", "demo", "full"])
def test_profiles_load_and_their_recipes_resolve(name):
    from dml_core.methods.recipes import get_recipe

    prof = load_profile(name)
    notebooks = {r.notebook.stem for r in prof.runs}
    assert set(STUDY_NOTEBOOKS) <= notebooks, f"{name} lacks {set(STUDY_NOTEBOOKS) - notebooks}"
    for run in prof.runs:
        stem = run.notebook.stem
        if stem[:2] in ("01", "02", "03", "04", "05"):
            p = run.parameters
            method = p.get("method", TRAINING_RUNS.get(stem))
            r = get_recipe(method, p["dataset"], p["backbone"], crop=p.get("crop", False),
                           **dict(p.get("overrides") or {}))
            assert r["method"] == method
    if name == "smoke":
        fig_run = next(r for r in prof.runs if r.notebook.stem == "08_figures")
        out = fig_run.parameters.get("output_dir")
        assert out and not Path(out).is_absolute(), "smoke figures must stay inside the run dir"
    if name == "full":
        from dml_core.methods.recipes import list_recipes

        assert len([r for r in prof.runs if r.notebook.stem[:2] in ("01", "02", "03", "04", "05")]) \
            >= len(list_recipes(include_demo=False))


# ------------------------------------------------------------------------------ the smoke batch
# fixture ``smoke`` (the batch, once per session): tests/conftest.py, shared with test_book.py


def _log_tail(r) -> str:
    try:
        return Path(r.log).read_text()[-3000:]
    except OSError:
        return "(no log)"


def test_smoke_batch_runs_every_notebook(smoke):
    result = smoke["result"]
    failed = [f"{r.id}: {r.error}\n{_log_tail(r)}" for r in result.failed]
    assert not failed, "\n\n".join(failed)
    assert {r.notebook[:-len(".ipynb")] for r in result.results} == set(STUDY_NOTEBOOKS)
    assert all(r.status == "done" for r in result.results)
    for r in result.results:
        executed = nbformat.read(str(Path(r.run_dir) / "notebook.ipynb"), as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
        assert (Path(r.run_dir) / "notebook.html").is_file()
    assert (smoke["profile_dir"] / "index.html").is_file()


@pytest.mark.parametrize("run_id", sorted(TRAINING_RUNS))
def test_smoke_training_run_folder(smoke, run_id):
    run_dir = smoke["profile_dir"] / run_id
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["recipe"]["method"] == TRAINING_RUNS[run_id]
    assert summary["recipe"]["dataset"] == "demo" and summary["recipe"]["max_steps_per_epoch"] == 2
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert len(metrics) == 1 and metrics["epoch"].tolist() == [1]
    recall_cols = [c for c in metrics.columns if "/R@" in c]
    assert {"test/dense/R@1", "test/binary/R@1", "test/dense/MAP@R"} <= set(metrics.columns)
    for col in recall_cols + ["test/dense/MAP@R", "test/binary/MAP@R"]:
        v = float(metrics[col].iloc[0])
        assert 0.0 <= v <= 1.0, (col, v)
    # Recall@K cannot decrease with K
    ks = sorted(int(c.split("@")[1]) for c in recall_cols if c.startswith("test/dense/R@"))
    dense = [float(metrics[f"test/dense/R@{k}"].iloc[0]) for k in ks]
    assert dense == sorted(dense)
    assert math.isfinite(float(metrics["train_loss"].iloc[0]))
    best = summary["best"]["metrics"]
    assert 0.0 <= best["test/dense/R@1"] <= 1.0
    assert summary["complexity"]["macs"] > 0 and summary["complexity"]["params"] > 0
    for f in ("training_curves.png", "retrievals.png", "metrics_table.csv"):
        assert (run_dir / "figures" / f).is_file(), f
    assert (run_dir / "features" / "best.pt").is_file()
    # a value drawn: the table the notebook shows (figures/metrics_table.csv) holds the run's
    # last R@1 in %, and the R@1 curve of its training-curves figure, drawn again from the run
    # folder, is metrics.csv's test R@1 in %
    table = pd.read_csv(run_dir / "figures" / "metrics_table.csv")
    last = table[(table["feature"] == "dense") & table["epoch"].str.startswith("last")]
    assert float(last["R@1"].iloc[0]) == pytest.approx(
        round(100 * summary["last"]["metrics"]["test/dense/R@1"], 2))
    import matplotlib.pyplot as plt

    from dml_core.report import plot_training_curves

    fig = plot_training_curves([run_dir])
    curve = next(line for ax in fig.axes if "R@1" in ax.get_ylabel() for line in ax.lines
                 if not line.get_label().startswith("_") and "(val)" not in line.get_label())
    # epoch 0 is the network before training (the baseline), then one point per epoch
    baseline = summary["untrained"]["metrics"]["test/dense/R@1"]
    assert list(curve.get_xdata()) == [0] + metrics["epoch"].tolist()
    assert list(curve.get_ydata()) == pytest.approx(
        [100 * baseline] + [100 * v for v in metrics["test/dense/R@1"]])
    plt.close(fig)


def test_smoke_method_options_reached_the_recipe(smoke):
    pp = json.loads((smoke["profile_dir"] / "03_positive_proxy" / "summary.json").read_text())
    assert pp["recipe"]["positive_proxy"] is True
    dm = pd.read_csv(smoke["profile_dir"] / "05_dynamic_margin" / "metrics.csv")
    extra = [c for c in dm.columns if "/" not in c and c not in (
        "epoch", "lr", "train_loss", "train_accuracy", "images_per_s", "epoch_time_s")]
    assert extra, "the dynamic margin run logs its margins"
    assert (smoke["profile_dir"] / "05_dynamic_margin" / "figures" / "method_log.png").is_file()


def test_smoke_prepared_demo_data(smoke):
    table = pd.read_csv(smoke["profile_dir"] / "00_prepare_data" / "datasets.csv")
    assert set(table["split"]) == {"train", "val", "test", "stand-in trunk (single digits)"}
    assert list(table["status"]) == ["prepared"] * 3 + ["ready"]  # the stand-in: built
    assert (smoke["root"] / "data" / "demo" / "index.csv").is_file()


def test_smoke_benchmark_table(smoke):
    run_dir = smoke["profile_dir"] / "06_benchmarks"
    table = pd.read_csv(run_dir / "benchmark.csv")
    demo = table[table["Data set key"] == "demo"]
    assert set(demo["Run"]) >= set(TRAINING_RUNS), "every smoke training run is tabulated"
    assert (demo["Status"] == "complete").all()
    best = pd.to_numeric(demo["R@1 best-test"], errors="coerce")
    assert best.notna().all() and ((best >= 0) & (best <= 100)).all()
    real = table[table["Data set key"] != "demo"]
    assert len(real) and (real["Status"] == "not run").all(), "unrun seed rows read 'not run'"
    assert (real["R@1 best-test"] == "not run").all()
    assert set(real["Data set key"]) == {"car", "cub", "sop", "isc"}
    md = (run_dir / "benchmark.md").read_text()
    assert "not run" in md and "| Method |" in md
    runs = pd.read_csv(run_dir / "runs.csv")
    assert set(TRAINING_RUNS.values()) <= set(runs["method"]), "every training run is tabulated"
    assert "toy" not in set(runs["method"]), "the toy runs are not tabulated"


def test_smoke_figures_inside_run_dir(smoke):
    out = smoke["profile_dir"] / "08_figures" / "figures"
    for name in ("training_curves_demo", "recall_demo", "dense_vs_binary",
                 "momentum_sensitivity"):
        for ext in ("png", "pdf"):
            f = out / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    # one picture per configuration: each single-seed training run, and the lowest seed of the
    # seeded fair-protocol pair (fair_proxy_anchor_s0, _s1)
    expected = {f"smoke_{rid}" for rid in TRAINING_RUNS} | {"smoke_fair_proxy_anchor_s0"}
    umaps = {p.stem.removeprefix("umap_") for p in (out / "embeddings").glob("*.png")}
    grids = {p.stem.removeprefix("retrievals_") for p in (out / "retrievals").glob("*.png")}
    assert not list((out / "retrievals").glob("*.pdf"))  # photographs: PNG only
    assert umaps == expected
    assert grids == expected
    # the committed figures/ were not touched
    if paths.FIGURES_DIR.is_dir():
        for p in paths.FIGURES_DIR.rglob("*"):
            assert smoke["figures_before"].get(p) == p.stat().st_mtime, f"{p} was written"


def test_second_smoke_batch_skips_everything(smoke):
    if code_fingerprint(Path(paths.REPO_ROOT) / "dml_core", paths.NOTEBOOKS_DIR) != smoke["code"]:
        pytest.skip("dml_core or the notebooks changed while the smoke batch ran")
    again = run_profile("smoke", runs_root=smoke["root"] / "runs", data_root=smoke["root"] / "data",
                        progress=False, quiet=True)
    assert [r.status for r in again.results] == ["skipped"] * len(again.results)
    assert again.ok
