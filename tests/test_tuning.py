"""The search (dml_core.study.tuning): the same budget for every method, on the validation
classes only; the test split is never even loaded; the fair protocol reads only a full search
with one budget for all."""
from __future__ import annotations

import json

import pytest

from dml_core.methods import fair
from dml_core.study import tuning


def test_the_objective_receives_validation_metrics_only():
    assert tuning.objective_value({"val/dense/R@1": 0.4, "val/dense/MAP@R": 0.2}) == 0.4
    with pytest.raises(ValueError, match="test set must never reach the search"):
        tuning.objective_value({"val/dense/R@1": 0.4, "test/dense/R@1": 0.9})


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from dml_core.data import prepare

    root = tmp_path_factory.mktemp("demo_data")
    prepare("demo", root)
    return root


@pytest.mark.slow  # 4 short trainings (~1.5 min on 2 busy cores)
def test_a_smoke_search_never_loads_the_test_split(demo_root, tmp_path, monkeypatch):
    import dml_core.data
    import dml_core.data.cache

    loaded = []
    real_ds, real_cached = dml_core.data.RetrievalDataset, dml_core.data.cache.cached_split

    def spy_ds(dataset, split, *a, **k):
        loaded.append(split)
        return real_ds(dataset, split, *a, **k)

    def spy_cached(recipe, split, *a, **k):
        loaded.append(split)
        return real_cached(recipe, split, *a, **k)

    monkeypatch.setattr(dml_core.data, "RetrievalDataset", spy_ds)
    monkeypatch.setattr(dml_core.data.cache, "cached_split", spy_cached)
    seen = []
    real_objective = tuning.objective_value

    def spy_objective(metrics):
        seen.append(sorted(metrics))
        return real_objective(metrics)

    monkeypatch.setattr(tuning, "objective_value", spy_objective)
    out = tmp_path / "smoke.json"
    doc = tuning.tune("demo", trials=2, seeds=(100, 101), variants=["proxy_anchor"],
                      overrides={"epochs": 1, "max_steps_per_epoch": 2, "crop_size": 16,
                                 "resize_size": 18},
                      out=out, data_root=demo_root, work_dir=tmp_path / "work", log=lambda m: None)
    assert "train" in loaded and "test" not in loaded and "query" not in loaded
    assert len(seen) == 4 and all(k.startswith("val/") for keys in seen for k in keys)
    assert "test/" not in out.read_text()
    assert doc["shortened"] and doc["budget"] == {**doc["budget"], "trials": 2, "seeds": [100, 101]}
    trials = [t for t in doc["trials"] if t["variant"] == "proxy_anchor"]
    assert len(trials) == 2 and all(set(t["values"]) == {"100", "101"} for t in trials)
    assert trials[0]["params"] == {"alpha": 32.0, "margin": 0.1}  # trial 0: the untuned values
    space = fair.SEARCH_SPACE["proxy_anchor"]
    for k, v in doc["chosen"]["proxy_anchor"].items():
        assert space[k][1] <= v <= space[k][2]
    assert not (tmp_path / "work" / "proxy_anchor_t0_s100").exists()  # trial folders removed
    from dml_core.models.standin import FILE_STEM
    assert doc["pretrained"].startswith(FILE_STEM)  # the weights the trials fine-tuned


def test_a_shortened_search_cannot_choose_the_studys_values():
    with pytest.raises(SystemExit, match="give --out"):
        tuning.tune("demo", trials=1, overrides={"epochs": 1})
    with pytest.raises(SystemExit, match="not headline variants"):
        tuning.tune("demo", trials=1, variants=["asymptotic_proxy_m0.5"], out="/tmp/x.json")


def _doc(chosen, trials=4, seeds=(100, 101), **extra):
    return {"setting": "demo", "budget": {"trials": trials, "seeds": list(seeds)},
            "chosen": chosen, "best": {v: {"trial": 0, "value": 0.5, "trials": trials}
                                       for v in chosen}, **extra}


def test_the_protocol_reads_only_a_full_search_with_one_budget(tmp_path):
    headline = [v for v, x in fair.VARIANTS.items() if x.headline]
    chosen = {v: {k: lo for k, (_s, lo, _hi) in fair.SEARCH_SPACE[fair.VARIANTS[v].method].items()
                  if k not in fair.VARIANTS[v].fixed} for v in headline}
    path = fair.tuning_file("demo", tmp_path)
    path.parent.mkdir(parents=True)

    def write(doc):
        path.write_text(json.dumps(doc))

    assert fair.tuned_values("demo", tmp_path) == {}  # nothing committed: the untuned values
    write(_doc(chosen, shortened=True))
    with pytest.raises(fair.FairError, match="shortened search"):
        fair.tuned_values("demo", tmp_path)
    write(_doc({v: chosen[v] for v in headline[:2]}))
    with pytest.raises(fair.FairError, match="not every headline variant"):
        fair.tuned_values("demo", tmp_path)
    unequal = _doc(chosen)
    unequal["best"][headline[0]]["trials"] = 3
    write(unequal)
    with pytest.raises(fair.FairError, match="unequal budgets"):
        fair.tuned_values("demo", tmp_path)
    outside = _doc({**chosen, "pp_on": {**chosen["pp_on"], "positive_proxy": False}})
    write(outside)
    with pytest.raises(fair.FairError, match="outside its search space"):
        fair.tuned_values("demo", tmp_path)
    write(_doc(chosen))
    assert fair.tuned_values("demo", tmp_path) == chosen
    pp = fair.variant_loss("pp_on", "demo", tmp_path)
    assert pp["positive_proxy"] is True and pp["alpha"] == chosen["pp_on"]["alpha"]
    ablation = fair.variant_loss("asymptotic_proxy_m0.5", "demo", tmp_path)
    assert ablation["momentum"] == 0.5  # fixed by the ablation
    assert ablation["temperature"] == chosen["asymptotic_proxy"]["temperature"]  # tuned_as
