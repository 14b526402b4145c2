"""Every method's declaration and every hyper-parameter set behind a row of the authors' READMEs,
as plain data.

A recipe is a flat ``dict``; its keys, with their types, ranges and meanings, are those of the
recipe schema (:mod:`dml_core.methods.schema`; ``docs/RECIPE_KEYS.md`` is generated from it by
``python -m dml_core.methods --write``). Every row is checked against the schema by
:func:`check_rows` (the tests run it), and every override when it is applied.

Each section below builds one method's rows and declares the method once
(:func:`dml_core.methods.registry.declare_method`: its class, notebook, label, loss
hyper-parameters, rows and demo recipe); every other map of method names is derived from those
declarations.

    >>> r = get_recipe("cgd", "cub", "resnet50", crop=True)
    >>> r["name"], r["gd_config"]
    ('cgd/cub/resnet50/cropped', 'MG')

Rows (all from the authors' READMEs, with the corrections noted):

* ``normsoftmax`` (leftthomas/NormSoftmax): R50, car/cub × {uncropped, cropped}, sop, isc. D = 2048 (the parameter
  table proves it, not the usage example's 1024); ``epochs = 31`` = 1 warm-up + ``--num_epochs 30``.
* ``cgd`` (leftthomas/CGD): {resnet50, resnext50_32x4d} × car/cub × {uncropped, cropped}, sop, isc;
  gd_config SG for car and sop, MG for cub, GS for isc.
* ``asymptotic_proxy`` (leftthomas/ProxyAnchor at ``b3786cd``): 4 data sets × {resnet50, bninception,
  googlenet}; T 0.03 / 0.05 and lr 1e-4 / 4e-5 (car, cub / sop, isc), momentum 0.5 / 0.95 (the
  real README of ``c30c146``; the README table at ``b3786cd`` is a placeholder, so ``reported``
  points at the real numbers).
* ``positive_proxy`` (leftthomas/ProxyAnchor at ``ecce2af``): car/cub × 3 backbones × ``loss`` ∈
  {proxy_anchor, normalized_softmax} (the README table is AsymptoticProxy's carry-over; it is the
  ``reported`` key of the ``proxy_anchor`` rows only, the README's default loss). ``loss =
  "positive_only"`` (the ``ebad4cb`` ablation) is accepted as a variant of the proxy_anchor row.
* ``dynamic_margin`` (wyfan714/LDM): one recipe per row of the README command table, with two
  corrections: In-shop Inception-BN runs AMLoss (not Proxy_Anchor); SOP and In-shop train 60
  epochs with both backbones.
* ``proxy_anchor``: the baseline, the official Proxy-Anchor README commands.

``get_recipe(method, "demo", "resnet18_s2")`` (or :func:`demo_recipe`) gives every method's published
recipe on the embedded demo data set, fine-tuning the demo's pretrained stand-in trunk (tiny
images, a few epochs; :func:`_demo_rows`).

``get_recipe(method, dataset, "vit_s16_dino")`` / ``"vit_s14_dinov2"``: no author published a ViT
row; each uncropped ResNet-50 row has a copy with the trunk swapped and the ViTs' 224-px input
(:func:`_vit_rows`), the starting point of the fair protocol's ViT track
(:mod:`dml_core.methods.fair`, which sets everything but the loss). Like the demo rows they are
derived rows: ``list_recipes(include_demo=False)`` lists the original code's rows only.
"""
from __future__ import annotations

import copy
from typing import Any

from dml_core.methods.registry import SPECS, Demo, declare_method, published
from dml_core.methods.schema import (KEY_ALIASES, KEYS, NEUTRAL_KEYS, RECORD_KEYS, ROW_DEFAULTS,
                                     SHORTENING_KEYS, RecipeError, canonical, check_recipe,
                                     coerce, describe, unread_by_shared_build)

__all__ = [
    "METHODS",
    "DATASETS",
    "BACKBONE_ALIASES",
    "DATASET_ALIASES",
    "DEMO_SETTINGS",
    "get_recipe",
    "list_recipes",
    "recipe_by_name",
    "demo_recipe",
    "RecipeError",
    "KEY_ALIASES",
    "keys_markdown",
    "check_rows",
]

# Spellings used by the seed CLIs, mapped to the registry names.
BACKBONE_ALIASES = {
    "resnext50": "resnext50_32x4d",
    "inception": "bninception",
    "bn_inception": "bninception",
    "bn-inception": "bninception",
}
DATASET_ALIASES = {"cars": "car", "cars196": "car", "cub200": "cub", "SOP": "sop",
                   "Inshop": "isc", "inshop": "isc", "in-shop": "isc"}


# ------------------------------------------------------------------------------------ helpers
def _common(**kw: Any) -> dict[str, Any]:
    """A row: the schema's defaults (:data:`~dml_core.methods.schema.ROW_DEFAULTS`: pretrained,
    uncropped, every epoch evaluated, no validation split, flips, torchvision's crop scale, no
    cache), then ``kw``."""
    base = copy.deepcopy(ROW_DEFAULTS)
    base.update(kw)
    return base


def _crop_tag(dataset: str, crop: bool) -> str:
    if dataset in ("car", "cub"):
        return "/cropped" if crop else "/uncropped"
    return ""


# --------------------------------------------------------------------------------- NormSoftmax
def _normsoftmax_rows(method: str) -> list[dict[str, Any]]:
    rows = []
    for ds, crop in [("car", False), ("car", True), ("cub", False), ("cub", True), ("sop", False),
                     ("isc", False)]:
        name = f"{method}/{ds}/resnet50{_crop_tag(ds, crop)}"
        rows.append(_common(
            name=name, method=method, dataset=ds, backbone="resnet50", crop=crop,
            embedding_dim=2048, epochs=31, batch_size=75, sampler="m_per_class",
            samples_per_class=25, drop_last=True, transform="squash_random_crop", crop_size=224,
            resize_size=256, eval_batch_size=75, seed=0, reported=name,
            # method keys (dml_core.methods.normsoftmax)
            lr=0.01, momentum=0.9, weight_decay=1e-4, temperature=0.05, warmup_epochs=1,
            lr_step=None, lr_gamma=0.1, freeze_bn=False, refactor="linear_bias",
            proxy_weight_decay=True, optimizer="sgd",
        ))
    return rows


declare_method(
    "normsoftmax", "dml_core.methods.normsoftmax:NormSoftmaxMethod", label="NormSoftmax",
    color="#0C5DA5", notebook="01_normsoftmax", loss_hparams=("temperature",),
    rows=_normsoftmax_rows,
    demo=Demo("cub/resnet50/uncropped", dict(epochs=6, batch_size=15, samples_per_class=5)))


# ------------------------------------------------------------------------------------------ CGD
CGD_GD_CONFIG = {"car": "SG", "cub": "MG", "sop": "SG", "isc": "GS"}


def _cgd_rows(method: str) -> list[dict[str, Any]]:
    rows = []
    for bb in ("resnet50", "resnext50_32x4d"):
        for ds, crop in [("car", False), ("car", True), ("cub", False), ("cub", True),
                         ("sop", False), ("isc", False)]:
            name = f"{method}/{ds}/{bb}{_crop_tag(ds, crop)}"
            rows.append(_common(
                name=name, method=method, dataset=ds, backbone=bb, crop=crop,
                embedding_dim=1536, epochs=20, batch_size=128, sampler="m_per_class",
                samples_per_class=4, drop_last=True, transform="cgd", crop_size=224,
                resize_size=252, eval_batch_size=128, seed=0, reported=name,
                gd_config=CGD_GD_CONFIG[ds], smoothing=0.1, temperature=0.5, margin=0.1,
                lr=1e-4, lr_milestones=None, lr_gamma=0.1, freeze_bn=True, gem_clamp=True,
                optimizer="adam", weight_decay=0.0,
            ))
    return rows


declare_method(
    "cgd", "dml_core.methods.cgd:CGDMethod", label="CGD", color="#00B945", notebook="04_cgd",
    loss_hparams=("gd_config", "gem_clamp", "smoothing", "temperature", "margin"), rows=_cgd_rows,
    demo=Demo("cub/resnet50/uncropped", dict(epochs=6, batch_size=24)))  # 128 = 32 x 4


# ------------------------------------------------------------------------------ AsymptoticProxy
def _asymptotic_rows(method: str) -> list[dict[str, Any]]:
    rows = []
    for ds in ("car", "cub", "sop", "isc"):
        small = ds in ("car", "cub")
        for bb in ("resnet50", "bninception", "googlenet"):
            name = f"{method}/{ds}/{bb}"
            rows.append(_common(
                name=name, method=method, dataset=ds, backbone=bb,
                embedding_dim=512, epochs=30, batch_size=128, sampler="shuffle",
                samples_per_class=None, drop_last=False, transform="random_resized_crop",
                crop_size=256, resize_size=292, eval_batch_size=128, seed=0, reported=name,
                temperature=0.03 if small else 0.05, momentum=0.5 if small else 0.95,
                lr=1e-4 if small else 4e-5, lr_step=None, lr_gamma=0.1, freeze_bn=True,
                optimizer="adam", weight_decay=0.0,
            ))
    return rows


declare_method(
    "asymptotic_proxy", "dml_core.methods.asymptotic_proxy:AsymptoticProxyMethod",
    label="AsymptoticProxy", color="#FF9500", notebook="02_asymptotic_proxy",
    loss_hparams=("temperature", "momentum"), rows=_asymptotic_rows,
    demo=Demo("cub/resnet50", dict(epochs=6, batch_size=26)))  # 128


# --------------------------------------------------------------------------- PP (positive proxy)
def _pp_rows(method: str) -> list[dict[str, Any]]:
    rows = []
    for ds in ("car", "cub"):
        for bb in ("resnet50", "bninception", "googlenet"):
            for loss in ("proxy_anchor", "normalized_softmax"):
                name = f"{method}/{ds}/{bb}/{loss}"
                rows.append(_common(
                    name=name, method=method, dataset=ds, backbone=bb,
                    embedding_dim=512, epochs=20, batch_size=64, sampler="shuffle",
                    samples_per_class=None, drop_last=False, transform="random_resized_crop",
                    crop_size=224, resize_size=256, eval_batch_size=64, seed=1,
                    # the README table (AsymptoticProxy's, carried over) belongs to the default loss
                    reported=f"{method}/{ds}/{bb}" if loss == "proxy_anchor" else None,
                    loss=loss, positive_proxy=False, alpha=32.0, margin=0.1, scale=32.0,
                    lr=1e-4, refactor_lr=1e-4, proxy_lr=1e-2, weight_decay=0.0, lr_step=5,
                    lr_gamma=0.5, warmup_epochs=2, freeze_bn=True,
                ))
    return rows


declare_method(
    "positive_proxy", "dml_core.methods.positive_proxy:PositiveProxyMethod",
    label="PP (positive proxy)", color="#FF2C00", notebook="03_positive_proxy",
    loss_hparams=("loss", "positive_proxy", "alpha", "margin", "scale"), rows=_pp_rows,
    # `loss` selects the row; "positive_only" (ebad4cb) is the proxy_anchor row's ablation
    variant=("loss", "proxy_anchor"),
    demo=Demo("cub/resnet50/proxy_anchor", dict(epochs=6, batch_size=13)))  # 64


# ------------------------------------------------------------- Dynamic margin and Proxy-Anchor
def _ldm_like(method: str, dataset: str, backbone: str, *, batch_size: int, lr: float,
              warmup_epochs: int, freeze_bn: bool, lr_step: int, lr_gamma: float, epochs: int,
              alpha: float, alpha_n: float | None = None) -> dict:
    """A row of the LDM / Proxy-Anchor README command tables (``--bn-freeze`` → ``freeze_bn``,
    ``--lr-decay-step`` → ``lr_step``, ``--lr-decay-gamma`` → ``lr_gamma``). ``alpha`` is the
    positive scale (LDM ``--alphap``; Proxy-Anchor's single scale), ``alpha_n`` the negative one
    (LDM ``--alphan``; default: ``alpha``)."""
    name = f"{method}/{dataset}/{backbone}"
    alpha_n = alpha if alpha_n is None else alpha_n
    if method == "dynamic_margin":
        loss_keys = dict(alpha_p=alpha, alpha_n=alpha_n, margin=0.1, delta=0.1, lam=1.0,
                         mrg_lr=1e-4, mrg_lr_step=10, mrg_lr_gamma=0.5,
                         neg_uses_learnable_margin=False, pp_scale=1.0, pp_normaliser="C")
    else:  # Proxy-Anchor: one scale (hard-coded 32 in the PA/LDM code) and a fixed margin
        assert alpha_n == alpha
        loss_keys = dict(alpha=alpha, margin=0.1)
    return _common(
        name=name, method=method, dataset=dataset, backbone=backbone, embedding_dim=512,
        epochs=epochs, batch_size=batch_size, sampler="shuffle", samples_per_class=None,
        drop_last=True, transform="random_resized_crop", crop_size=224, resize_size=256,
        eval_batch_size=120, seed=1, reported=name,
        lr=lr, weight_decay=1e-4, proxy_lr_mult=100.0, lr_step=lr_step, lr_gamma=lr_gamma,
        warmup_epochs=warmup_epochs, freeze_bn=freeze_bn, unfreeze_bn_affine_after_warmup=True,
        bn_momentum="original", grad_clip_value=10.0, **loss_keys,
    )


def _dynamic_margin_rows(m: str) -> list[dict[str, Any]]:
    return [
        _ldm_like(m, "cub", "bninception", batch_size=180, lr=1e-4, warmup_epochs=1,
                  freeze_bn=True, lr_step=20, lr_gamma=0.5, epochs=40, alpha=48),
        _ldm_like(m, "cub", "resnet50", batch_size=120, lr=1e-4, warmup_epochs=5,
                  freeze_bn=True, lr_step=10, lr_gamma=0.5, epochs=40, alpha=48),
        _ldm_like(m, "car", "bninception", batch_size=180, lr=1e-4, warmup_epochs=1,
                  freeze_bn=True, lr_step=20, lr_gamma=0.5, epochs=40, alpha=48),
        _ldm_like(m, "car", "resnet50", batch_size=120, lr=1e-4, warmup_epochs=5,
                  freeze_bn=True, lr_step=10, lr_gamma=0.5, epochs=40, alpha=48),
        # correction: 60 epochs for SOP/In-shop with both backbones (README BN-Inception: default 40)
        _ldm_like(m, "sop", "bninception", batch_size=180, lr=6e-4, warmup_epochs=1,
                  freeze_bn=False, lr_step=20, lr_gamma=0.25, epochs=60, alpha=32),
        _ldm_like(m, "sop", "resnet50", batch_size=180, lr=6e-4, warmup_epochs=5,
                  freeze_bn=False, lr_step=10, lr_gamma=0.5, epochs=60, alpha=32),
        # correction: the README's `--loss Proxy_Anchor` for this row is a leftover -> AMLoss
        _ldm_like(m, "isc", "bninception", batch_size=180, lr=6e-4, warmup_epochs=1,
                  freeze_bn=False, lr_step=20, lr_gamma=0.25, epochs=60, alpha=32),
        _ldm_like(m, "isc", "resnet50", batch_size=180, lr=6e-4, warmup_epochs=5,
                  freeze_bn=False, lr_step=10, lr_gamma=0.5, epochs=60, alpha=32),
    ]


def _proxy_anchor_rows(m: str) -> list[dict[str, Any]]:
    # official PA README commands; PA defaults 60 epochs, alpha 32, delta 0.1
    return [
        _ldm_like(m, "cub", "bninception", batch_size=180, lr=1e-4, warmup_epochs=1,
                  freeze_bn=True, lr_step=10, lr_gamma=0.5, epochs=60, alpha=32),
        _ldm_like(m, "cub", "resnet50", batch_size=120, lr=1e-4, warmup_epochs=5,
                  freeze_bn=True, lr_step=5, lr_gamma=0.5, epochs=60, alpha=32),
        _ldm_like(m, "car", "bninception", batch_size=180, lr=1e-4, warmup_epochs=1,
                  freeze_bn=True, lr_step=20, lr_gamma=0.5, epochs=60, alpha=32),
        _ldm_like(m, "car", "resnet50", batch_size=120, lr=1e-4, warmup_epochs=5,
                  freeze_bn=True, lr_step=10, lr_gamma=0.5, epochs=60, alpha=32),
        _ldm_like(m, "sop", "bninception", batch_size=180, lr=6e-4, warmup_epochs=1,
                  freeze_bn=False, lr_step=20, lr_gamma=0.25, epochs=60, alpha=32),
        _ldm_like(m, "isc", "bninception", batch_size=180, lr=6e-4, warmup_epochs=1,
                  freeze_bn=False, lr_step=20, lr_gamma=0.25, epochs=60, alpha=32),
    ]


declare_method(
    "dynamic_margin", "dml_core.methods.dynamic_margin:DynamicMarginMethod",
    label="Dynamic margin (LDM)", color="#845B97", notebook="05_dynamic_margin",
    loss_hparams=("alpha_p", "alpha_n", "margin", "delta", "lam", "mrg_lr",
                  "neg_uses_learnable_margin", "pp_scale", "pp_normaliser"),
    rows=_dynamic_margin_rows,
    # the BN-Inception rows: the paper's main setting (the ResNet-50 rows warm up for 5 epochs,
    # nearly all of the demo's 6)
    demo=Demo("cub/bninception", dict(epochs=6, batch_size=36)))  # 180
declare_method(
    "proxy_anchor", "dml_core.methods.dynamic_margin:ProxyAnchorMethod", label="Proxy-Anchor",
    color="#8C564B", notebook="05_dynamic_margin", loss_hparams=("alpha", "margin"),
    rows=_proxy_anchor_rows,
    demo=Demo("cub/bninception", dict(epochs=6, batch_size=36)))  # 180, as LDM
# The STL-10 toy (notebook 07 calls dml_core.study.toy): a method without recipe rows.
declare_method("toy", "dml_core.methods.toy:ToyMethod", label="Toy (moving vs learnable proxies)",
               notebook="07_toy_proxies")

#: The methods with recipes (the papers'), in declaration order.
METHODS: tuple[str, ...] = published()


# ------------------------------------------------------------------------------------- demo
#: What every demo recipe shares (see :func:`_demo_rows`): the demo's images (48-px numbers,
#: 24-px crops), its 50 classes (64-d embedding), no flips (a mirrored number is another number),
#: crops that keep both digits, the stand-in trunk (``pretrained``:
#: :mod:`dml_core.models.standin`), validation classes held out (their images made of unseen
#: scans) to select the epoch.
DEMO_SETTINGS: dict[str, Any] = dict(
    dataset="demo", backbone="resnet18_s2", pretrained=True, crop=False, embedding_dim=64,
    crop_size=24, resize_size=27, hflip=False, rrc_scale=[0.7, 1.0], eval_batch_size=250,
    eval_every=1, seed=0, validation_fraction=0.2, reported=None, cache=True)


def _demo_rows(full_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every method's published recipe on the embedded demo data (what ``make report`` runs as
    the reproduction): the row its declaration's :class:`~dml_core.methods.registry.Demo` names
    (the demo's data are CUB-shaped, so a CUB row), fine-tuning the demo's pretrained stand-in
    trunk with the paper's optimiser, learning rates (trunk, head and proxies), BatchNorm policy,
    warm-up, loss hyper-parameters and schedule. Only what the demo's size forces changes
    (docs/DEMO.md lists every change with its reason): :data:`DEMO_SETTINGS` (image and embedding
    size, augmentation limits, validation) and the declaration's changes (epochs: the CPU budget;
    batch: the published one × 1/5, as the demo trains on 1,200 images and CUB on 5,864, rounded
    to whole classes for the m-per-class samplers, so that an epoch has about as many steps as
    on CUB). A schedule the paper defines by the run's length (NormSoftmax's and
    AsymptoticProxy's step at half the epochs, CGD's at 60 % and 80 %) keeps its shape; one given
    in epochs (PP, LDM, Proxy-Anchor) is run for the demo's first epochs."""
    by_name = {r["name"]: r for r in full_rows}
    rows = []
    for method in METHODS:
        demo = SPECS[method].demo
        r = copy.deepcopy(by_name[f"{method}/{demo.base}"])
        r.update(copy.deepcopy(DEMO_SETTINGS), **copy.deepcopy(demo.changes))
        r["name"] = f"{method}/demo/resnet18_s2"
        rows.append(r)
    return rows


# ------------------------------------------------------------------------------------- ViTs
#: The vision transformers of the ViT track (dml_core.models.backbones); their rows are derived.
VIT_BACKBONES = ("vit_s16_dino", "vit_s14_dinov2")


def _vit_rows(full_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every uncropped ResNet-50 row with the trunk swapped for each ViT of :data:`VIT_BACKBONES`
    and the ViTs' input (224-px crops of 256-px images; 224 is a multiple of both patch sizes):
    the method keys stay the row's. No paper published these rows (``reported`` None); the fair
    protocol's ViT settings start from them and set everything but the loss."""
    rows = []
    for r in full_rows:
        if r["backbone"] != "resnet50" or r["crop"]:
            continue
        for bb in VIT_BACKBONES:
            v = copy.deepcopy(r)
            v.update(backbone=bb, crop_size=224, resize_size=256, reported=None,
                     name=r["name"].replace("/resnet50", f"/{bb}").replace("/uncropped", ""))
            rows.append(v)
    return rows


# --------------------------------------------------------------------------------- registry
def _build_registry() -> dict[str, dict[str, Any]]:
    """Every row of every declared method, then the demo rows and the ViT rows (derived), by name
    (in that order). :func:`check_rows` checks them against the schema."""
    full = [r for m in METHODS for r in SPECS[m].rows(m)]
    reg: dict[str, dict[str, Any]] = {}
    for r in full + _demo_rows(full) + _vit_rows(full):
        if r["name"] in reg:
            raise RecipeError(f"two recipe rows are called {r['name']!r}")
        reg[r["name"]] = r
    return reg


_REGISTRY = _build_registry()


def check_rows() -> list[str]:
    """Every problem of the rows, as messages ([] when every row is valid): a key or value the
    schema refuses, a method that is not declared with recipes, or a row that lacks one of its
    method's keys (the class's defaults: every key must be in the row to be overridable by name).
    Imports the methods' classes."""
    import sys

    from dml_core.methods.shared import SHARED_KEYS  # read by the fair protocol's shared build

    problems = []
    for name, r in _REGISTRY.items():
        found = check_recipe(r)
        spec = SPECS.get(r.get("method"))
        if spec is None or spec.rows is None:
            found.append(f"method {r.get('method')!r} is not declared with recipes")
        else:
            cls = spec.load()
            defaults = getattr(cls, "defaults", None) or sys.modules[cls.__module__].DEFAULTS
            missing = sorted(set(defaults) - set(r))
            if missing:
                found.append(f"lacks its method's keys {missing}")
            foreign = sorted(k for k in r if k in KEYS and KEYS[k].kind == "method"
                             and k not in defaults and k not in SHARED_KEYS)
            if foreign:
                found.append(f"has keys its method does not read: {foreign}")
        problems += [f"recipe row {name!r}: {p}" for p in found]
    return problems
#: The data sets with recipes, in row order.
DATASETS: tuple[str, ...] = tuple(dict.fromkeys(r["dataset"] for r in _REGISTRY.values()))


def list_recipes(method: str | None = None, dataset: str | None = None,
                 include_demo: bool = True) -> list[str]:
    """Names of every recipe (optionally of one method / data set), in README order.
    ``include_demo=False``: the original code's rows only, without the derived demo and ViT rows."""
    out = []
    for name, r in _REGISTRY.items():
        if method is not None and r["method"] != method:
            continue
        if dataset is not None and r["dataset"] != dataset:
            continue
        if not include_demo and (r["dataset"] == "demo" or r["backbone"] in VIT_BACKBONES):
            continue
        out.append(name)
    return out


def _choices(values) -> str:
    return ", ".join(sorted({str(v) for v in values}))


#: Keys added to a recipe whose overrides changed it (never valid as overrides themselves).
OVERRIDE_RECORD_KEYS = RECORD_KEYS


def _canonical_keys(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with the :data:`KEY_ALIASES` replaced by the recipe's names."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        name = canonical(key)
        if name in out:
            raise RecipeError(f"override keys {key!r} and {name!r} name the same setting "
                              f"({name!r}); give it once")
        out[name] = value
    return out


def _checked_overrides(recipe: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with canonical key names and values checked and normalised by the schema.

    Raises :class:`RecipeError` naming every key the recipe does not have, every key that cannot
    be overridden (the row's identity, chosen by :func:`get_recipe`'s arguments) and every value
    of the wrong type or range, at once."""
    original, overrides = overrides, _canonical_keys(overrides)
    unknown = sorted(set(overrides) - (set(recipe) - set(OVERRIDE_RECORD_KEYS)))
    if unknown:
        import difflib

        valid = [k for k in recipe if k not in OVERRIDE_RECORD_KEYS]
        hints = [f"{k!r} -> did you mean {close[0]!r}?" for k in unknown
                 for close in [difflib.get_close_matches(k, valid, n=1)] if close]
        raise RecipeError(
            f"unknown recipe key(s) {unknown} for {recipe['name']!r}"
            f"{' (' + '; '.join(hints) + ')' if hints else ''}; valid keys: {_choices(valid)}")
    fixed = sorted(k for k in overrides if not KEYS[k].overridable)
    if fixed:
        raise RecipeError(f"{fixed} cannot be overridden: they name the row, which "
                          "get_recipe(method, dataset, backbone, crop=...) chooses; pick another "
                          "row instead")
    given = {canonical(k): k for k in original}  # the user's spelling, for the messages
    out, problems, first = {}, [], None
    after = {**recipe, **overrides}
    for key, value in overrides.items():
        if unread_by_shared_build(after, key, value):
            out[key] = None
            continue
        try:
            out[key] = coerce(given[key], value)
        except RecipeError as exc:
            problems.append(str(exc))
            first = first or exc
    if problems:
        raise RecipeError(f"bad override value(s) for {recipe['name']!r}: " + "; ".join(problems),
                          key=first.key, expected=first.expected, example=first.example)
    return out


def _apply_overrides(recipe: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` updated with ``overrides``; the changes are recorded in the recipe itself.

    When an override changes a value, the result gets ``overrides`` (the changed keys and their
    new values), ``base_name`` / ``base_reported`` (the row it came from), ``name`` becomes
    ``"<base name> [k=v, ...]"``, ``shortened`` is True when ``epochs`` or
    ``max_steps_per_epoch`` changed, and ``reported`` becomes None unless every changed key is in
    :data:`NEUTRAL_KEYS`: a run with changed settings is never compared with a published number.
    """
    overrides = _checked_overrides(recipe, overrides)
    out = copy.deepcopy(recipe)
    changed = {k: copy.deepcopy(v) for k, v in overrides.items() if out[k] != v}
    out.update(copy.deepcopy(overrides))
    if changed:
        prior = dict(out.get("overrides") or {})
        out.setdefault("base_name", recipe["name"])
        out.setdefault("base_reported", recipe.get("reported"))
        prior.update(changed)
        out["overrides"] = prior
        shown = {k: v for k, v in prior.items() if k not in NEUTRAL_KEYS}
        out["name"] = out["base_name"] + (" [" + ", ".join(f"{k}={v}" for k, v in shown.items())
                                          + "]" if shown else "")
        out["shortened"] = bool(SHORTENING_KEYS & set(prior))
        if set(prior) - NEUTRAL_KEYS:
            out["reported"] = None
    return out


def recipe_by_name(name: str, **overrides: Any) -> dict[str, Any]:
    """The recipe called ``name`` (see :func:`list_recipes`), with ``overrides`` applied."""
    if name not in _REGISTRY:
        raise RecipeError(f"unknown recipe {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _apply_overrides(_REGISTRY[name], overrides)


def get_recipe(method: str, dataset: str, backbone: str, crop: bool | None = None,
               **overrides: Any) -> dict[str, Any]:
    """The original code's setting for (method, dataset, backbone, crop), plus validated overrides.

    Data set and backbone also accept the seed CLIs' spellings (``cars``, ``SOP``, ``Inshop``,
    ``inception``, ``bn_inception``, ``resnext50``). ``positive_proxy`` takes ``loss=`` to pick the
    row (``proxy_anchor`` default, ``normalized_softmax``, or the ``positive_only`` ablation).
    Anything unknown raises :class:`RecipeError` naming the valid choices. A fresh copy is
    returned every call. ``crop=None`` means the row's default (uncropped); on ``demo`` (one row
    per method) ``crop`` is a plain override (True crops to the number's tight box).
    """
    if method not in METHODS:
        raise RecipeError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    dataset = DATASET_ALIASES.get(dataset, dataset)
    backbone = BACKBONE_ALIASES.get(backbone, backbone)
    rows = [r for r in _REGISTRY.values() if r["method"] == method]
    datasets = {r["dataset"] for r in rows}
    if dataset not in datasets:
        raise RecipeError(f"unknown data set {dataset!r} for {method!r}; valid data sets: "
                          f"{_choices(datasets)}")
    rows = [r for r in rows if r["dataset"] == dataset]
    backbones = {r["backbone"] for r in rows}
    if backbone not in backbones:
        raise RecipeError(f"unknown backbone {backbone!r} for {method!r} on {dataset!r}; valid "
                          f"backbones: {_choices(backbones)}")
    rows = [r for r in rows if r["backbone"] == backbone]
    plain = {}  # set by the arguments, not recorded as overrides
    if dataset == "demo":  # one row per method; crop is a plain setting
        if crop is not None:
            plain["crop"] = bool(crop)
        crop = rows[0]["crop"]
    crop = bool(crop)
    crops = {r["crop"] for r in rows}
    if bool(crop) not in crops:
        raise RecipeError(f"crop={crop!r} is not available for {method!r} on {dataset!r} with "
                          f"{backbone!r}; valid: crop in {sorted(crops)}")
    rows = [r for r in rows if r["crop"] == bool(crop)]
    variant_name = None
    if SPECS[method].variant is not None:
        key, default = SPECS[method].variant
        allowed = KEYS[key].choices
        variant = overrides.pop(key, default)
        if variant not in allowed:
            raise RecipeError(f"unknown {key} {variant!r} for {method!r}; valid: "
                              f"{', '.join(allowed)}")
        if dataset == "demo":  # one demo row per method; the variant is a plain override
            if variant != default:
                variant_name = (key, variant)
        else:
            # a variant without rows of its own (PP's positive_only, the ebad4cb ablation) is a
            # variant of the default row
            base_variant = variant if variant in {r[key] for r in rows} else default
            rows = [r for r in rows if r[key] == base_variant]
            if variant != base_variant:
                variant_name = (key, variant)
    assert len(rows) == 1, [r["name"] for r in rows]
    recipe = copy.deepcopy(rows[0])
    if variant_name is not None:
        key, variant = variant_name
        recipe[key] = variant
        stem = recipe["name"] if dataset == "demo" else recipe["name"].rsplit("/", 1)[0]
        recipe["name"] = f"{stem}/{variant}"
        recipe["reported"] = None
    recipe.update(plain)
    return _apply_overrides(recipe, overrides)


def demo_recipe(method: str, **overrides: Any) -> dict[str, Any]:
    """The CPU demo profile of ``method`` (= ``get_recipe(method, "demo", "resnet18_s2")``)."""
    return get_recipe(method, "demo", "resnet18_s2", **overrides)


# ------------------------------------------------------------------------------- documentation
_KIND_TITLES = (("row", "The row (chosen by `get_recipe(method, dataset, backbone, crop)`)"),
                ("data", "Data (read by the training code; every recipe has them)"),
                ("training", "Training (read by the training loop; every recipe has them)"),
                ("method", "The methods' own keys (each method's module documents its use)"),
                ("record", "Written by the overrides (never set by hand)"))


def keys_markdown() -> str:
    """docs/RECIPE_KEYS.md: every key of the schema with its type, what it accepts, its default
    and meaning, and which methods read it (from their declarations)."""
    from dml_core.methods.schema import as_text

    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|")

    out = ["# Recipe keys", "",
           "<!-- GENERATED by `python -m dml_core.methods --write` from "
           "dml_core/methods/schema.py (the one source); edit that module. -->", "",
           "A recipe is a flat mapping with these keys. Every row of `dml_core/methods/recipes.py` "
           "and every override (`get_recipe(..., key=value)`, a notebook's or a profile's "
           "`overrides`, `--set key=value`) is checked against this table: a key it does not "
           "list, a value of another type or outside its range is refused with the expected "
           "type and an example. `--set` values are read as YAML 1.2 (`1e-3` is a number, "
           "`yes` a string). The original command-line names "
           + ", ".join(f"`{a}`" for a in KEY_ALIASES) + " are accepted for "
           + ", ".join(f"`{n}`" for n in KEY_ALIASES.values()) + ".", ""]
    for kind, title in _KIND_TITLES:
        keys = [k for k in KEYS.values() if k.kind == kind]
        out += [f"## {title}", ""]
        cols = "| key | accepts | default | meaning |" if kind != "method" else \
            "| key | accepts | meaning | methods |"
        out += [cols, "|---|---|---|---|"]
        for k in keys:
            accepts = describe(k) + (" (shortens the run)" if k.shortening else "") + \
                (" (changes no number)" if k.neutral else "")
            if kind == "method":
                users = [m for m in METHODS if any(k.name in r for r in _REGISTRY.values()
                                                    if r["method"] == m)]
                out.append(f"| `{k.name}` | {cell(accepts)} | {cell(k.meaning)} | "
                           f"{', '.join(users)} |")
            else:
                default = f"`{as_text(k.default)}`" if k.has_default else "per row"
                if kind == "record":
                    default = "—"
                out.append(f"| `{k.name}` | {cell(accepts)} | {default} | {cell(k.meaning)} |")
        out.append("")
    return "\n".join(out)


def write_keys_document(root=None) -> str:
    """Write docs/RECIPE_KEYS.md (:func:`keys_markdown`); returns its path."""
    from pathlib import Path

    from dml_core.core import io, paths

    path = Path(root or paths.REPO_ROOT) / "docs" / "RECIPE_KEYS.md"
    io.write_text(path, keys_markdown())
    return str(path)

