"""``--set`` (profile-wide overrides, recorded and marked) and the ``--check`` pre-flight."""
from __future__ import annotations

from pathlib import Path

import pytest

from dml_core.batch import driver as batch

from dml_core.batch import preflight
from dml_core.core.paths import NOTEBOOKS_DIR
from dml_core.methods.recipes import get_recipe


def test_parse_settings_reads_yaml_values_and_rejects_bad_items():
    got = batch.parse_settings(["epochs=1", "rrc_scale=[0.5, 1.0]", "hflip=false", "x=null",
                                "epochs=2"])
    assert got == {"epochs": 2, "rrc_scale": [0.5, 1.0], "hflip": False, "x": None}
    with pytest.raises(batch.BatchError, match="KEY=VALUE"):
        batch.parse_settings(["epochs"])


def _run(notebook: str, **params) -> batch.Run:
    return batch.Run(id="r", notebook=NOTEBOOKS_DIR / notebook, parameters=params, stage=1)


def test_settings_merge_into_training_overrides_and_notebook_parameters():
    settings = {"epochs": 1, "max_steps_per_epoch": 2, "device": "cpu"}
    train = _run("02_asymptotic_proxy.ipynb", dataset="car", overrides={"momentum": 0.3, "epochs": 9})
    p = batch.apply_settings(train, dict(train.parameters), settings)
    assert p["overrides"] == {"momentum": 0.3, "epochs": 1, "max_steps_per_epoch": 2}
    assert p["device"] == "cpu"
    toy = _run("07_toy_proxies.ipynb", epochs=30)
    assert batch.apply_settings(toy, dict(toy.parameters), settings) == {"epochs": 1, "device": "cpu"}
    figures = _run("08_figures.ipynb")
    assert batch.apply_settings(figures, {}, {"epochs": 1}) == {}
    # 08's output_dir is no recipe key: it never reaches a recipe
    p = batch.apply_settings(train, dict(train.parameters), {"output_dir": "/tmp/x"})
    assert p["overrides"] == {"momentum": 0.3, "epochs": 9}
    assert batch.apply_settings(figures, {}, {"output_dir": "/tmp/x"}) == {"output_dir": "/tmp/x"}


def test_overridden_recipe_is_marked_and_never_compared_with_a_reported_number():
    base = get_recipe("asymptotic_proxy", "car", "resnet50")
    assert base["reported"] and "overrides" not in base
    sweep = get_recipe("asymptotic_proxy", "car", "resnet50", momentum=0.3)
    assert sweep["reported"] is None and sweep["base_reported"] == base["reported"]
    assert sweep["name"] == "asymptotic_proxy/car/resnet50 [momentum=0.3]"
    assert sweep["overrides"] == {"momentum": 0.3} and sweep["shortened"] is False
    short = get_recipe("cgd", "cub", "resnet50", crop=True, epochs=1, max_steps_per_epoch=2)
    assert short["shortened"] is True and short["reported"] is None
    # an override equal to the recipe's value, or a neutral one, keeps the reported key
    assert get_recipe("asymptotic_proxy", "car", "resnet50", momentum=base["momentum"]) == base
    assert get_recipe("cgd", "cub", "resnet50", num_workers=2)["reported"] == \
        get_recipe("cgd", "cub", "resnet50")["reported"]


def test_set_is_recorded_in_the_run_folder(tmp_path, monkeypatch):
    prof = batch.load_profile("smoke")
    prof.runs = [r for r in prof.runs if r.id == "01_normsoftmax"]
    seen = {}

    def fake_execute(task):
        seen.update(task["parameters"])
        return {"status": "done", "elapsed_s": 0.0}

    monkeypatch.setattr(batch, "execute_run", fake_execute)
    monkeypatch.setattr(batch, "_check_kernel", lambda name: None)
    res = batch.run_profile(prof, runs_root=tmp_path, settings={"batch_size": 8}, quiet=True)
    assert seen["overrides"]["batch_size"] == 8 and seen["overrides"]["epochs"] == 1
    rec = (Path(res.results[0].run_dir) / batch.SETTINGS_FILE).read_text()
    assert '"batch_size": 8' in rec and '"shortened": true' in rec


def test_preflight_reports_every_problem_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    report = preflight.check_profile("full", only=["02_asymptotic_proxy_car_bninception",
                                                   "04_cgd_sop_resnet50"],
                                     data_root=tmp_path / "data", runs_root=tmp_path / "runs",
                                     settings={"epochs": 1, "nonsense_key": 3})
    kinds = {(c.kind, c.name): c.ok for c in report.checks}
    assert not report.ok
    assert kinds[("recipes", "04_cgd_sop_resnet50")] is False
    assert kinds[("disk", str((tmp_path / "runs").resolve()))] is True
    text = report.format()
    assert "nonsense_key" in text and "FAIL" in text
    report = preflight.check_profile("full", only=["02_asymptotic_proxy_car_bninception"],
                                     data_root=tmp_path / "data", runs_root=tmp_path / "runs")
    failed = {(c.kind, c.name) for c in report.failed}
    assert {("data", "car"), ("weights", "bninception")} <= failed
    if not __import__("torch").cuda.is_available():
        assert ("cuda", "cuda") in failed
    # the demo's runs start from its stand-in trunk, which its data preparation builds
    demo = preflight.check_profile("demo", only=["paper_proxy_anchor_s0"],
                                   data_root=tmp_path / "data", runs_root=tmp_path / "runs")
    weights = {c.name: c for c in demo.checks if c.kind == "weights"}
    assert set(weights) == {"resnet18 (digits stand-in)"}
    assert weights["resnet18 (digits stand-in)"].ok


def test_run_disk_estimate_matches_a_resnet50_adam_run():
    r = get_recipe("normsoftmax", "sop", "resnet50")
    est = preflight.run_disk_bytes(r, params=23_508_032)
    assert 1.6e9 <= est < 2.0e9  # measured: 407 + 204 MB of checkpoints, 2 x 499 MB of features
