"""The report layer: reported numbers as data, load_runs and the benchmark tables.

Run folders are synthetic (summary.json + metrics.csv in the ARCHITECTURE.md schema, and a
features/best.pt), written into tmp_path by :func:`make_run`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dml_core.report import (ENTRIES, MOMENTUM_SENSITIVITY, MOMENTUM_VALUES, NOT_REPORTED,
                             NOT_RUN, benchmark_long, benchmark_markdown, benchmark_table,
                             expected_keys_from_profile, get_reported, load_runs, momentum_frame,
                             reported_entries, reported_frame, reported_keys, to_html, to_markdown)
from dml_core.report.reported import PROTOCOL_KS

KS = {"car": (1, 2, 4, 8), "cub": (1, 2, 4, 8), "demo": (1, 2, 4, 8), "sop": (1, 10, 100, 1000),
      "isc": (1, 10, 20, 30, 40, 50)}


def make_run(root: Path, profile: str, run_id: str, *, method="normsoftmax", dataset="car",
             backbone="resnet50", crop=False, reported="auto", status="complete", epochs=3,
             binary=True, validation=False, momentum=None, features=True, n=40, dim=8,
             r1=(0.50, 0.62, 0.58), write_metrics=True, embedding_dim=None) -> Path:
    """A synthetic run folder. ``r1``: test dense R@1 per epoch (fractions)."""
    run_dir = root / profile / run_id
    run_dir.mkdir(parents=True)
    crop_tag = ("/cropped" if crop else "/uncropped") if dataset in ("car", "cub") and \
        method in ("normsoftmax", "cgd") else ""
    name = f"{method}/{dataset}/{backbone}{crop_tag}"
    if reported == "auto":
        reported = name
    recipe = {"name": name, "method": method, "dataset": dataset, "backbone": backbone,
              "crop": crop, "embedding_dim": embedding_dim or (512 if method != "normsoftmax"
                                                               else 2048),
              "epochs": epochs, "reported": reported, "max_steps_per_epoch": None}
    if momentum is not None:
        recipe["momentum"] = momentum
    ks = KS[dataset]
    rows = []
    for e in range(1, epochs + 1):
        base = r1[min(e - 1, len(r1) - 1)]
        row = {"epoch": e, "lr": 0.01, "train_loss": 3.0 / e, "train_accuracy": 0.2 * e,
               "images_per_s": 100.0, "epoch_time_s": 10.0}
        for j, k in enumerate(ks):
            row[f"test/dense/R@{k}"] = min(1.0, base + 0.05 * j)
            if binary:
                row[f"test/binary/R@{k}"] = min(1.0, base - 0.02 + 0.05 * j)
        if validation:
            row["val/dense/R@1"] = [0.3, 0.5, 0.4][min(e - 1, 2)]
        rows.append(row)
    done = rows if status == "complete" else rows[:max(1, len(rows) - 1)]
    if write_metrics:
        pd.DataFrame(done).to_csv(run_dir / "metrics.csv", index=False)
    best_row = max(done, key=lambda r: r["test/dense/R@1"])
    summary = {
        "status": status, "recipe": recipe, "protocol": dataset,
        "selection": "validation" if validation else "test",
        "best": {"epoch": best_row["epoch"],
                 "metrics": {k: v for k, v in best_row.items() if k.startswith("test/")}},
        "last": {"epoch": done[-1]["epoch"],
                 "metrics": {k: v for k, v in done[-1].items() if k.startswith("test/")}},
        "epochs_completed": len(done), "train_time_s": 30.0 * len(done), "images_per_s": 123.4,
        "num_parameters": 27_910_000, "macs": 4.12e9,
        "hardware": {"device": "cpu", "cpu": "Test CPU", "gpu": None},
        "versions": {"torch": "x"}, "git_commit": None,
    }
    if status == "failed":
        summary["error"] = "RuntimeError: boom"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    if features:
        import torch

        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(4), n // 4)
        centers = rng.normal(size=(4, dim))
        f = centers[labels] + 0.3 * rng.normal(size=(n, dim))
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        (run_dir / "features").mkdir()
        torch.save({"features": torch.tensor(f, dtype=torch.float32),
                    "labels": torch.tensor(labels, dtype=torch.int64),
                    "paths": [str(run_dir / f"img_{i}.jpg") for i in range(n)]},
                   run_dir / "features" / "best.pt")
    return run_dir


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "demo", "ns_car", method="normsoftmax", dataset="car", crop=False)
    make_run(root, "demo", "cgd_cub_crop", method="cgd", dataset="cub", crop=True, binary=False,
             validation=True)
    make_run(root, "demo", "nested/ap_isc", method="asymptotic_proxy", dataset="isc",
             backbone="bninception")
    make_run(root, "demo", "failed_pp", method="positive_proxy", dataset="car",
             backbone="googlenet", status="failed", epochs=2, write_metrics=False)
    make_run(root, "other", "dm_isc", method="dynamic_margin", dataset="isc",
             backbone="bninception", binary=False)
    # a folder without summary.json is not a run
    (root / "demo" / "00_prepare_data").mkdir()
    return root


# ---------------------------------------------------------------------------------------------
# reported data
def test_every_non_placeholder_entry_is_monotone_in_k():
    checked = 0
    for e in ENTRIES:
        if e.status == "placeholder":
            continue
        for feat, rec in e.recalls.items():
            ks = sorted(rec)
            vals = [rec[k] for k in ks]
            assert all(a <= b for a, b in zip(vals, vals[1:])), (e.key, e.variant, feat, rec)
            assert all(0 < v <= 100 for v in vals)
            assert set(ks) <= set(PROTOCOL_KS[e.dataset]), (e.key, ks)
            checked += 1
    assert checked > 50


def test_seed001_placeholder_is_flagged_nonmonotone_and_never_a_target():
    ph = [e for e in ENTRIES if e.status == "placeholder"]
    assert len(ph) == 12 and all(not e.is_target for e in ph)
    isc = next(e for e in ph if e.key == "asymptotic_proxy/isc/resnet50")
    # the placeholder In-shop row is non-monotone (90.6 -> 83.6): that is why it is not a target
    assert isc.recalls["dense"][30] > isc.recalls["dense"][40]
    # the primary entry of the key is the REAL c30c146/4137a7d number, not the placeholder
    real = get_reported("asymptotic_proxy/isc/resnet50")
    assert real.status == "reported" and real.recalls["dense"][1] == 90.2
    assert "c30c146" in real.source and "4137a7d" in real.source
    assert get_reported("asymptotic_proxy/car/resnet50").recalls["binary"][1] == 79.5
    assert all(v != 64.1 for v in get_reported("asymptotic_proxy/sop/resnet50").recalls["dense"].values())


def test_pp_table_is_carry_over_of_asymptotic_proxy_dense():
    pp = reported_entries(method="positive_proxy")
    assert len(pp) == 6
    for e in pp:
        assert e.status == "carry_over" and not e.is_target
        src = get_reported(e.carry_over_of)
        assert src.method == "asymptotic_proxy" and src.status == "reported"
        assert dict(e.recalls["dense"]) == dict(src.recalls["dense"])  # byte-identical numbers
        assert "binary" not in e.recalls
        assert any("CARRY-OVER" in c for c in e.caveats)
        assert "GTX 1070" in e.hardware


def test_inshop_dynamic_margin_header_caveat_and_both_k():
    e = get_reported("dynamic_margin/isc/bninception")
    assert e.recalls["dense"] == {1: 92.0, 10: 98.1, 20: 98.8, 40: 99.2}
    assert e.value("dense", 40) == 99.2 and e.value("dense", 30) == 99.2
    assert e.value("dense", 50) is None
    assert any("header" in c and "R@30" in c and "R@40" in c for c in e.caveats)


def test_crop_distinguished_and_params_flops_hardware():
    unc = get_reported("normsoftmax/car/resnet50/uncropped")
    cro = get_reported("normsoftmax/car/resnet50/cropped")
    assert unc.crop is False and cro.crop is True
    assert unc.recalls["dense"][1] == 86.1 and cro.recalls["dense"][1] == 91.4
    assert unc.params == "27.91M" and unc.flops == "4.12G"
    assert get_reported("cgd/sop/resnext50_32x4d").params == "49.32M"
    assert get_reported("cgd/cub/resnet50/cropped").recalls["dense"][1] == 73.9
    assert "V100" in unc.hardware
    assert get_reported("proxy_anchor/isc/bninception").recalls["dense"][30] == 99.0
    assert get_reported("normsoftmax/car/resnet50/uncropped", "official (azgo14)").status == \
        "reference"
    # every primary key is unique and carries a source
    keys = reported_keys()
    assert len(keys) == len(set(keys)) == 50
    assert all(e.source for e in ENTRIES)


def test_reported_keys_match_recipes():
    from dml_core.methods import recipes

    rec_keys = {recipes.recipe_by_name(n).get("reported") for n in recipes.list_recipes()} - {None}
    assert rec_keys <= set(reported_keys()), rec_keys - set(reported_keys())


def test_momentum_sensitivity_data():
    assert set(MOMENTUM_SENSITIVITY) == {"cub", "car", "sop", "isc"}
    for ds, series in MOMENTUM_SENSITIVITY.items():
        assert len(series) == 6
        assert all(len(v) == len(MOMENTUM_VALUES) == 7 for v in series.values())
    # the 512-d values at m=0.5 (Cars/CUB) and m=0.95 (SOP/In-shop) equal the real README
    assert MOMENTUM_SENSITIVITY["car"]["ResNet-50(512)"][3] == \
        get_reported("asymptotic_proxy/car/resnet50").recalls["dense"][1]
    assert MOMENTUM_SENSITIVITY["isc"]["BN-Inception(512)"][6] == \
        get_reported("asymptotic_proxy/isc/bninception").recalls["dense"][1]
    mf = momentum_frame()
    assert mf["collapsed"].sum() == 6 and (mf["source"].str.contains("hard-coded")).all()
    rf = reported_frame()
    assert {"reported", "carry_over", "placeholder", "reference"} == set(rf["status"])


# ---------------------------------------------------------------------------------------------
# load_runs
def test_load_runs_reads_folders_and_tolerates_failed(runs_root):
    df = load_runs(runs_root)
    assert len(df) == 5
    assert set(df["profile"]) == {"demo", "other"}
    assert "nested/ap_isc" in set(df["run_id"])
    failed = df[df["run_id"] == "failed_pp"].iloc[0]
    assert failed["status"] == "failed" and failed["error"].startswith("RuntimeError")
    assert not failed["has_metrics_csv"]
    # failed run without metrics.csv falls back on summary.json (its best epoch, test selection)
    assert failed["test_sel/dense/R@1"] == pytest.approx(0.50)
    ns = df[df["run_id"] == "ns_car"].iloc[0]
    assert ns["test_sel_epoch"] == 2 and ns["test_sel/dense/R@1"] == pytest.approx(0.62)
    assert ns["last_epoch"] == 3 and ns["last/dense/R@1"] == pytest.approx(0.58)
    assert ns["num_parameters"] == 27_910_000 and ns["macs"] == pytest.approx(4.12e9)
    assert ns["hardware"] == "cpu, Test CPU" and ns["has_features"]
    # validation selection: epoch 2 has the best val R@1; its test metrics are reported
    cgd = df[df["run_id"] == "cgd_cub_crop"].iloc[0]
    assert cgd["val_sel_epoch"] == 2 and cgd["crop"] is True or cgd["crop"] == True  # noqa: E712
    only = load_runs(runs_root, profiles=["other"])
    assert list(only["run_id"]) == ["dm_isc"]
    by_dirs = load_runs([runs_root / "demo"])
    assert len(by_dirs) == 4 and set(by_dirs["profile"]) == {"demo"}


def test_load_runs_empty_and_unreadable(tmp_path):
    assert len(load_runs(tmp_path / "nothing")) == 0
    bad = tmp_path / "runs" / "p" / "r"
    bad.mkdir(parents=True)
    (bad / "summary.json").write_text("{not json")
    df = load_runs(tmp_path / "runs")
    assert list(df["status"]) == ["unreadable"]


# ---------------------------------------------------------------------------------------------
# tables
def test_table_puts_reproduced_beside_reported_and_not_run(runs_root):
    df = load_runs(runs_root)
    t = benchmark_table(df, dataset="car")
    assert {"R@1 reported", "R@1 best-test", "R@1 last", "R@8 reported"} <= set(t.columns)
    ns = t[(t["Method"] == "NormSoftmax") & (t["Crop"] == "uncropped") & (t["Feature"] == "dense")
           & (t["Status"] == "complete")].iloc[0]
    assert ns["R@1 reported"] == "86.1" and ns["R@1 best-test"] == "62.0"
    assert ns["R@1 last"] == "58.0" and ns["Profile"] == "demo" and ns["Run"] == "ns_car"
    assert ns["Hardware (run)"] == "cpu, Test CPU" and "V100" in ns["Hardware (authors)"]
    assert ns["Params run"] == "27.91M" and ns["Params reported"] == "27.91M"
    # the cropped NormSoftmax row has no run: "not run" beside the reported number
    crop = t[(t["Method"] == "NormSoftmax") & (t["Crop"] == "cropped") & (t["Feature"] == "dense")]
    assert len(crop) == 1
    crop = crop.iloc[0]
    assert crop["Status"] == NOT_RUN and crop["R@1 reported"] == "91.4"
    assert crop["R@1 best-test"] == NOT_RUN and crop["R@1 last"] == NOT_RUN
    # no cell is ever blank
    assert not (t.astype(str).apply(lambda c: c.str.strip() == "")
                .drop(columns=["Caveats"]).any().any())


def test_reported_number_never_copied_into_reproduced(runs_root):
    long = benchmark_long(load_runs(runs_root))
    not_run = long[long["run_status"] == NOT_RUN]
    assert len(not_run) > 100
    assert not_run[["test_sel_pct", "last_pct", "val_sel_pct"]].isna().all().all()
    assert not_run["reported_pct"].notna().any()
    ran = long[long["run_status"] != NOT_RUN].dropna(subset=["test_sel_pct", "reported_pct"])
    assert len(ran) and not np.isclose(ran["test_sel_pct"], ran["reported_pct"]).any()
    # every reported primary entry appears (the full profile lists them all)
    assert set(reported_keys()) <= set(long["key"])


def test_caveats_for_ap_pp_and_inshop(runs_root):
    df = load_runs(runs_root)
    isc = benchmark_table(df, dataset="isc")
    dm = isc[(isc["Method"].str.startswith("Dynamic")) & (isc["Backbone"] == "BN-Inception")]
    assert len(dm) == 1 and "header" in dm.iloc[0]["Caveats"]
    assert dm.iloc[0]["R@30 reported"] == dm.iloc[0]["R@40 reported"] == "99.2†"
    assert dm.iloc[0]["R@50 reported"] == NOT_REPORTED
    assert dm.iloc[0]["Profile"] == "other" and dm.iloc[0]["R@1 best-test"] == "62.0"
    ap = isc[(isc["Method"] == "AsymptoticProxy") & (isc["Backbone"] == "BN-Inception")
             & (isc["Feature"] == "dense")].iloc[0]
    assert "placeholder" in ap["Caveats"] and ap["R@1 reported"] == "87.7"
    car = benchmark_table(df, dataset="car")
    pp = car[car["Method"].str.startswith("PP") & (car["Backbone"] == "GoogLeNet")].iloc[0]
    assert pp["Status"] == "failed" and "CARRY-OVER" in pp["Caveats"]
    assert pp["R@1 reported"] == "78.8 (carry-over)"
    # placeholders are left out by default, shown on request with their flag
    assert not car["R@1 reported"].str.contains("placeholder").any()
    withph = benchmark_table(df, dataset="car", statuses=("reported", "carry_over", "placeholder"))
    assert withph["R@1 reported"].str.contains(r"\(placeholder\)").any()


def test_validation_column_and_profile_not_run(runs_root):
    df = load_runs(runs_root)
    t = benchmark_table(df, dataset="cub")
    assert "R@1 val-sel" in t.columns
    cgd = t[(t["Method"] == "CGD") & (t["Crop"] == "cropped") & (t["Backbone"] == "ResNet50")
            & (t["Status"] == "complete")].iloc[0]
    assert cgd["R@1 val-sel"] == "62.0" and cgd["R@1 reported"] == "73.9"
    # per profile: the 'other' profile has not run the car NormSoftmax row
    t2 = benchmark_table(df, dataset="car", profiles=["other"], expected=[
        "normsoftmax/car/resnet50/uncropped"], include_all_reported=False)
    assert list(t2["Status"].unique()) == [NOT_RUN] and set(t2["Profile"]) == {"other"}
    # an unknown run (no reported key) shows "not reported"
    root = runs_root.parent / "runs2"
    make_run(root, "demo", "demo_ns", dataset="demo", backbone="resnet18", reported=None)
    t3 = benchmark_table(load_runs(root), dataset="demo")
    assert len(t3) == 2 and (t3["R@1 reported"] == NOT_REPORTED).all()
    assert (t3["R@1 best-test"] == "62.0").any()


def test_renderers_and_markdown_report(runs_root):
    df = load_runs(runs_root)
    t = benchmark_table(df, dataset="isc", details=False)
    md = to_markdown(t)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| Method |") and set(lines[1]) <= {"|", "-"}
    assert len(lines) == len(t) + 2
    assert all(line.count(" | ") == lines[0].count(" | ") for line in lines[2:])
    html = to_html(pd.DataFrame({"a": ["<x>|y"]}), caption="c")
    assert "&lt;x&gt;" in html and "<caption>c</caption>" in html
    report = benchmark_markdown(df, profiles=["demo"])
    assert "### In-shop (demo)" in report and NOT_RUN in report and "Caveats:" in report


def test_expected_keys_from_profile(tmp_path):
    prof = {"name": "x", "runs": [
        {"id": "a", "notebook": "n.ipynb", "parameters": {"recipe": "cgd/sop/resnet50"}},
        {"id": "b", "notebook": "n.ipynb", "parameters": {"recipes": [
            {"reported": "proxy_anchor/cub/resnet50"}, "not/a/key"]}}]}
    assert expected_keys_from_profile(prof) == ["cgd/sop/resnet50", "proxy_anchor/cub/resnet50"]
    t = benchmark_table(None, dataset="sop", expected=expected_keys_from_profile(prof),
                        include_all_reported=False)
    assert len(t) == 1 and t.iloc[0]["Status"] == NOT_RUN and t.iloc[0]["R@1 reported"] == "79.3"
