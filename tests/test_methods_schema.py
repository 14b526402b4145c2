"""The recipe schema (dml_core.methods.schema): every row validates, every key is one that a
recipe has, overrides and notebook parameters are typed and ranged through it, and
docs/RECIPE_KEYS.md is generated from it."""
from __future__ import annotations

import pytest

from dml_core.core.paths import REPO_ROOT
from dml_core.methods import fair, recipes
from dml_core.methods.recipes import RecipeError, get_recipe
from dml_core.methods.schema import KEYS, RECORD_KEYS, check_recipe, coerce, describe
from dml_core.profiles.params import ParameterError, validate_parameters


def test_every_recipe_row_validates_against_the_schema():
    assert recipes.check_rows() == []
    names = recipes.list_recipes()  # 56 published rows, 6 demo rows, 44 derived ViT rows
    assert len(names) == 62 + 44 and all(check_recipe(recipes.recipe_by_name(n)) == [] for n in names)


def test_a_bad_row_is_found(monkeypatch):
    name = "cgd/cub/resnet50/cropped"
    bad = {**recipes._REGISTRY[name], "batch_size": 0, "gd_config": "XY", "bn_policy": "frozen"}
    monkeypatch.setitem(recipes._REGISTRY, name, bad)
    problems = "\n".join(recipes.check_rows())
    assert "batch_size=0: expected an integer >= 1" in problems
    assert "gd_config='XY': expected one of S, M, G" in problems
    assert "unknown recipe key 'bn_policy'" in problems


def test_the_schema_lists_exactly_the_keys_recipes_have():
    """One list of keys: no key that no recipe has (fair.py once set `bn_policy`, `lr_step_size`)."""
    in_rows = {k for n in recipes.list_recipes() for k in recipes.recipe_by_name(n)}
    assert in_rows == set(KEYS) - set(RECORD_KEYS)
    assert not {"bn_policy", "lr_step_size", "bn_freeze", "lr_decay_step"} & set(KEYS)
    source = (REPO_ROOT / "dml_core" / "methods" / "fair.py").read_text()
    assert "bn_policy" not in source and "lr_step_size" not in source


def test_the_fair_protocol_sets_only_schema_keys():
    for variant, v in fair.VARIANTS.items():
        r = fair.fair_recipe(variant, "demo", seed=1)
        assert check_recipe(r) == [], variant
        assert set(fair.shared_overrides(r, fair.SETTINGS["demo"], 1)) <= set(KEYS)
        assert set(v.loss) <= set(fair.LOSS_HPARAMS[v.method]) <= set(KEYS)


@pytest.mark.parametrize("override, expected", [
    ({"batch_size": -5}, r"batch_size=-5: expected an integer >= 1 \(e.g. batch_size=32\)"),
    ({"lr": "1e-3"}, r"lr='1e-3': expected a number > 0"),  # a string is not a number
    ({"epochs": 2.0}, r"epochs=2.0: expected an integer >= 1"),
    ({"samples_per_class": 0}, r"expected an integer >= 1 or null"),
    ({"freeze_bn": "yes"}, r"freeze_bn='yes': expected true or false"),
    ({"bn_freeze": 1}, r"bn_freeze=1: expected true or false"),  # an alias, checked as its key
    ({"lr_gamma": 2.0}, r"expected a number in \(0, 1\]"),
    ({"rrc_scale": [0.5]}, r"expected a list of 2 numbers in \(0, 1\]"),
    ({"seed": -1}, r"seed=-1: expected an integer in \[0, 4294967295\]"),
    ({"lr": float("nan")}, r"expected a number > 0"),
])
def test_overrides_of_the_wrong_type_or_range_are_refused(override, expected):
    with pytest.raises(RecipeError, match=expected):
        get_recipe("dynamic_margin", "cub", "resnet50", **override)


def test_overrides_are_normalised_and_the_row_cannot_be_overridden():
    r = get_recipe("asymptotic_proxy", "car", "resnet50", momentum=1, rrc_scale=(0.5, 1))
    assert type(r["momentum"]) is float and r["rrc_scale"] == [0.5, 1.0]
    same = get_recipe("proxy_anchor", "cub", "resnet50", alpha=32)  # the row's value, as an int
    assert same["reported"] == "proxy_anchor/cub/resnet50" and "overrides" not in same
    with pytest.raises(RecipeError, match=r"\['name'\] cannot be overridden"):
        get_recipe("cgd", "sop", "resnet50", name="x")
    for key, value in (("dataset", "car"), ("method", "cgd"), ("backbone", "resnet18")):
        with pytest.raises(RecipeError, match="cannot be overridden: they name the row"):
            recipes.recipe_by_name("cgd/sop/resnet50", **{key: value})
    with pytest.raises(RecipeError, match=r"unknown recipe key\(s\) \['shortened'\]"):
        get_recipe("cgd", "sop", "resnet50", shortened=False)  # written by the overrides only
    with pytest.raises(RecipeError, match="bad override value.*lr=.*batch_size="):
        get_recipe("cgd", "sop", "resnet50", lr="fast", batch_size=-1)  # every problem at once


def test_messages_say_what_is_expected_and_give_an_example():
    with pytest.raises(RecipeError) as info:
        coerce("batch_size", -5)
    assert (info.value.key, info.value.expected, info.value.example) == \
        ("batch_size", "an integer >= 1", 32)
    assert describe(KEYS["positive_proxy"]) == "true or false or one of embeddings, proxies"
    with pytest.raises(RecipeError, match=r"unknown recipe key 'momentun' \(did you mean 'momentum'"):
        coerce("momentun", 0.5)


def test_notebook_parameters_go_through_the_schema(tmp_path):
    with pytest.raises(ParameterError) as info:
        validate_parameters("01_normsoftmax", {"overrides": {"batch_size": -5, "lr": "abc",
                                                             "dataset": "cub"}})
    text = str(info.value)
    assert "3 parameter problem(s)" in text and "batch_size=-5: expected an integer >= 1" in text
    assert "lr='abc': expected a number > 0" in text and "'dataset' cannot be overridden" in text
    with pytest.raises(ParameterError, match=r"epochs=0: expected an integer >= 1"):
        validate_parameters("07_toy_proxies", {"epochs": 0})  # the toy's epochs is a recipe key
    p = validate_parameters("05_dynamic_margin", {"overrides": {"alpha_p": 40, "bn_freeze": False}})
    assert p["overrides"] == {"alpha_p": 40.0, "bn_freeze": False}


def test_relative_output_paths_stay_in_the_run_folder(tmp_path):
    from dml_core.study.notebooks import resolve_output_dir

    with pytest.raises(ParameterError, match="output_dir='../../outside' leaves the run folder"):
        validate_parameters("08_figures", {"output_dir": "../../outside"})
    run = tmp_path / "runs" / "demo" / "08_figures"
    run.mkdir(parents=True)
    assert resolve_output_dir("figures", run) == run / "figures"
    assert resolve_output_dir("a/../b", run) == run / "a/../b"
    with pytest.raises(ValueError, match="leaves the run folder"):
        resolve_output_dir("../../outside", run)
    (run / "link").symlink_to(tmp_path)  # a link out of the folder is leaving it too
    with pytest.raises(ValueError, match="leaves the run folder"):
        resolve_output_dir("link/x", run)
    assert resolve_output_dir(str(tmp_path / "abs"), run) == tmp_path / "abs"  # said explicitly


def test_the_keys_document_is_generated_from_the_schema():
    doc = (REPO_ROOT / "docs" / "RECIPE_KEYS.md").read_text()
    assert doc == recipes.keys_markdown(), \
        "docs/RECIPE_KEYS.md is stale: run `python -m dml_core.methods --write`"
    assert all(f"| `{k}` |" in doc for k in KEYS)
    architecture = (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert "docs/RECIPE_KEYS.md" in architecture and "dml_core/methods/schema.py" in architecture


def test_the_names_spelled_in_the_schema_are_the_registries():
    """The schema spells the backbone, transform and descriptor names (so that reading it does not
    import torch); they are exactly the models' and transforms' registries."""
    from dml_core.data.transforms import STYLES
    from dml_core.models.backbones import BACKBONES
    from dml_core.models.heads import GD_CONFIGS

    assert set(KEYS["backbone"].choices) == set(BACKBONES)
    assert KEYS["transform"].choices == tuple(STYLES)
    assert KEYS["gd_config"].choices == tuple(GD_CONFIGS)
