"""Every hyper-parameter set behind a row of the seed READMEs, as plain data.

A recipe is a flat ``dict`` with the keys of ``docs/ARCHITECTURE.md`` (``name``, ``method``,
``dataset``, ``backbone``, ``pretrained``, ``crop``, ``embedding_dim``, ``epochs``, ``batch_size``,
``sampler``, ``samples_per_class``, ``drop_last``, ``transform``, ``crop_size``, ``resize_size``,
``eval_batch_size``, ``eval_every``, ``seed``, ``num_workers``, ``validation_fraction``,
``max_steps_per_epoch``, ``hflip``, ``rrc_scale``, ``cache`` (decode once, :mod:`dml_core.data.cache`; the
numbers do not change), ``reported``) plus the method's own keys, documented in
``dml_core.methods.<method>``.

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

``get_recipe(method, "demo", "resnet18")`` (or :func:`demo_recipe`) gives every method's published
recipe on the embedded demo data set, fine-tuning the demo's pretrained stand-in trunk (tiny
images, a few epochs; :func:`_demo_rows`).
"""
from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "METHODS",
    "DATASETS",
    "BACKBONE_ALIASES",
    "DATASET_ALIASES",
    "get_recipe",
    "list_recipes",
    "recipe_by_name",
    "demo_recipe",
    "RecipeError",
    "KEY_ALIASES",
]

METHODS = ("normsoftmax", "cgd", "asymptotic_proxy", "positive_proxy", "dynamic_margin",
           "proxy_anchor")
DATASETS = ("car", "cub", "sop", "isc", "demo")

# Spellings used by the seed CLIs, mapped to the registry names.
BACKBONE_ALIASES = {
    "resnext50": "resnext50_32x4d",
    "inception": "bninception",
    "bn_inception": "bninception",
    "bn-inception": "bninception",
}
DATASET_ALIASES = {"cars": "car", "cars196": "car", "cub200": "cub", "SOP": "sop",
                   "Inshop": "isc", "inshop": "isc", "in-shop": "isc"}

# Methods with a "variant" key that selects a row besides (dataset, backbone, crop).
VARIANT_KEYS = {"positive_proxy": ("loss", "proxy_anchor", ("proxy_anchor", "normalized_softmax",
                                                            "positive_only"))}


#: The original command-line names (LDM / Proxy-Anchor ``train.py``: ``--bn-freeze``,
#: ``--lr-decay-step``, ``--lr-decay-gamma``) accepted as override keys, e.g. in a profile's
#: ``overrides``; they are recorded under the recipe's one name for the setting.
KEY_ALIASES = {"bn_freeze": "freeze_bn", "lr_decay_step": "lr_step", "lr_decay_gamma": "lr_gamma"}


class RecipeError(ValueError):
    """An unknown method, data set, backbone, crop choice or override key."""


# ------------------------------------------------------------------------------------ helpers
def _common(**kw: Any) -> dict[str, Any]:
    base = {
        "pretrained": True,
        "crop": False,
        "eval_every": 1,
        "num_workers": None,
        "validation_fraction": 0.0,
        "max_steps_per_epoch": None,
        "hflip": True,
        "rrc_scale": [0.08, 1.0],
        "cache": False,
    }
    base.update(kw)
    return base


def _crop_tag(dataset: str, crop: bool) -> str:
    if dataset in ("car", "cub"):
        return "/cropped" if crop else "/uncropped"
    return ""


# --------------------------------------------------------------------------------- NormSoftmax
def _normsoftmax_rows() -> list[dict[str, Any]]:
    rows = []
    for ds, crop in [("car", False), ("car", True), ("cub", False), ("cub", True), ("sop", False),
                     ("isc", False)]:
        name = f"normsoftmax/{ds}/resnet50{_crop_tag(ds, crop)}"
        rows.append(_common(
            name=name, method="normsoftmax", dataset=ds, backbone="resnet50", crop=crop,
            embedding_dim=2048, epochs=31, batch_size=75, sampler="m_per_class",
            samples_per_class=25, drop_last=True, transform="squash_random_crop", crop_size=224,
            resize_size=256, eval_batch_size=75, seed=0, reported=name,
            # method keys (dml_core.methods.normsoftmax)
            lr=0.01, momentum=0.9, weight_decay=1e-4, temperature=0.05, warmup_epochs=1,
            lr_step=None, lr_gamma=0.1, freeze_bn=False, refactor="linear_bias",
            proxy_weight_decay=True, optimizer="sgd",
        ))
    return rows


# ------------------------------------------------------------------------------------------ CGD
CGD_GD_CONFIG = {"car": "SG", "cub": "MG", "sop": "SG", "isc": "GS"}


def _cgd_rows() -> list[dict[str, Any]]:
    rows = []
    for bb in ("resnet50", "resnext50_32x4d"):
        for ds, crop in [("car", False), ("car", True), ("cub", False), ("cub", True),
                         ("sop", False), ("isc", False)]:
            name = f"cgd/{ds}/{bb}{_crop_tag(ds, crop)}"
            rows.append(_common(
                name=name, method="cgd", dataset=ds, backbone=bb, crop=crop,
                embedding_dim=1536, epochs=20, batch_size=128, sampler="m_per_class",
                samples_per_class=4, drop_last=True, transform="cgd", crop_size=224,
                resize_size=252, eval_batch_size=128, seed=0, reported=name,
                gd_config=CGD_GD_CONFIG[ds], smoothing=0.1, temperature=0.5, margin=0.1,
                lr=1e-4, lr_milestones=None, lr_gamma=0.1, freeze_bn=True, gem_clamp=True,
            ))
    return rows


# ------------------------------------------------------------------------------ AsymptoticProxy
def _asymptotic_rows() -> list[dict[str, Any]]:
    rows = []
    for ds in ("car", "cub", "sop", "isc"):
        small = ds in ("car", "cub")
        for bb in ("resnet50", "bninception", "googlenet"):
            name = f"asymptotic_proxy/{ds}/{bb}"
            rows.append(_common(
                name=name, method="asymptotic_proxy", dataset=ds, backbone=bb,
                embedding_dim=512, epochs=30, batch_size=128, sampler="shuffle",
                samples_per_class=None, drop_last=False, transform="random_resized_crop",
                crop_size=256, resize_size=292, eval_batch_size=128, seed=0, reported=name,
                temperature=0.03 if small else 0.05, momentum=0.5 if small else 0.95,
                lr=1e-4 if small else 4e-5, lr_step=None, lr_gamma=0.1, freeze_bn=True,
            ))
    return rows


# --------------------------------------------------------------------------- PP (positive proxy)
def _pp_rows() -> list[dict[str, Any]]:
    rows = []
    for ds in ("car", "cub"):
        for bb in ("resnet50", "bninception", "googlenet"):
            for loss in ("proxy_anchor", "normalized_softmax"):
                name = f"positive_proxy/{ds}/{bb}/{loss}"
                rows.append(_common(
                    name=name, method="positive_proxy", dataset=ds, backbone=bb,
                    embedding_dim=512, epochs=20, batch_size=64, sampler="shuffle",
                    samples_per_class=None, drop_last=False, transform="random_resized_crop",
                    crop_size=224, resize_size=256, eval_batch_size=64, seed=1,
                    # the README table (AsymptoticProxy's, carried over) belongs to the default loss
                    reported=f"positive_proxy/{ds}/{bb}" if loss == "proxy_anchor" else None,
                    loss=loss, positive_proxy=False, alpha=32.0, margin=0.1, scale=32.0,
                    lr=1e-4, refactor_lr=1e-4, proxy_lr=1e-2, weight_decay=0.0, lr_step=5,
                    lr_gamma=0.5, warmup_epochs=2, freeze_bn=True,
                ))
    return rows


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
        bn_momentum="seed", grad_clip_value=10.0, **loss_keys,
    )


def _dynamic_margin_rows() -> list[dict[str, Any]]:
    m = "dynamic_margin"
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


def _proxy_anchor_rows() -> list[dict[str, Any]]:
    m = "proxy_anchor"  # official PA README commands; PA defaults 60 epochs, alpha 32, delta 0.1
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


# ------------------------------------------------------------------------------------- demo
#: The published row each demo recipe reproduces (the demo's data are CUB-shaped: 50 training
#: classes of 30 images, 50 unseen test classes). Proxy-Anchor and LDM: their BN-Inception rows,
#: the papers' main setting (their ResNet-50 rows warm up for 5 epochs, more than the demo has).
DEMO_BASE_ROWS = {
    "normsoftmax": "normsoftmax/cub/resnet50/uncropped",
    "cgd": "cgd/cub/resnet50/uncropped",
    "asymptotic_proxy": "asymptotic_proxy/cub/resnet50",
    "positive_proxy": "positive_proxy/cub/resnet50/proxy_anchor",
    "dynamic_margin": "dynamic_margin/cub/bninception",
    "proxy_anchor": "proxy_anchor/cub/bninception",
}
#: What the demo's size forces per method; every method key (optimiser, learning rates, BN
#: policy, warm-up, schedule, loss) is the published row's. Batch: the published one × 1/5
#: (the demo trains on 1,200 images, CUB on 5,864), rounded to whole classes for the m-per-class
#: samplers, so that an epoch has about as many steps as on CUB. Epochs: the CPU budget.
DEMO_CHANGES: dict[str, dict[str, Any]] = {
    "normsoftmax": dict(epochs=3, batch_size=15, samples_per_class=5),  # 75 = 3 classes x 25
    "cgd": dict(epochs=4, batch_size=24),  # 128 = 32 classes x 4
    "asymptotic_proxy": dict(epochs=4, batch_size=26),  # 128
    "positive_proxy": dict(epochs=4, batch_size=13),  # 64
    "dynamic_margin": dict(epochs=4, batch_size=36),  # 180
    "proxy_anchor": dict(epochs=4, batch_size=36),  # 180
}
#: The same for every method: the demo's images (48-px numbers, 24-px crops), its 50 classes
#: (64-d embedding), no flips (a mirrored number is another number), crops that keep both
#: digits, the stand-in trunk (``pretrained``: :mod:`dml_core.models.standin`), validation
#: classes held out (their images made of unseen scans) to select the epoch.
DEMO_COMMON: dict[str, Any] = dict(
    dataset="demo", backbone="resnet18", pretrained=True, crop=False, embedding_dim=64,
    crop_size=24, resize_size=27, hflip=False, rrc_scale=[0.7, 1.0], eval_batch_size=250,
    eval_every=1, seed=0, validation_fraction=0.2, reported=None, cache=True)


def _demo_rows(full_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every method's published recipe on the embedded demo data (what ``make report`` runs as
    the reproduction): the row :data:`DEMO_BASE_ROWS` names, fine-tuning the demo's pretrained
    stand-in trunk with the paper's optimiser, learning rates (trunk, head and proxies), BatchNorm
    policy, warm-up, loss hyper-parameters and schedule. Only what the demo's size forces changes
    (docs/DEMO.md lists every change with its reason): :data:`DEMO_COMMON` (image and embedding
    size, augmentation limits, validation) and :data:`DEMO_CHANGES` (epochs, batch size). A
    schedule the paper defines by the run's length (NormSoftmax's and AsymptoticProxy's step at
    half the epochs, CGD's at 60 % and 80 %) keeps its shape; one given in epochs (PP, LDM,
    Proxy-Anchor) is run for the demo's first epochs."""
    by_name = {r["name"]: r for r in full_rows}
    rows = []
    for method, base in DEMO_BASE_ROWS.items():
        r = copy.deepcopy(by_name[base])
        r.update(DEMO_COMMON, **DEMO_CHANGES[method])
        r["name"] = f"{method}/demo/resnet18"
        rows.append(r)
    return rows


# --------------------------------------------------------------------------------- registry
def _build_registry() -> dict[str, dict[str, Any]]:
    full = (_normsoftmax_rows() + _cgd_rows() + _asymptotic_rows() + _pp_rows()
            + _dynamic_margin_rows() + _proxy_anchor_rows())
    rows = full + _demo_rows(full)
    reg: dict[str, dict[str, Any]] = {}
    for r in rows:
        assert r["name"] not in reg, r["name"]
        reg[r["name"]] = r
    return reg


_REGISTRY = _build_registry()


def list_recipes(method: str | None = None, dataset: str | None = None,
                 include_demo: bool = True) -> list[str]:
    """Names of every recipe (optionally of one method / data set), in README order."""
    out = []
    for name, r in _REGISTRY.items():
        if method is not None and r["method"] != method:
            continue
        if dataset is not None and r["dataset"] != dataset:
            continue
        if not include_demo and r["dataset"] == "demo":
            continue
        out.append(name)
    return out


def _choices(values) -> str:
    return ", ".join(sorted({str(v) for v in values}))


#: Override keys that cannot change a result (a run overriding only these keeps its ``reported``).
NEUTRAL_KEYS = frozenset({"num_workers", "eval_batch_size", "cache"})
#: Override keys that shorten the training: a run overriding one of them is marked ``shortened``.
SHORTENING_KEYS = frozenset({"epochs", "max_steps_per_epoch"})
#: Keys added to a recipe whose overrides changed it (never valid as overrides themselves).
OVERRIDE_RECORD_KEYS = ("overrides", "base_name", "base_reported", "shortened")


def _canonical_keys(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with the :data:`KEY_ALIASES` replaced by the recipe's names."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        name = KEY_ALIASES.get(key, key)
        if name in out:
            raise RecipeError(f"override keys {key!r} and {name!r} name the same setting "
                              f"({name!r}); give it once")
        out[name] = value
    return out


def _apply_overrides(recipe: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` updated with ``overrides``; the changes are recorded in the recipe itself.

    When an override changes a value, the result gets ``overrides`` (the changed keys and their
    new values), ``base_name`` / ``base_reported`` (the row it came from), ``name`` becomes
    ``"<base name> [k=v, ...]"``, ``shortened`` is True when ``epochs`` or
    ``max_steps_per_epoch`` changed, and ``reported`` becomes None unless every changed key is in
    :data:`NEUTRAL_KEYS`: a run with changed settings is never compared with a published number.
    """
    overrides = _canonical_keys(overrides)
    unknown = sorted(set(overrides) - (set(recipe) - set(OVERRIDE_RECORD_KEYS)))
    if unknown:
        import difflib

        valid = [k for k in recipe if k not in OVERRIDE_RECORD_KEYS]
        hints = [f"{k!r} -> did you mean {close[0]!r}?" for k in unknown
                 for close in [difflib.get_close_matches(k, valid, n=1)] if close]
        raise RecipeError(
            f"unknown recipe key(s) {unknown} for {recipe['name']!r}"
            f"{' (' + '; '.join(hints) + ')' if hints else ''}; valid keys: {_choices(valid)}")
    for key in ("epochs", "crop_size"):  # 0 would train nothing / fail inside a convolution
        value = overrides.get(key)
        if key in overrides and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise RecipeError(f"{key} must be a positive integer, got {value!r}")
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
    """The seed's setting for (method, dataset, backbone, crop), plus validated overrides.

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
    if method in VARIANT_KEYS:
        key, default, allowed = VARIANT_KEYS[method]
        variant = overrides.pop(key, default)
        if variant not in allowed:
            raise RecipeError(f"unknown {key} {variant!r} for {method!r}; valid: "
                              f"{', '.join(allowed)}")
        if dataset == "demo":  # one demo row per method; the variant is a plain override
            if variant != default:
                variant_name = (key, variant)
        else:
            # positive_only is the ebad4cb ablation of the proxy_anchor row
            base_variant = "proxy_anchor" if variant == "positive_only" else variant
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
    """The CPU demo profile of ``method`` (= ``get_recipe(method, "demo", "resnet18")``)."""
    return get_recipe(method, "demo", "resnet18", **overrides)
