"""Recipes: every authors' README row has one, with the original code's numbers; names are validated; the full
models have the parameter counts of the authors' table."""
from __future__ import annotations

import pytest
import torch

from dml_core.methods import recipes
from dml_core.methods import build_method
from dml_core.methods.recipes import RecipeError, demo_recipe, get_recipe, list_recipes, recipe_by_name

ARCH_KEYS = ("name", "method", "dataset", "backbone", "pretrained", "crop", "embedding_dim",
             "epochs", "batch_size", "sampler", "samples_per_class", "drop_last", "transform",
             "crop_size", "resize_size", "eval_batch_size", "eval_every", "seed", "num_workers",
             "validation_fraction", "max_steps_per_epoch", "reported")

# Every row of the authors' READMEs (and the PA README commands), by name.
EXPECTED = {
    "normsoftmax": [f"normsoftmax/{d}/resnet50{c}" for d, c in [
        ("car", "/uncropped"), ("car", "/cropped"), ("cub", "/uncropped"), ("cub", "/cropped"),
        ("sop", ""), ("isc", "")]],
    "cgd": [f"cgd/{d}/{b}{c}" for b in ("resnet50", "resnext50_32x4d") for d, c in [
        ("car", "/uncropped"), ("car", "/cropped"), ("cub", "/uncropped"), ("cub", "/cropped"),
        ("sop", ""), ("isc", "")]],
    "asymptotic_proxy": [f"asymptotic_proxy/{d}/{b}" for d in ("car", "cub", "sop", "isc")
                         for b in ("resnet50", "bninception", "googlenet")],
    "positive_proxy": [f"positive_proxy/{d}/{b}/{l}" for d in ("car", "cub")
                       for b in ("resnet50", "bninception", "googlenet")
                       for l in ("proxy_anchor", "normalized_softmax")],
    "dynamic_margin": [f"dynamic_margin/{d}/{b}" for d in ("cub", "car", "sop", "isc")
                       for b in ("bninception", "resnet50")],
    "proxy_anchor": [f"proxy_anchor/{d}/{b}" for d, b in [
        ("cub", "bninception"), ("cub", "resnet50"), ("car", "bninception"), ("car", "resnet50"),
        ("sop", "bninception"), ("isc", "bninception")]],
}


def test_every_seed_row_has_a_recipe():
    for method, names in EXPECTED.items():
        assert sorted(list_recipes(method, include_demo=False)) == sorted(names), method
    assert len(list_recipes(include_demo=False)) == sum(map(len, EXPECTED.values())) == 56
    assert sorted(list_recipes(dataset="demo")) == sorted(f"{m}/demo/resnet18_s2" for m in EXPECTED)


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_has_the_architecture_keys_and_the_methods_options(name):
    import importlib

    r = recipe_by_name(name)
    assert r["name"] == name and all(k in r for k in ARCH_KEYS)
    assert r["sampler"] in ("m_per_class", "shuffle")
    assert r["transform"] in ("squash_random_crop", "cgd", "random_resized_crop")
    module = {"proxy_anchor": "dynamic_margin"}.get(r["method"], r["method"])
    mod = importlib.import_module(f"dml_core.methods.{module}")
    defaults = {"proxy_anchor": "PA_DEFAULTS", "dynamic_margin": "DM_DEFAULTS"}.get(
        r["method"], "DEFAULTS")
    # every option of the method is in the recipe, so it can be overridden by name
    assert set(getattr(mod, defaults)) <= set(r), set(getattr(mod, defaults)) - set(r)


def test_reported_keys_exist_in_the_reported_table():
    from dml_core.report import reported

    keys = set(reported.reported_keys())
    for name in list_recipes():
        key = recipe_by_name(name)["reported"]
        assert key is None or key in keys, (name, key)
    assert recipe_by_name("positive_proxy/car/resnet50/proxy_anchor")["reported"] == \
        "positive_proxy/car/resnet50"
    assert recipe_by_name("positive_proxy/car/resnet50/normalized_softmax")["reported"] is None
    assert all(recipe_by_name(n)["reported"] is None for n in list_recipes(dataset="demo"))


# ------------------------------------------------------------------------------ seed values
def test_normsoftmax_rows():
    r = get_recipe("normsoftmax", "car", "resnet50")
    assert (r["embedding_dim"], r["epochs"], r["batch_size"], r["samples_per_class"]) == \
        (2048, 31, 75, 25)
    assert (r["lr"], r["momentum"], r["weight_decay"], r["temperature"], r["warmup_epochs"]) == \
        (0.01, 0.9, 1e-4, 0.05, 1)
    assert (r["transform"], r["resize_size"], r["crop_size"], r["freeze_bn"]) == \
        ("squash_random_crop", 256, 224, False)
    assert get_recipe("normsoftmax", "cub", "resnet50", crop=True)["reported"] == \
        "normsoftmax/cub/resnet50/cropped"


def test_cgd_rows():
    gd = {("car", False): "SG", ("car", True): "SG", ("cub", False): "MG", ("cub", True): "MG",
          ("sop", False): "SG", ("isc", False): "GS"}
    for (ds, crop), config in gd.items():
        for bb in ("resnet50", "resnext50"):  # the seed CLI spelling is accepted
            r = get_recipe("cgd", ds, bb, crop=crop)
            assert r["gd_config"] == config and r["backbone"] in ("resnet50", "resnext50_32x4d")
            assert (r["embedding_dim"], r["epochs"], r["batch_size"], r["samples_per_class"]) == \
                (1536, 20, 128, 4)
            assert (r["smoothing"], r["temperature"], r["margin"], r["lr"]) == (0.1, 0.5, 0.1, 1e-4)
            assert r["freeze_bn"] and r["gem_clamp"] and r["crop"] == crop
            assert (r["transform"], r["resize_size"], r["crop_size"]) == ("cgd", 252, 224)


def test_asymptotic_proxy_rows_use_the_real_readme_settings():
    for ds in ("car", "cub", "sop", "isc"):
        small = ds in ("car", "cub")
        for bb in ("resnet50", "inception", "googlenet"):
            r = get_recipe("asymptotic_proxy", ds, bb)
            assert r["temperature"] == (0.03 if small else 0.05)
            assert r["lr"] == (1e-4 if small else 4e-5)
            assert r["momentum"] == (0.5 if small else 0.95)
            assert (r["embedding_dim"], r["epochs"], r["batch_size"], r["sampler"],
                    r["drop_last"]) == (512, 30, 128, "shuffle", False)
            assert (r["crop_size"], r["resize_size"], r["freeze_bn"]) == (256, 292, True)


def test_positive_proxy_rows():
    r = get_recipe("positive_proxy", "cub", "bninception")
    assert (r["loss"], r["positive_proxy"], r["alpha"], r["margin"], r["scale"]) == \
        ("proxy_anchor", False, 32.0, 0.1, 32.0)
    assert (r["lr"], r["refactor_lr"], r["proxy_lr"], r["weight_decay"]) == (1e-4, 1e-4, 1e-2, 0.0)
    assert (r["lr_step"], r["lr_gamma"], r["warmup_epochs"], r["epochs"], r["batch_size"]) == \
        (5, 0.5, 2, 20, 64)
    assert (r["crop_size"], r["resize_size"]) == (224, 256)
    ns = get_recipe("positive_proxy", "cub", "bninception", loss="normalized_softmax")
    assert ns["name"] == "positive_proxy/cub/bninception/normalized_softmax"
    ab = get_recipe("positive_proxy", "car", "resnet50", loss="positive_only", positive_proxy=False)
    assert ab["loss"] == "positive_only" and ab["reported"] is None
    pp = get_recipe("positive_proxy", "car", "resnet50", positive_proxy=True)
    assert pp["positive_proxy"] is True
    with pytest.raises(RecipeError, match="proxy_anchor, normalized_softmax, positive_only"):
        get_recipe("positive_proxy", "car", "resnet50", loss="arcface")


# (dataset, backbone): batch, lr, warm, freeze_bn (--bn-freeze), step, gamma, epochs, alpha_p = alpha_n
LDM_README = {
    ("cub", "bninception"): (180, 1e-4, 1, True, 20, 0.5, 40, 48),
    ("cub", "resnet50"): (120, 1e-4, 5, True, 10, 0.5, 40, 48),
    ("car", "bninception"): (180, 1e-4, 1, True, 20, 0.5, 40, 48),
    ("car", "resnet50"): (120, 1e-4, 5, True, 10, 0.5, 40, 48),
    ("sop", "bninception"): (180, 6e-4, 1, False, 20, 0.25, 60, 32),  # corrected: 60, not 40
    ("sop", "resnet50"): (180, 6e-4, 5, False, 10, 0.5, 60, 32),
    ("isc", "bninception"): (180, 6e-4, 1, False, 20, 0.25, 60, 32),  # corrected: AMLoss, 60
    ("isc", "resnet50"): (180, 6e-4, 5, False, 10, 0.5, 60, 32),
}
PA_README = {
    ("cub", "bninception"): (180, 1e-4, 1, True, 10, 0.5),
    ("cub", "resnet50"): (120, 1e-4, 5, True, 5, 0.5),
    ("car", "bninception"): (180, 1e-4, 1, True, 20, 0.5),
    ("car", "resnet50"): (120, 1e-4, 5, True, 10, 0.5),
    ("sop", "bninception"): (180, 6e-4, 1, False, 20, 0.25),
    ("isc", "bninception"): (180, 6e-4, 1, False, 20, 0.25),
}


def test_dynamic_margin_rows_follow_the_readme_commands_with_the_spec_fixes():
    for (ds, bb), (batch, lr, warm, bnf, step, gamma, epochs, alpha) in LDM_README.items():
        r = get_recipe("dynamic_margin", ds, bb)
        assert r["method"] == "dynamic_margin"
        assert (r["batch_size"], r["lr"], r["warmup_epochs"], r["freeze_bn"], r["lr_step"],
                r["lr_gamma"], r["epochs"], r["alpha_p"], r["alpha_n"]) == \
            (batch, lr, warm, bnf, step, gamma, epochs, alpha, alpha)
        assert (r["mrg_lr"], r["mrg_lr_step"], r["mrg_lr_gamma"], r["margin"],
                r["delta"], r["lam"]) == (1e-4, 10, 0.5, 0.1, 0.1, 1.0)
        assert (r["weight_decay"], r["proxy_lr_mult"], r["grad_clip_value"], r["embedding_dim"],
                r["sampler"], r["drop_last"]) == (1e-4, 100.0, 10.0, 512, "shuffle", True)
        assert r["unfreeze_bn_affine_after_warmup"] is True
    # the original code's spelling of the data sets and backbones
    assert get_recipe("dynamic_margin", "Inshop", "bn_inception")["name"] == \
        "dynamic_margin/isc/bninception"


def test_proxy_anchor_rows_follow_the_pa_readme():
    for (ds, bb), (batch, lr, warm, bnf, step, gamma) in PA_README.items():
        r = get_recipe("proxy_anchor", ds, bb)
        assert (r["batch_size"], r["lr"], r["warmup_epochs"], r["freeze_bn"], r["lr_step"],
                r["lr_gamma"], r["epochs"], r["alpha"], r["margin"]) == \
            (batch, lr, warm, bnf, step, gamma, 60, 32, 0.1)
        assert "mrg_lr" not in r


def test_one_name_per_setting_and_the_readme_names_as_aliases():
    """BN freezing is ``freeze_bn`` and the step schedule ``lr_step``/``lr_gamma`` in every
    method; the LDM/PA command-line names are accepted as override keys and recorded under the
    recipe's name."""
    from dml_core.methods.recipes import KEY_ALIASES, list_recipes, recipe_by_name

    for name in list_recipes():
        r = recipe_by_name(name)
        assert not set(KEY_ALIASES) & set(r), name
        assert "freeze_bn" in r, name
        assert "lr_step" in r, name  # every row: the shared build's schedule key
        if "lr_milestones" in r:  # CGD's paper build: MultiStepLR milestones, no lr_step
            assert r["method"] == "cgd" and r["lr_step"] is None, name
    a = get_recipe("dynamic_margin", "cub", "resnet50", bn_freeze=False, lr_decay_step=3,
                   lr_decay_gamma=0.1)
    b = get_recipe("dynamic_margin", "cub", "resnet50", freeze_bn=False, lr_step=3, lr_gamma=0.1)
    assert a == b and a["overrides"] == {"freeze_bn": False, "lr_step": 3, "lr_gamma": 0.1}
    with pytest.raises(RecipeError, match="name the same setting"):
        get_recipe("proxy_anchor", "cub", "resnet50", bn_freeze=True, freeze_bn=True)


def test_demo_rows_are_the_published_rows_with_only_the_forced_changes():
    """Every method key of a demo recipe (optimiser, learning rates, BN policy, warm-up, schedule,
    loss hyper-parameters) is the published CUB row's: only the data keys of DEMO_SETTINGS and the
    epochs and batch of the declaration's changes differ (docs/DEMO.md lists them)."""
    from dml_core.methods.recipes import DEMO_SETTINGS, METHODS
    from dml_core.methods.registry import SPECS

    for method in METHODS:
        changes = SPECS[method].demo.changes
        full = recipe_by_name(f"{method}/{SPECS[method].demo.base}")
        demo = get_recipe(method, "demo", "resnet18_s2")
        assert full["method"] == method and full["dataset"] == "cub" and set(demo) == set(full)
        assert set(changes) <= {"epochs", "batch_size", "samples_per_class"}
        for key, value in {**DEMO_SETTINGS, **changes}.items():
            assert demo[key] == value, (method, key)
        changed = {k for k in full if demo[k] != full[k]} - {"name"}
        assert changed <= set(DEMO_SETTINGS) | set(changes), (method, changed)
    assert demo_recipe("asymptotic_proxy")["momentum"] == 0.5  # the paper's, not a tuned value


# ------------------------------------------------------------------------------ validation
def test_unknown_names_raise_and_name_the_choices():
    with pytest.raises(RecipeError, match="valid methods: normsoftmax, cgd"):
        get_recipe("arcface", "cub", "resnet50")
    with pytest.raises(RecipeError, match="valid data sets: car, cub, demo"):
        get_recipe("positive_proxy", "sop", "resnet50")
    with pytest.raises(RecipeError, match="valid backbones: resnet50, resnext50_32x4d"):
        get_recipe("cgd", "cub", "bninception")
    with pytest.raises(RecipeError, match=r"crop in \[False\]"):
        get_recipe("cgd", "sop", "resnet50", crop=True)
    with pytest.raises(RecipeError, match=r"unknown recipe key\(s\) \['lrr'\].*valid keys:.*lr"):
        get_recipe("cgd", "cub", "resnet50", lrr=0.1)
    with pytest.raises(RecipeError, match="valid names"):
        recipe_by_name("cgd/cub")
    assert issubclass(RecipeError, ValueError)


def test_overrides_apply_and_recipes_are_fresh_copies():
    a = get_recipe("cgd", "cub", "resnet50", crop=True, epochs=2, lr_milestones=[1])
    assert a["epochs"] == 2 and a["lr_milestones"] == [1]
    a["epochs"] = 99
    b = get_recipe("cgd", "cub", "resnet50", crop=True)
    assert b["epochs"] == 20 and b["lr_milestones"] is None
    assert recipe_by_name("cgd/cub/resnet50/cropped") == b


def test_demo_recipes_are_small_cpu_profiles():
    for method in EXPECTED:
        r = demo_recipe(method)
        assert r == get_recipe(method, "demo", "resnet18_s2")
        assert r["pretrained"] is True and r["backbone"] == "resnet18_s2"  # the stand-in trunk
        assert r["crop_size"] <= 48 and r["embedding_dim"] <= 128 and r["epochs"] <= 8
        assert r["batch_size"] <= 128 and r["validation_fraction"] > 0
        assert r["hflip"] is False  # a mirrored number is another number
        if r["sampler"] == "m_per_class":  # the demo has 50 training classes
            assert r["batch_size"] // r["samples_per_class"] <= 50
    for name in list_recipes(include_demo=False):  # every seed flips and crops as torchvision
        r = recipe_by_name(name)
        assert r["hflip"] is True and r["rrc_scale"] == [0.08, 1.0], name


# ------------------------------------------------------------------------------ model sizes
# Seed README tables (Params, M): NormSoftmax R50; CGD R50 / ResNeXt50; car (98 classes),
# sop (11,318), isc (3,997). Model + criterion, as thop counted them (proxies included).
PARAMS = [
    ("normsoftmax", "resnet50", {"car": 27.91, "sop": 50.88, "isc": 35.89}),
    ("cgd", "resnet50", {"car": 26.86, "sop": 49.85, "isc": 34.85}),
    ("cgd", "resnext50_32x4d", {"car": 26.33, "sop": 49.32, "isc": 34.32}),
]
CLASSES = {"car": 98, "cub": 100, "sop": 11318, "isc": 3997}


@pytest.mark.parametrize("method,backbone,table", PARAMS)
def test_full_recipes_have_the_seed_parameter_counts(method, backbone, table):
    try:
        from dml_core.models.complexity import count_parameters
    except ImportError:  # pragma: no cover
        def count_parameters(*mods):
            return sum(p.numel() for m in mods for p in m.parameters())
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for ds, millions in table.items():
            m = build_method(get_recipe(method, ds, backbone, pretrained=False), CLASSES[ds])
            assert round(count_parameters(m.model, m.criterion) / 1e6, 2) == millions, ds
            del m
    finally:
        torch.set_num_threads(n)
    if method == "normsoftmax":  # car and cub share the figure (98 vs 100 classes, 27.91 both)
        m = build_method(get_recipe(method, "cub", backbone, pretrained=False), CLASSES["cub"])
        assert round(count_parameters(m.model, m.criterion) / 1e6, 2) == 27.91


def test_vit_rows_are_the_resnet50_rows_with_the_trunk_swapped():
    """Derived rows (no paper published one): each uncropped ResNet-50 row per ViT, its method
    keys unchanged, the ViTs' 224-px input, no reported number; not among the original code's rows."""
    from dml_core.methods.recipes import VIT_BACKBONES

    vit = [n for n in list_recipes() if any(f"/{bb}" in n for bb in VIT_BACKBONES)]
    base = [n for n in list_recipes(include_demo=False)
            if "/resnet50" in n and "/cropped" not in n]
    assert len(vit) == len(VIT_BACKBONES) * len(base) == 44
    assert not set(vit) & set(list_recipes(include_demo=False))
    for name in base:
        r = recipe_by_name(name)
        for bb in VIT_BACKBONES:
            v = recipe_by_name(name.replace("/resnet50", f"/{bb}").replace("/uncropped", ""))
            assert (v["backbone"], v["crop_size"], v["resize_size"], v["reported"]) == (bb, 224, 256, None)
            same = {k for k in r if k not in ("name", "backbone", "crop_size", "resize_size", "reported")}
            assert {k: v[k] for k in same} == {k: r[k] for k in same}, name
    r = get_recipe("positive_proxy", "cub", "vit_s14_dinov2", loss="normalized_softmax")
    assert r["name"] == "positive_proxy/cub/vit_s14_dinov2/normalized_softmax"
    with pytest.raises(RecipeError, match="valid backbones"):
        get_recipe("proxy_anchor", "sop", "vit_s16_dino")  # no ResNet-50 row to derive from


def test_adam_family_optimizer_keys_keep_the_seeds_adam():
    """AsymptoticProxy and CGD build Adam without weight decay, as the original code, unless a
    recipe asks for AdamW (the ViT track)."""
    for method in ("asymptotic_proxy", "cgd"):
        r = get_recipe(method, "car", "resnet50", pretrained=False, embedding_dim=8)
        assert (r["optimizer"], r["weight_decay"]) == ("adam", 0.0)
        with torch.device("meta"):
            m = build_method(r, 3)
        assert type(m.optimizer) is torch.optim.Adam and m.optimizer.defaults["weight_decay"] == 0.0
        with torch.device("meta"):
            m = build_method(dict(r, optimizer="adamw", weight_decay=0.01), 3)
        assert type(m.optimizer) is torch.optim.AdamW and m.optimizer.defaults["weight_decay"] == 0.01
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_method(dict(r, optimizer="sgd", pretrained=False), 3)
