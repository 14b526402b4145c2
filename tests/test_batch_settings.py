"""``--set`` (profile-wide overrides, recorded and marked) and the ``--check`` pre-flight."""
from __future__ import annotations

from pathlib import Path

import pytest

from dml_core.batch import driver as batch

from dml_core.batch import preflight
from dml_core.core.paths import NOTEBOOKS_DIR
from dml_core.core.run_folder import RunFolder
from dml_core.methods.recipes import get_recipe


def test_parse_settings_reads_yaml_values_and_rejects_bad_items():
    got = batch.parse_settings(["epochs=1", "rrc_scale=[0.5, 1.0]", "hflip=false",
                                "max_steps_per_epoch=null", "epochs=2"])
    assert got == {"epochs": 2, "rrc_scale": [0.5, 1.0], "hflip": False, "max_steps_per_epoch": None}
    with pytest.raises(batch.BatchError, match="KEY=VALUE"):
        batch.parse_settings(["epochs"])


def test_set_values_follow_yaml_1_2_and_the_recipe_schema():
    """YAML 1.1 read `1e-3` as a string, `010` as 8, `yes` as True and `12:30` as 750."""
    got = batch.parse_settings(["lr=1e-3", "seed=010", "momentum=0", "pp_normaliser=C"])
    assert got == {"lr": 0.001, "seed": 10, "momentum": 0.0, "pp_normaliser": "C"}
    assert type(got["lr"]) is float and type(got["momentum"]) is float
    from dml_core.core.io import load_yaml12

    assert [load_yaml12(t) for t in ("1e-3", "010", "yes", "12:30", "True", "'1e-3'", "~")] == \
        [0.001, 10, "yes", "12:30", True, "1e-3", None]
    with pytest.raises(batch.BatchError, match=r"--set hflip=yes: hflip expects true or false"):
        batch.parse_settings(["hflip=yes"])  # a string, not True
    with pytest.raises(batch.BatchError, match=r"--set epochs=12:30: epochs expects an integer"):
        batch.parse_settings(["epochs=12:30"])


@pytest.mark.parametrize("item, expected", [
    ("batch_size=-5", r"batch_size expects an integer >= 1 \(e.g. --set batch_size=32"),
    ("batch_size=2.5", r"batch_size expects an integer >= 1"),
    ("lr=abc", r"lr expects a number > 0 \(e.g. --set lr=0.001"),
    ("lr=0", r"lr expects a number > 0"),
    ("validation_fraction=1", r"expects a number in \[0, 1\)"),
    ("rrc_scale=[1, 0.5]", r"the first value must not exceed the second"),
    ("sampler=random", r"sampler expects one of m_per_class, shuffle"),
    ("device=gpu", r"'gpu' is not one of: auto, cpu, cuda"),
    ("lrr=0.1", r"unknown key 'lrr' \(did you mean 'lr'\?\)"),
    ("name=x", r"refused: name names the row"),
])
def test_set_refuses_wrong_types_ranges_and_keys(item, expected):
    with pytest.raises(batch.BatchError, match=expected):
        batch.parse_settings([item])


@pytest.mark.parametrize("key, hint", [("run_dir", "--runs-root"), ("data_root", "--data-root"),
                                       ("output_dir", "run folder"), ("profile", "--profile"),
                                       ("overrides", "its own --set")])
def test_set_refuses_keys_that_move_outputs_instead_of_dropping_them(key, hint):
    with pytest.raises(batch.BatchError, match=f"--set {key}=.*refused: .*{hint}"):
        batch.parse_settings([f"{key}=../../outside"])
    train = _run("01_normsoftmax.ipynb", dataset="demo")  # the Python API refuses them too
    with pytest.raises(batch.BatchError, match=f"refused setting.*{key}"):
        batch.apply_settings(train, dict(train.parameters), {key: "/elsewhere"})


def test_a_profile_is_read_with_yaml_1_2_and_its_overrides_checked(tmp_path):
    text = ("name: p\nruns:\n  - id: r\n    notebook: 01_normsoftmax.ipynb\n"
            "    parameters: {overrides: {lr: 1e-3, OVERRIDE}}\n")
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("OVERRIDE", "epochs: 2"))
    prof = batch.load_profile(path, notebooks_dir=NOTEBOOKS_DIR)
    assert prof.runs[0].parameters["overrides"] == {"lr": 0.001, "epochs": 2}  # 1.1: '1e-3'
    path.write_text(text.replace("OVERRIDE", "batch_size: -5"))
    with pytest.raises(batch.ProfileError, match=r"overrides: batch_size=-5: expected an integer"):
        batch.load_profile(path, notebooks_dir=NOTEBOOKS_DIR)


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
    # 07's momenta is no recipe key: it never reaches a recipe
    p = batch.apply_settings(train, dict(train.parameters), {"momenta": [0.5]})
    assert p["overrides"] == {"momentum": 0.3, "epochs": 9}
    assert batch.apply_settings(toy, {}, {"momenta": [0.5]}) == {"momenta": [0.5]}


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
    rec = RunFolder(res.results[0].run_dir).settings.read_text()
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
    assert set(weights) == {"resnet18_s2 (digits stand-in)"}
    assert weights["resnet18_s2 (digits stand-in)"].ok


def test_run_disk_estimate_matches_a_resnet50_adam_run():
    r = get_recipe("normsoftmax", "sop", "resnet50")
    est = preflight.run_disk_bytes(r, params=23_508_032)
    assert 1.6e9 <= est < 2.0e9  # measured: 407 + 204 MB of checkpoints, 2 x 499 MB of features


def test_preflight_names_the_vit_weight_files_and_where(tmp_path, monkeypatch):
    """``--check`` of the ViT profile: both hub files, expected in the torch cache, then loading."""
    from tools.rehearsal import write_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    report = preflight.check_profile(
        "fair_vit", only=["fair_vit_dino_cgd_car_temperature0.5_s0",
                          "fair_vit_dinov2_d128_cgd_car_temperature0.5_s0"],
        data_root=tmp_path / "data", runs_root=tmp_path / "runs")
    weights = {c.name: c for c in report.checks if c.kind == "weights"}
    assert set(weights) == {"vit_s16_dino", "vit_s14_dinov2"}
    for name, fname in (("vit_s16_dino", "dino_deitsmall16_pretrain.pth"),
                        ("vit_s14_dinov2", "dinov2_vits14_pretrain.pth")):
        assert not weights[name].ok
        assert f"expected {fname} in {folder}" in weights[name].detail
        assert "https://dl.fbaipublicfiles.com/" in weights[name].detail
    write_weights(tmp_path / "torch", ["vit_s16_dino", "vit_s14_dinov2"])
    for name, fname in (("vit_s16_dino", "dino_deitsmall16_pretrain.pth"),
                        ("vit_s14_dinov2", "dinov2_vits14_pretrain.pth")):
        check = preflight._check_weights(name)
        assert check.ok and check.detail == f"{folder / fname} loads"
