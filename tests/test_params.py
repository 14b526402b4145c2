"""Notebook parameter validation (dml_core.profiles.params): no kernel needed."""
from __future__ import annotations

import json
import os

import pytest

from dml_core.profiles import params
from dml_core.profiles.params import NOTEBOOK_PARAMETERS, ParameterError, validate_parameters
from dml_core.core.paths import NOTEBOOKS_DIR

TRAINING = ["01_normsoftmax", "02_asymptotic_proxy", "03_positive_proxy", "04_cgd",
            "05_dynamic_margin"]


def test_schema_lists_the_study_notebooks_with_common_parameters():
    assert set(NOTEBOOK_PARAMETERS) == {"00_prepare_data", *TRAINING, "06_benchmarks",
                                        "07_toy_proxies", "08_figures"}
    for stem, schema in NOTEBOOK_PARAMETERS.items():
        assert {"profile", "run_dir", "data_root", "device"} <= set(schema), stem
        for name, spec in schema.items():
            assert len(spec) == 4 and isinstance(spec[3], str) and spec[3], (stem, name)
    assert "method" in NOTEBOOK_PARAMETERS["03_positive_proxy"]
    assert NOTEBOOK_PARAMETERS["05_dynamic_margin"]["method"][2] == ("dynamic_margin",
                                                                     "proxy_anchor")
    assert "method" not in NOTEBOOK_PARAMETERS["01_normsoftmax"]


@pytest.mark.parametrize("stem", sorted(NOTEBOOK_PARAMETERS))
def test_defaults_are_valid(stem, monkeypatch, tmp_path):
    monkeypatch.setenv("DML_RUNS_ROOT", str(tmp_path))
    p = validate_parameters(stem, {})
    assert set(p) == set(NOTEBOOK_PARAMETERS[stem])
    assert p["run_dir"] == str(tmp_path / "interactive" / stem)  # resolved placeholder


def test_success_path_normalises_and_resolves():
    p = validate_parameters("07_toy_proxies.ipynb", {
        "profile": "demo", "run_dir": "/r/x", "momenta": (0, 0.9), "feature_dim": 3,
        "max_train_per_class": 10, "pretrained": False})
    assert p["momenta"] == [0.0, 0.9] and all(isinstance(m, float) for m in p["momenta"])
    assert p["feature_dim"] == 3 and p["epochs"] == NOTEBOOK_PARAMETERS["07_toy_proxies"][
        "epochs"][1] and p["run_dir"] == "/r/x"
    assert validate_parameters("08_figures", {"profile": "full"})["profiles"] == ["full"]
    assert validate_parameters("08_figures", {})["output_dir"] == "figures"  # in the run folder
    assert validate_parameters("06_benchmarks", {"profiles": ["a", "b"]})["profiles"] == ["a", "b"]
    q = validate_parameters("05_dynamic_margin", {"dataset": "cub", "method": "proxy_anchor",
                                                  "overrides": {"epochs": 1}, "crop": True})
    assert q["method"] == "proxy_anchor" and q["overrides"] == {"epochs": 1} and q["crop"] is True
    raw = validate_parameters("06_benchmarks", {}, resolve=False)
    assert raw["profiles"] is None and raw["run_dir"] is None


def test_defaults_are_fresh_copies():
    a = validate_parameters("01_normsoftmax", {})
    a["overrides"]["epochs"] = 1
    assert validate_parameters("01_normsoftmax", {})["overrides"] == {}


def test_unknown_parameter_names_the_closest_and_the_valid_ones():
    with pytest.raises(ParameterError) as info:
        validate_parameters("01_normsoftmax", {"datset": "cub"})
    msg = str(info.value)
    assert "unknown parameter 'datset'" in msg and "did you mean 'dataset'" in msg
    assert "valid parameters: backbone, crop, data_root, dataset, device" in msg
    assert info.value.notebook == "01_normsoftmax" and len(info.value.problems) == 1


def test_bad_choices_name_the_choices():
    with pytest.raises(ParameterError) as info:
        validate_parameters("04_cgd", {"dataset": "cars", "backbone": "resnet34",
                                       "device": "gpu"})
    msg = str(info.value)
    assert "3 parameter problem(s)" in msg
    assert "'cars' is not one of: car, cub, sop, isc, demo (did you mean 'car'?)" in msg
    assert "resnet50, bninception, googlenet, resnext50_32x4d, resnet18, resnet18_s2" in msg
    assert "device: 'gpu' is not one of: auto, cpu, cuda" in msg
    with pytest.raises(ParameterError, match="'sop2' is not one of"):
        validate_parameters("00_prepare_data", {"datasets": ["demo", "sop2"]})
    with pytest.raises(ParameterError, match="'proxy_anchor' is not one of: positive_proxy"):
        validate_parameters("03_positive_proxy", {"method": "proxy_anchor"})
    with pytest.raises(ParameterError, match="feature_dim: 4 is not one of: 2, 3"):
        validate_parameters("07_toy_proxies", {"feature_dim": 4})


@pytest.mark.parametrize("stem, given, expected", [
    ("01_normsoftmax", {"crop": 1}, "crop=1 must be of type bool, got int"),
    ("07_toy_proxies", {"epochs": True}, "epochs=True must be of type int, got bool"),
    ("07_toy_proxies", {"epochs": 2.5}, "must be of type int"),
    ("07_toy_proxies", {"momenta": 0.9}, "momenta=0.9 must be of type list[float]"),
    ("07_toy_proxies", {"momenta": [0.9, "x"]}, "list[float], got list[float|str]"),
    ("00_prepare_data", {"datasets": "demo"}, "must be of type list[str], got str"),
    ("01_normsoftmax", {"overrides": [("epochs", 1)]}, "overrides"),
    ("06_benchmarks", {"profile": None}, "profile=None must be of type str"),
    ("08_figures", {"output_dir": 3}, "must be of type str|None"),
])
def test_wrong_types(stem, given, expected):
    with pytest.raises(ParameterError) as info:
        validate_parameters(stem, given)
    assert expected in str(info.value)


def test_accepts_a_notebook_namespace():
    """The second cell passes globals(): IPython names, modules, functions are ignored."""
    namespace = {"__name__": "__main__", "_": None, "_i1": "x", "In": [], "Out": {},
                 "get_ipython": lambda: None, "exit": None, "quit": None, "json": json,
                 "os": os, "helper": lambda x: x, "ParameterError": ParameterError,
                 "profile": "demo", "run_dir": "/tmp/r", "dataset": "cub"}
    p = validate_parameters("02_asymptotic_proxy", namespace)
    assert p["dataset"] == "cub" and p["profile"] == "demo"
    namespace["epochs"] = 3  # injected by a profile, not in the parameters cell
    with pytest.raises(ParameterError, match="unknown parameter 'epochs'"):
        validate_parameters("02_asymptotic_proxy", namespace)


def test_unknown_notebook():
    with pytest.raises(ParameterError, match="no parameter schema .*did you mean '04_cgd'"):
        validate_parameters("04_cdg", {})


def _parameters_cell(stem: str) -> str:
    import nbformat

    nb = nbformat.read(str(NOTEBOOKS_DIR / f"{stem}.ipynb"), as_version=4)
    return next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def test_defaults_are_the_parameters_cell():
    """One source: the defaults are what the notebook's parameters cell assigns, and valid."""
    for stem in NOTEBOOK_PARAMETERS:
        ns: dict = {}
        exec(_parameters_cell(stem), {}, ns)  # noqa: S102 - our own committed notebook
        assert ns == params.defaults(stem)
        assert validate_parameters(stem, ns, resolve=False) == ns
    # the drift this replaced: a hand-written schema said 20 epochs and pretrained for 07
    toy = params.defaults("07_toy_proxies")
    assert toy["epochs"] == 4 and toy["pretrained"] is False


def test_types_follow_the_defaults_and_none_defaults_are_declared():
    schema = NOTEBOOK_PARAMETERS["07_toy_proxies"]
    assert schema["epochs"][0] == "int" and schema["pretrained"][0] == "bool"
    assert schema["momenta"][0] == "list[float]"
    assert schema["max_train_per_class"][0] == "int|None"
    assert NOTEBOOK_PARAMETERS["00_prepare_data"]["datasets"][:3] == ("list[str]", ["demo"],
                                                                      params.DATASETS)
    with pytest.raises(ValueError, match="NONE_DEFAULT_TYPES"):
        params._type_of_default("new_parameter", None)


def test_a_notebook_path_is_read_directly(tmp_path):
    """A notebook outside notebooks/ (e.g. a copy) is validated against its own cell."""
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("profile = 'x'  # the profile\nsteps = 3  # how many",
                                          metadata={"tags": ["parameters"]})]
    path = tmp_path / "09_new.ipynb"
    nbformat.write(nb, str(path))
    assert validate_parameters(path, {"steps": 5}, resolve=False) == {"profile": "x", "steps": 5}
    with pytest.raises(ParameterError, match="steps=2.5 must be of type int"):
        validate_parameters(path, {"steps": 2.5})


def test_choices_match_the_registries():
    """The literal lists in params.py agree with dml_core.methods.recipes / dml_core.models.backbones."""
    assert params.check_registries() == []


def test_real_notebooks_define_exactly_the_schema():
    """Every notebooks/NN_*.ipynb with a schema has a parameters cell with the same names."""
    found = [p for p in sorted(NOTEBOOKS_DIR.glob("*.ipynb")) if p.stem in NOTEBOOK_PARAMETERS]
    assert found, "no study notebook found in notebooks/"
    import dml_core.batch  # noqa: F401  (makes the nbformat import cheaper, see batch.py)
    import papermill
    for path in found:
        names = set(papermill.inspect_notebook(str(path)))  # {name: info}
        assert names == set(NOTEBOOK_PARAMETERS[path.stem]), path.name


def test_an_overridden_recipe_name_makes_a_plain_folder_name():
    from dml_core.study.notebooks import folder_name

    assert folder_name("asymptotic_proxy/car/resnet50 [momentum=0.3]") == \
        "asymptotic_proxy_car_resnet50_momentum=0.3"
    assert folder_name("cgd/cub/resnet50/cropped") == "cgd_cub_resnet50_cropped"
