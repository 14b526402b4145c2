"""The fair protocol: one shared setting, loss keys only per method, generated files in sync, and
same seed → identical metrics (different seed → different ones) through the real trainer."""
from __future__ import annotations

import pytest
import torch
import yaml

from dml_core.methods import fair


from dml_core.core import paths
SHARED = ("backbone", "pretrained", "embedding_dim", "crop_size", "resize_size", "transform",
          "hflip", "rrc_scale", "batch_size", "sampler", "samples_per_class", "epochs",
          "eval_every", "validation_fraction", "lr", "seed")


@pytest.mark.parametrize("name", list(fair.SETTINGS))
def test_every_method_gets_the_same_shared_setting(name):
    s = fair.SETTINGS[name]
    variants = [v for v in fair.VARIANTS if fair.available(fair.VARIANTS[v].method,
                                                           s.datasets[0], s.backbone)]
    recipes = {v: fair.fair_recipe(v, name, s.datasets[0], seed=3) for v in variants}
    for key in SHARED:
        values = {v: r[key] for v, r in recipes.items() if key in r}
        assert len({repr(x) for x in values.values()}) == 1, (key, values)
    for r in recipes.values():
        bn = [r[k] for k in ("freeze_bn", "bn_freeze") if k in r]
        assert bn == [s.freeze_bn]
        assert r.get("warmup_epochs", 0) == s.warmup_epochs and r["seed"] == 3
        assert r.get("weight_decay", 0.0) == s.weight_decay


def test_only_loss_hyper_parameters_may_differ():
    r = fair.fair_recipe("asymptotic_proxy", "demo", momentum=0.7)
    assert r["momentum"] == 0.7
    with pytest.raises(fair.FairError, match="not loss hyper-parameters"):
        fair.fair_recipe("asymptotic_proxy", "demo", lr=0.1)
    with pytest.raises(fair.FairError, match="unknown variant"):
        fair.fair_recipe("nope", "demo")
    with pytest.raises(fair.FairError, match="unknown fair setting"):
        fair.fair_recipe("cgd", "nope")


def test_profile_overrides_rebuild_the_fair_recipe():
    from dml_core.methods.recipes import get_recipe

    for entry in fair.profile_runs("demo", tuple(fair.VARIANTS), (2,)):
        p = entry["parameters"]
        variant = entry["id"][len("fair_"):-len("_s2")]
        method = fair.VARIANTS[variant].method
        built = get_recipe(method, p["dataset"], p["backbone"], **p["overrides"])
        want = fair.fair_recipe(variant, "demo", seed=2)
        for k in want:
            if k not in ("name", "overrides", "base_name", "base_reported", "shortened"):
                assert built[k] == want[k], (entry["id"], k)


def test_generated_profiles_and_protocol_doc_are_in_sync():
    for name in fair.PROFILES:
        on_disk = yaml.safe_load((paths.REPO_ROOT / "profiles" / f"{name}.yaml").read_text())
        assert on_disk == fair.profile_document(name), (
            f"profiles/{name}.yaml is stale: run `python -m dml_core.methods.fair --write`")
    doc = (paths.REPO_ROOT / "docs" / "PROTOCOL.md").read_text()
    assert doc == fair.protocol_document(), "docs/PROTOCOL.md is stale: python -m dml_core.methods.fair --write"
    demo = fair.profile_document("demo")
    seeds = {r["id"].rsplit("_s", 1)[1] for r in demo["runs"] if r["id"].startswith("fair_")}
    assert len(seeds) >= 3
    study = fair.profile_document("study")
    assert len({r["id"].rsplit("_s", 1)[1] for r in study["runs"]
                if r["id"].startswith("fair_")}) >= 5
    # the reproduction: every published demo recipe, seed 0 in make report, 5 seeds in the study
    from dml_core.methods.recipes import METHODS

    paper = [r["id"] for r in demo["runs"] if r["id"].startswith("paper_")]
    assert paper == [f"paper_{m}_s0" for m in METHODS]
    assert len([r for r in study["runs"] if r["id"].startswith("paper_")]) == 5 * len(METHODS)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from dml_core.data import prepare

    root = tmp_path_factory.mktemp("demo_data")
    prepare("demo", root)
    return root


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(demo_root, tmp_path):
    from dml_core.training import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny = dict(epochs=1, max_steps_per_epoch=3, crop_size=16, resize_size=18)

        def run(seed, name):
            r = fair.fair_recipe("proxy_anchor", "demo", seed=seed)
            r.update(tiny)
            return train(r, tmp_path / name, data_root=demo_root, device="cpu", progress=False)

        a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    finally:
        torch.set_num_threads(threads)
    assert a["status"] == "complete"
    assert a["best"]["metrics"] == b["best"]["metrics"]  # bit for bit
    assert a["untrained"]["metrics"] == b["untrained"]["metrics"]
    assert a["best"]["metrics"]["val/dense/R@1"] is not None
    assert a["best"]["metrics"] != c["best"]["metrics"]


def test_every_run_of_the_gpu_profile_resolves():
    from dml_core.methods.recipes import get_recipe

    doc = fair.profile_document("fair")
    training = [r for r in doc["runs"] if r["id"].startswith("fair_")]
    assert len({r["parameters"]["dataset"] for r in training}) == 4
    for r in training:
        p = r["parameters"]
        method = p.get("method") or {v: k for k, v in fair.NOTEBOOK.items()}[r["notebook"]]
        recipe = get_recipe(method, p["dataset"], p["backbone"], **p["overrides"])
        assert recipe["backbone"] == "resnet50" and recipe["embedding_dim"] == 512
        assert recipe["validation_fraction"] > 0
