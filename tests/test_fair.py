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


def test_make_report_trains_the_preview_the_search_the_short_and_the_study_the_full_budget():
    """The demo profile (make report) trains the preview budget, every search trial the short
    budget, the study the setting's full (converged) budget."""
    from dml_core.methods.recipes import get_recipe
    from dml_core.study import tuning

    s = fair.setting("demo")
    short, preview = fair.short_budget(s), fair.preview_budget(s)
    assert short == {"epochs": s.short_epochs, "eval_every": s.short_eval_every}
    assert preview == {"epochs": s.preview_epochs, "eval_every": s.preview_eval_every}
    assert s.preview_epochs <= s.short_epochs < s.epochs
    for name, want in (("demo", preview), ("study", {"epochs": s.epochs, "eval_every": s.eval_every})):
        fair_runs = [r for r in fair.profile_document(name)["runs"] if r["id"].startswith("fair_")]
        assert fair_runs
        for r in fair_runs:
            p = r["parameters"]
            variant = r["id"][len("fair_"):].rsplit("_s", 1)[0]
            built = get_recipe(p.get("method", fair.VARIANTS[variant].method), p["dataset"],
                               p["backbone"], **p["overrides"])
            assert {k: built[k] for k in want} == want, (name, r["id"])
    for r in tuning.trial_runs("proxy_anchor", "demo", {}, (100, 101)):
        assert {k: r[k] for k in short} == short
    # the GPU setting: one budget
    assert fair.short_budget(fair.setting("fair")) == fair.preview_budget(fair.setting("fair")) == {}


def test_the_study_evaluates_the_epoch_its_last_third_starts_at():
    """The plateau criterion reads R@1(E) - R@1(E - round(E/3)); the study's evaluation grid
    (every eval_every epochs and the last) must hold both, or the criterion falls back to an
    earlier epoch and measures a longer stretch than a third (as the study of Dec 2026 did:
    20 epochs evaluated every 4 measured epochs 12 to 20)."""
    from dml_core.report.plateau import last_third_start

    s = fair.setting("demo")
    assert last_third_start(s.epochs) % s.eval_every == 0, (s.epochs, s.eval_every)


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

    from dml_core.models.standin import ensure_standin

    root = tmp_path_factory.mktemp("demo_data")
    prepare("demo", root)
    ensure_standin(root, verbose=False)  # the demo setting's pretrained trunk
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


# ------------------------------------------------------------- only the loss differs (issue 20)
BOOKKEEPING = {"name", "method", "overrides", "base_name", "base_reported", "shortened"}


def _built(variant, seed=0, num_classes=12):
    from dml_core.methods import build_method

    recipe = fair.fair_recipe(variant, "demo", seed=seed)
    torch.manual_seed(seed)
    return recipe, build_method(recipe, num_classes)


def _group_settings(group):
    return {k: v for k, v in group.items() if k != "params"}


def test_compared_methods_build_the_same_network_and_trunk_optimiser(demo_root):  # stand-in built
    """Every headline method: the same network (architecture and, for one seed, the same initial
    weights), the same optimiser and schedule; CGD, the declared exception, keeps its own network
    but gets the same optimiser settings and schedule."""
    headline = [v for v, x in fair.VARIANTS.items() if x.headline]
    built = {v: _built(v)[1] for v in headline}
    ref = built["proxy_anchor"]
    for v, m in built.items():
        assert type(m.optimizer) is type(ref.optimizer) is torch.optim.Adam, v
        assert _group_settings(m.optimizer.defaults) == _group_settings(ref.optimizer.defaults)
        for g, g_ref in zip(m.optimizer.param_groups[:2], ref.optimizer.param_groups[:2]):
            assert _group_settings(g) == _group_settings(g_ref), v  # trunk, head
        assert type(m.scheduler) is type(ref.scheduler)
        sched, sched_ref = m.scheduler.state_dict(), ref.scheduler.state_dict()
        for key in ("step_size", "gamma", "last_epoch"):
            assert sched[key] == sched_ref[key], (v, key)
        assert sched["base_lrs"][:2] == sched_ref["base_lrs"][:2], v  # trunk, head
        assert (m.freeze_bn, m.grad_clip_value, m.warmup_epochs) == \
            (ref.freeze_bn, ref.grad_clip_value, ref.warmup_epochs), v
        if v in fair.DEVIATIONS and "own network" in fair.DEVIATIONS[v]:
            assert v == "cgd"  # the one declared exception
            continue
        assert repr(m.model) == repr(ref.model), v
        mine, theirs = m.model.state_dict(), ref.model.state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), v  # same seed, same weights
        trunk = [p.shape for p in m.optimizer.param_groups[0]["params"]]
        assert trunk == [p.shape for p in ref.optimizer.param_groups[0]["params"]]
        proxies = getattr(m.criterion, "proxies", None)
        if isinstance(proxies, torch.nn.Parameter):  # one proxy rule: init and learning rate
            assert torch.equal(proxies, ref.criterion.proxies), v
            lr = [g["lr"] for g in m.optimizer.param_groups if any(p is proxies for p in g["params"])]
            assert lr == [ref.optimizer.param_groups[2]["lr"]], v
    assert repr(built["cgd"].model) != repr(ref.model)


@pytest.mark.parametrize("name", list(fair.SETTINGS))
def test_resolved_recipes_differ_only_in_declared_loss_keys(name):
    s = fair.SETTINGS[name]
    for ds in s.datasets:
        recipes = {v: fair.fair_recipe(v, name, ds, seed=1) for v in fair.VARIANTS
                   if fair.available(fair.VARIANTS[v].method, ds, s.backbone)}
        for a, ra in recipes.items():
            for b, rb in recipes.items():
                own = set(fair.LOSS_HPARAMS[ra["method"]]) | set(fair.LOSS_HPARAMS[rb["method"]])
                differ = {k for k in set(ra) | set(rb) - BOOKKEEPING
                          if ra.get(k) != rb.get(k)} - BOOKKEEPING
                assert differ <= own, (name, ds, a, b, sorted(differ - own))
        for r in recipes.values():
            assert r["setup"] == "shared"
            from dml_core.methods import METHODS
            assert all(r[k] is None for k in METHODS[r["method"]].paper_only)


def test_pp_is_proxy_anchor_plus_the_positive_proxy_gradient(demo_root):  # stand-in built
    """Under the shared build, PP at Proxy-Anchor's (tuned) values is Proxy-Anchor's recipe plus
    ``positive_proxy``; headline PP differs from it only in its own searched loss keys; with the
    gradient off it trains exactly as Proxy-Anchor (bit for bit), with it on the step differs."""
    pa = fair.fair_recipe("proxy_anchor", "demo", seed=0)
    pp = fair.fair_recipe("pp_on_pa_values", "demo", seed=0)
    differ = {k for k in set(pp) | set(pa) if pp.get(k) != pa.get(k)} - BOOKKEEPING
    assert differ <= {"positive_proxy", "loss", "scale"}, differ
    assert pp["positive_proxy"] is True and pp["loss"] == "proxy_anchor"
    tuned = fair.fair_recipe("pp_on", "demo", seed=0)
    differ = {k for k in set(tuned) | set(pp) if tuned.get(k) != pp.get(k)} - BOOKKEEPING
    assert differ <= set(fair.SEARCH_SPACE["positive_proxy"]), differ

    from dml_core.methods import build_method

    def two_steps(recipe):
        torch.manual_seed(0)
        m = build_method(recipe, 6)
        g = torch.Generator().manual_seed(1)
        images, labels = torch.randn(8, 3, 24, 24, generator=g), torch.arange(8) % 6
        m.model.train()
        m.on_epoch_start(1)
        losses = []
        for _ in range(2):
            m.zero_grad()
            out = m.training_step(images, labels)
            out.loss.backward()
            m.clip_gradients()
            m.optimizer_step(1)
            losses.append(float(out.loss.detach()))
        return losses, m.model.state_dict(), m.criterion.proxies.detach().clone()

    off = dict(pp, positive_proxy=False)
    l_off, w_off, p_off = two_steps(off)
    l_pa, w_pa, p_pa = two_steps(pa)
    assert l_off == l_pa and torch.equal(p_off, p_pa)
    assert all(torch.equal(w_off[k], w_pa[k]) for k in w_pa)
    l_on, w_on, _ = two_steps(pp)
    assert l_on[0] == l_pa[0] and l_on[1] != l_pa[1]  # same start, another gradient


def test_no_setting_is_silently_ignored():
    from dml_core.methods import METHODS, build_method
    from dml_core.methods.recipes import get_recipe
    from dml_core.methods.shared import SHARED_KEYS

    with pytest.raises(ValueError, match="does not have"):
        build_method(get_recipe("cgd", "demo", "resnet18_s2", warmup_epochs=1), 4)
    stray = dict(fair.fair_recipe("pp_on", "demo"), proxy_lr=0.01)
    with pytest.raises(ValueError, match="not read under setup 'shared'"):
        build_method(stray, 4)
    # every key a method reads is shared, its own (loss) key, or read by its paper build only
    import sys
    for name, cls in METHODS.items():
        if not hasattr(cls, "loss_spec"):
            continue
        mod = sys.modules[cls.__module__]
        defaults = getattr(cls, "defaults", None) or mod.DEFAULTS
        unclassified = set(defaults) - set(SHARED_KEYS) - set(cls.loss_spec.keys) \
            - set(cls.paper_only)
        assert not unclassified, (name, unclassified)
# ------------------------------------------------------------------------------ the ViT track
def test_vit_settings_are_the_fair_setting_with_the_vit_protocols_trunk_choices():
    """Same seeds, tuning budget, validation selection, batch, epochs and schedule as the ResNet
    track; the trunk, the embedding size (384 / 128), the 224-px input and AdamW at the
    hyperbolic-ViT protocol's lr are the ViT settings' own."""
    import dataclasses

    from dml_core.models.conventions import input_convention

    own = {"name", "backbone", "embedding_dim", "crop_size", "resize_size", "optimizer", "lr",
           "weight_decay", "notes"}
    base = dataclasses.asdict(fair.SETTINGS["fair"])
    assert fair.VIT_SETTINGS == ("vit_dino", "vit_dino_d128", "vit_dinov2", "vit_dinov2_d128")
    lrs = {bb: lr for _, bb, _, lr, _ in fair.VIT_TRUNKS}
    for name in fair.VIT_SETTINGS:
        s = fair.SETTINGS[name]
        d = dataclasses.asdict(s)
        assert {k: v for k, v in d.items() if k not in own} == \
            {k: v for k, v in base.items() if k not in own}, name
        assert s.embedding_dim == (128 if name.endswith("_d128") else 384)
        assert (s.optimizer, s.weight_decay, s.lr, s.crop_size) == ("AdamW", 0.01, lrs[s.backbone], 224)
        assert s.crop_size % input_convention(s.backbone).patch_size == 0
    assert lrs == {"vit_s16_dino": 1e-5, "vit_s14_dinov2": 1e-5}


def test_every_run_of_the_vit_profile_resolves_with_the_fair_profiles_grid():
    from dml_core.methods.recipes import get_recipe

    doc = fair.profile_document("fair_vit")
    ids = [r["id"] for r in doc["runs"]]
    assert len(ids) == len(set(ids)) == 720 + 3  # + preparation, tables, figures
    # per setting, the fair profile's runs: same variants, data sets, loss values and seeds
    resnet = {r["id"][len("fair_"):] for r in fair.profile_document("fair")["runs"]
              if r["id"].startswith("fair_")}
    for name in fair.VIT_SETTINGS:
        mine = {i[len(f"fair_{name}_"):] for i in ids if i.startswith(f"fair_{name}_")
                and not any(i.startswith(f"fair_{o}_") for o in fair.VIT_SETTINGS
                            if o != name and o.startswith(name))}
        assert mine == resnet, name
    by_id = {r["id"]: r for r in doc["runs"]}
    for name in fair.VIT_SETTINGS:
        s = fair.SETTINGS[name]
        for rest in sorted(resnet)[::9]:  # every method and data set, a few seeds and values
            r = by_id[f"fair_{name}_{rest}"]
            p = r["parameters"]
            method = p.get("method") or {v: k for k, v in fair.NOTEBOOK.items()}[r["notebook"]]
            recipe = get_recipe(method, p["dataset"], p["backbone"], **p["overrides"])
            assert recipe["backbone"] == s.backbone and recipe["embedding_dim"] == s.embedding_dim
            assert recipe["validation_fraction"] == 0.2 and recipe["lr"] == s.lr
            assert recipe["shared_optimizer"] == "adamw" and recipe["weight_decay"] == 0.01


def test_protocol_doc_carries_the_vit_setting_and_its_sources():
    doc = (paths.REPO_ROOT / "docs" / "PROTOCOL.md").read_text()
    section = doc[doc.index("## The ViT track"):doc.index("## Profiles")]
    for text in ("Hyperbolic Vision Transformers", "CVPR 2022", "github.com/htdt/hyp_metric",
                 "class token", "CGD pools the patch tokens", "vit_s16_dino", "vit_s14_dinov2",
                 "384 and 128", "AdamW", "--lr 1e-5", "has no ViT entry"):
        assert text in section, text
    assert "`fair_vit`" in doc[doc.index("## Profiles"):]


@pytest.mark.parametrize("momentum", [0.5, 0.3])
def test_an_ablation_the_search_made_a_headline_configuration_is_trained_once(tmp_path,
                                                                             momentum):
    """When the search chooses AsymptoticProxy's momentum 0.5, its m = 0.5 ablation IS the
    tuned configuration: no second set of runs, and no comparison of it with itself."""
    import json

    from dml_core.methods.fair import COMPARISONS, comparisons, tuning_file, variant_aliases

    doc = json.loads(tuning_file("demo").read_text())
    doc["chosen"]["asymptotic_proxy"]["momentum"] = momentum
    path = tuning_file("demo", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    aliases = variant_aliases("demo", tmp_path)
    family = comparisons("demo", tmp_path)
    if momentum == 0.5:
        assert aliases == {"asymptotic_proxy_m0.5": "asymptotic_proxy"}
        assert [c[0] for c in family] == [c[0] for c in COMPARISONS
                                          if c[0] != "momentum: tuned − 0.5 (the paper's)"]
        assert ("momentum: 0.9 − 0.5", "asymptotic_proxy_m0.9", "asymptotic_proxy") in family
    else:
        assert aliases == {} and family == COMPARISONS
    for label, a, b in family:
        assert a != b and a not in aliases and b not in aliases
