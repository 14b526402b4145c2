"""The recipe schema: every key a recipe may have, once, with its type, range and meaning.

A recipe (:mod:`dml_core.methods.recipes`) is a flat dict; :data:`KEYS` is the one list of its
keys. ``docs/RECIPE_KEYS.md`` is generated from it (``python -m dml_core.methods
--write``), with the methods that read each key.

:func:`coerce` checks one value and returns it normalised (an int where a float is expected
becomes a float, a tuple a list); a wrong type or range raises :class:`RecipeError` naming the
key, what it expects and an example. Everything that sets a key goes through it: the recipe rows
(:func:`dml_core.methods.recipes.check_rows`, which the tests run), every override (``get_recipe``'s keyword arguments, a notebook's
``overrides``, a profile's, ``--set``) and the notebook parameters named like a key (the toy's
``epochs``). Text (``--set KEY=VALUE``) is first read with YAML 1.2 rules
(:func:`dml_core.core.io.load_yaml12`: ``1e-3`` is a float, ``yes`` is a string).

Kinds: ``row`` keys are chosen by ``get_recipe(method, dataset, backbone, crop)`` and are not
overridden; ``data`` and ``training`` keys are read by :mod:`dml_core.training` (every recipe has
them); ``method`` keys are read by the methods (:mod:`dml_core.methods`; each method's module
documents what it does with them); ``record`` keys are written by the override machinery.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["RecipeError", "Key", "KEYS", "KEY_ALIASES", "NEUTRAL_KEYS", "SHORTENING_KEYS",
           "RECORD_KEYS", "ROW_DEFAULTS", "coerce", "unread_by_shared_build", "canonical", "check_recipe", "describe",
           "as_text"]


class RecipeError(ValueError):
    """An unknown method, data set, backbone, crop choice or key, or a value of the wrong type or
    outside its range. ``key``/``expected``/``example`` are set for a bad value."""

    def __init__(self, message: str, key: str | None = None, expected: str = "",
                 example: Any = None):
        super().__init__(message)
        self.key, self.expected, self.example = key, expected, example


_NO_DEFAULT = object()
# The names the model and data registries define (dml_core.models.backbones.BACKBONES,
# dml_core.data.transforms.STYLES, dml_core.models.heads.GD_CONFIGS), spelled here so that reading
# the schema does not import torch; tests/test_methods_schema.py checks that they agree.
BACKBONE_NAMES = ("resnet50", "bninception", "googlenet", "resnext50_32x4d", "resnet18",
                  "resnet18_s2", "vit_s16_dino", "vit_s14_dinov2")
TRANSFORM_STYLES = ("squash_random_crop", "cgd", "random_resized_crop", "toy")
GD_CONFIGS = ("S", "M", "G", "SM", "MS", "SG", "GS", "MG", "GM", "SMG", "MSG", "GSM")


@dataclass(frozen=True)
class Key:
    """One recipe key.

    type: ``int``, ``float``, ``bool``, ``str``, ``list[int]``, ``list[float]`` or ``dict``;
    alternatives joined by ``|`` (``int|None``: an integer or null). range: for numbers (each
    element of a list) ``> 0``, ``>= 1``, ``[0, 1)``, ...; choices: the allowed strings.
    default: the value every row has unless it sets its own (:data:`ROW_DEFAULTS`).
    """

    name: str
    type: str
    meaning: str
    range: str = ""
    choices: tuple = ()
    kind: str = "method"
    default: Any = _NO_DEFAULT
    example: Any = None
    length: int | None = None  # a list's fixed length
    neutral: bool = False      # overriding it cannot change a result (keeps ``reported``)
    shortening: bool = False   # overriding it shortens the training (marks ``shortened``)
    check: Callable[[Any], str | None] | None = None  # a rule across a list's elements

    @property
    def overridable(self) -> bool:
        return self.kind not in ("row", "record") or self.name == "reported"

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    def sample(self) -> Any:
        """A valid value, for messages: the example, else the default."""
        if self.example is None and self.has_default:
            return self.default
        return self.example


def _ascending(pair: list) -> str | None:
    return None if pair[0] <= pair[1] else "the first value must not exceed the second"


_K = Key
_KEYS: tuple[Key, ...] = (
    # ---- the row: chosen by get_recipe's arguments -------------------------------------------
    _K("name", "str", "the recipe's name, `<method>/<data set>/<backbone>[/<variant>]`; a recipe "
       "with overrides gets ` [key=value, ...]` appended", kind="row",
       example="cgd/cub/resnet50/cropped"),
    _K("method", "str", "the method (its registry name, `dml_core.methods.registry`)", kind="row",
       example="cgd"),
    _K("dataset", "str", "the data set it trains and is evaluated on", kind="row", example="cub"),
    _K("backbone", "str", "the trunk network", choices=BACKBONE_NAMES, kind="row",
       example="resnet50"),
    _K("crop", "bool", "crop every image to its bounding box (car, cub, demo)", kind="row",
       default=False),
    _K("reported", "str|None", "key of the authors' number this recipe reproduces "
       "(`dml_core.report.reported`); null once a setting differs from the published row",
       kind="row", example=None),
    # ---- data: read by the training code -----------------------------------------------------
    _K("pretrained", "bool", "start from ImageNet weights (read from the torch cache)",
       kind="data", default=True),
    _K("embedding_dim", "int", "dimension D of the L2-normalised embedding", ">= 1", kind="data",
       example=512),
    _K("transform", "str", "image transform style (`dml_core.data.transforms`)",
       choices=TRANSFORM_STYLES, kind="data", example="random_resized_crop"),
    _K("crop_size", "int", "side of the training crop and the test centre crop (px)", ">= 1",
       kind="data", example=224),
    _K("resize_size", "int", "side the image is resized to before the centre crop (px)", ">= 1",
       kind="data", example=256),
    _K("hflip", "bool", "random horizontal flips in training", kind="data", default=True),
    _K("rrc_scale", "list[float]", "area range of RandomResizedCrop (torchvision's default, as in "
       "every original code)", "(0, 1]", kind="data", default=[0.08, 1.0], length=2,
       check=_ascending),
    _K("sampler", "str", "how training batches are drawn", choices=("m_per_class", "shuffle"),
       kind="data", example="shuffle"),
    _K("batch_size", "int", "images per optimiser step", ">= 1", kind="data", example=32),
    _K("samples_per_class", "int|None", "images per class in a batch (`m_per_class`; null for "
       "`shuffle`)", ">= 1", kind="data", example=4),
    _K("drop_last", "bool", "drop the last incomplete batch (`shuffle`)", kind="data",
       example=True),
    _K("cache", "bool", "decode the images once into a cache (`dml_core.data.cache`); the "
       "numbers do not change", kind="data", default=False, neutral=True),
    _K("num_workers", "int|None", "data-loader workers (null: chosen for the machine)", ">= 0",
       kind="data", default=None, neutral=True),
    _K("eval_batch_size", "int", "images per evaluation batch", ">= 1", kind="data",
       example=250, neutral=True),
    # ---- training: read by the training loop -------------------------------------------------
    _K("epochs", "int", "training epochs", ">= 1", kind="training", example=8, shortening=True),
    _K("max_steps_per_epoch", "int|None", "cap on the optimiser steps of an epoch (null: every "
       "batch)", ">= 1", kind="training", default=None, shortening=True),
    _K("eval_every", "int", "evaluate every N epochs (and after the last)", ">= 1",
       kind="training", default=1),
    _K("seed", "int", "random seed: initialisation, sampling order, augmentation, validation "
       "classes", "[0, 4294967295]", kind="training", example=0),
    _K("validation_fraction", "float", "fraction of the training classes held out to select the "
       "epoch (0: the best epoch is chosen on the test set, as the original code)", "[0, 1)",
       kind="training", default=0.0),
    # ---- the methods' own keys (dml_core.methods.<method> documents each) ----------------------
    _K("lr", "float", "learning rate of the trunk (of every parameter, unless the method has "
       "its own rates)", "> 0", example=0.001),
    _K("setup", "str", "the build: `paper` (the authors' network and optimiser) or `shared` (the "
       "fair protocol's one network and optimiser, `dml_core.methods.shared`)",
       choices=("paper", "shared"), kind="training", default="paper"),
    _K("shared_optimizer", "str", "the shared build's optimiser (`setup: shared`): `adam` (L2 weight "
       "decay) or `adamw` (decoupled; the ViT track)", choices=("adam", "adamw"), kind="training",
       default="adam"),
    _K("weight_decay", "float", "weight decay (0 where the authors' build has none)", ">= 0",
       default=0.0, example=0.0001),
    _K("momentum", "float", "NormSoftmax: SGD momentum; AsymptoticProxy: weight m of the new "
       "features in the moving-proxy update", "[0, 1]", example=0.5),
    _K("optimizer", "str", "the trunk optimiser of NormSoftmax (`sgd` as the original; `adam`; "
       "`adamw` for the ViT track), AsymptoticProxy and CGD (`adam` as the original; `adamw`)",
       choices=("sgd", "adam", "adamw"), example="sgd"),
    _K("warmup_epochs", "int", "epochs that train only the head and the proxies", ">= 0",
       default=0, example=1),
    _K("lr_step", "int|None", "StepLR step (epochs); null: half the (post-warm-up) epochs",
       ">= 1", default=None, example=10),
    _K("lr_gamma", "float", "learning-rate decay factor of the schedule", "(0, 1]",
       example=0.5),
    _K("lr_milestones", "list[int]|None", "CGD's MultiStepLR epochs; null: [0.6 E, 0.8 E]",
       ">= 1", example=[12, 16]),
    _K("freeze_bn", "bool", "backbone BatchNorm statistics frozen (eval mode) every epoch",
       example=True),
    _K("temperature", "float", "softmax temperature T of the proxy / classification loss",
       "> 0", example=0.05),
    _K("margin", "float", "the loss's margin (CGD: triplet margin; Proxy-Anchor and PP: delta; "
       "AMLoss: initial learnable margin and delta_n)", ">= 0", example=0.1),
    _K("refactor", "str", "NormSoftmax's embedding layer: the original's Linear with bias, or "
       "the official code's", choices=("linear_bias", "official"), example="linear_bias"),
    _K("proxy_weight_decay", "bool", "NormSoftmax: weight decay on the proxies too", example=True),
    _K("gd_config", "str", "CGD's global descriptors, in order (S: sum/avg, M: max, G: GeM); "
       "the first one feeds the auxiliary classifier", choices=GD_CONFIGS, example="SG"),
    _K("smoothing", "float", "CGD: label smoothing epsilon of the classification loss",
       "[0, 1)", example=0.1),
    _K("gem_clamp", "bool", "CGD: clamp GeM's input at 1e-6 (False: the original's NaN-prone "
       "form)", example=True),
    _K("loss", "str", "PP's loss (`positive_only`: the ebad4cb ablation)",
       choices=("proxy_anchor", "normalized_softmax", "positive_only"), example="proxy_anchor"),
    _K("positive_proxy", "bool|str", "PP: the positive-proxy gradient (true = `embeddings`, "
       "f494707; `proxies`: the af9156d ablation)", choices=("embeddings", "proxies"),
       example=True),
    _K("alpha", "float", "scale alpha of Proxy-Anchor (PP and the Proxy-Anchor baseline)",
       "> 0", example=32.0),
    _K("scale", "float", "PP's normalized-softmax scale (1 / temperature)", "> 0", example=32.0),
    _K("refactor_lr", "float", "PP: learning rate of the embedding layer", "> 0", example=1e-4),
    _K("proxy_lr", "float", "PP: learning rate of the proxies", "> 0", example=1e-2),
    _K("proxy_lr_mult", "float|None", "proxies' learning rate = this x lr (Proxy-Anchor, AMLoss "
       "and the shared build; null where the authors' build has none)", "> 0", default=None,
       example=100.0),
    _K("proxy_init", "str|None", "how the proxies are drawn (`dml_core.losses.functional."
       "init_proxies`; null: the method's own)", choices=("kaiming_uniform", "kaiming_normal_fan_out",
       "randn", "unit_randn"), default=None, example="kaiming_normal_fan_out"),
    _K("unfreeze_bn_affine_after_warmup", "bool", "Proxy-Anchor / AMLoss: the original's "
       "unfreezing of BatchNorm's affine parameters after the warm-up", example=True),
    _K("bn_momentum", "float|str|None", "Proxy-Anchor / AMLoss: momentum of every BatchNorm2d "
       "(`original`: the original BN-Inception port's 0.9; null: torch's default)", "(0, 1]",
       choices=("original",), example="original"),
    _K("grad_clip_value", "float|None", "clip every gradient to +-this before the step (null: "
       "no clipping)", "> 0", default=None, example=10.0),
    _K("alpha_p", "float", "AMLoss: scale of the positive term", "> 0", example=32.0),
    _K("alpha_n", "float", "AMLoss: scale of the negative term", "> 0", example=32.0),
    _K("delta", "float", "AMLoss: delta of the proxy-proxy regulariser", ">= 0", example=0.1),
    _K("lam", "float", "AMLoss: weight lambda of the proxy-proxy regulariser", ">= 0",
       example=1.0),
    _K("mrg_lr", "float", "AMLoss: learning rate of the margins", "> 0", example=1e-4),
    _K("mrg_lr_step", "int", "AMLoss: StepLR step of the margins (epochs)", ">= 1", example=10),
    _K("mrg_lr_gamma", "float", "AMLoss: decay factor of the margins' learning rate", "(0, 1]",
       example=0.5),
    _K("neg_uses_learnable_margin", "bool", "AMLoss: the negative term uses the learnable "
       "margins (LDM at e4e4832)", example=False),
    _K("pp_scale", "float", "AMLoss: scale kappa of the proxy-proxy term", ">= 0", example=1.0),
    _K("pp_normaliser", "str", "AMLoss: the proxy-proxy term's normaliser (C classes or |P+|)",
       choices=("C", "P+"), example="C"),
    # ---- written by the override machinery (never set by hand) --------------------------------
    _K("overrides", "dict", "the keys changed from the row and their values", kind="record"),
    _K("base_name", "str", "name of the row the overrides were applied to", kind="record"),
    _K("base_reported", "str|None", "the row's `reported` key", kind="record"),
    _K("shortened", "bool", "true when `epochs` or `max_steps_per_epoch` was changed",
       kind="record"),
)
#: Every recipe key by name, in the documentation's order.
KEYS: dict[str, Key] = {k.name: k for k in _KEYS}
assert len(KEYS) == len(_KEYS), "a recipe key is declared twice"

#: The original command-line names (LDM / Proxy-Anchor ``train.py``: ``--bn-freeze``,
#: ``--lr-decay-step``, ``--lr-decay-gamma``) accepted as override keys; they are recorded under
#: the recipe's one name for the setting.
KEY_ALIASES = {"bn_freeze": "freeze_bn", "lr_decay_step": "lr_step", "lr_decay_gamma": "lr_gamma"}
#: Override keys that cannot change a result (a run overriding only these keeps its ``reported``).
NEUTRAL_KEYS = frozenset(k.name for k in _KEYS if k.neutral)
#: Override keys that shorten the training: a run overriding one of them is marked ``shortened``.
SHORTENING_KEYS = frozenset(k.name for k in _KEYS if k.shortening)
#: Keys added to a recipe whose overrides changed it (never valid as overrides themselves).
RECORD_KEYS = tuple(k.name for k in _KEYS if k.kind == "record")
#: The value every recipe row has unless it sets its own.
ROW_DEFAULTS: dict[str, Any] = {k.name: k.default for k in _KEYS if k.has_default}


# ------------------------------------------------------------------------------- checking
def _bounds(text: str) -> tuple[float, float, bool, bool]:
    """``"> 0"`` → (0, inf, open, closed); ``"[0, 1)"`` → (0, 1, closed, open)."""
    text = text.strip()
    if text[0] in "[(":
        lo, hi = (float(x) for x in text[1:-1].split(","))
        return lo, hi, text[0] == "(", text[-1] == ")"
    op, value = text.split()
    return float(value), math.inf, op == ">", False


def _in_range(x: float, text: str) -> bool:
    lo, hi, lo_open, hi_open = _bounds(text)
    return (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)


_ARTICLE = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "dict": "a mapping", "None": "null"}


def _with_range(words: str, rng: str) -> str:
    return f"{words} in {rng}" if rng[0] in "[(" else f"{words} {rng}"


def describe(key: Key) -> str:
    """What ``key`` accepts, in words: ``"a number > 0"``, ``"an integer >= 1 or null"``."""
    parts = []
    for alt in key.type.split("|"):
        if alt.startswith("list["):
            n = f"{key.length} " if key.length else ""
            words = f"a list of {n}" + {"int": "integers", "float": "numbers"}[alt[5:-1]]
            parts.append(_with_range(words, key.range) if key.range else words)
        elif alt in ("int", "float") and key.range:
            parts.append(_with_range(_ARTICLE[alt], key.range))
        elif alt == "str" and key.choices:
            parts.append("one of " + ", ".join(map(str, key.choices)))
        else:
            parts.append(_ARTICLE[alt])
    return " or ".join(parts)


def _scalar(value: Any, alt: str, key: Key) -> tuple[bool, Any]:
    """Does ``value`` fit the single type ``alt`` of ``key`` (range and choices included)?"""
    if alt == "None":
        return value is None, value
    if alt == "bool":
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, value
    if alt == "int":
        if not isinstance(value, numbers.Integral):
            return False, value
        value = int(value)
    elif alt == "float":
        if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            return False, value
        value = float(value)
    elif alt == "str":
        return isinstance(value, str) and (not key.choices or value in key.choices), value
    elif alt == "dict":
        return isinstance(value, dict) and all(isinstance(k, str) for k in value), value
    else:
        raise ValueError(f"recipe key {key.name!r}: unknown type {alt!r}")
    return (not key.range or _in_range(value, key.range)), value


def _fit(value: Any, key: Key) -> tuple[bool, Any, str]:
    """(fits, normalised value, why a list of the right elements breaks the key's rule)."""
    rule = ""
    for alt in key.type.split("|"):
        if alt.startswith("list["):
            if not isinstance(value, (list, tuple)) or (key.length and len(value) != key.length):
                continue
            items = [_scalar(v, alt[5:-1], key) for v in value]
            if all(ok for ok, _ in items):
                out = [v for _, v in items]
                rule = key.check(out) if key.check else None
                if not rule:
                    return True, out, ""
            continue
        ok, out = _scalar(value, alt, key)
        if ok:
            return True, out, ""
    return False, value, rule or ""


def canonical(name: str) -> str:
    """The recipe's name for ``name`` (an alias of :data:`KEY_ALIASES` or the name itself)."""
    return KEY_ALIASES.get(name, name)


def _unknown(name: str) -> RecipeError:
    import difflib

    close = difflib.get_close_matches(name, list(KEYS) + list(KEY_ALIASES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return RecipeError(f"unknown recipe key {name!r}{hint}; the keys are listed in "
                       "docs/RECIPE_KEYS.md (dml_core.methods.schema)", key=name)


def coerce(name: str, value: Any) -> Any:
    """``value`` checked against the key ``name`` (an alias is accepted) and normalised.

    Raises :class:`RecipeError` for an unknown key, or a value of the wrong type or outside the
    key's range/choices: ``"batch_size=-5: expected an integer >= 1 (e.g. batch_size=32)"``.
    """
    key = KEYS.get(canonical(name))
    if key is None:
        raise _unknown(name)
    ok, out, rule = _fit(value, key)
    if ok:
        return out
    expected = describe(key) + (f" ({rule})" if rule else "")
    raise RecipeError(f"{name}={value!r}: expected {expected} (e.g. {name}="
                      f"{as_text(key.sample())})", key=key.name, expected=expected,
                      example=key.sample())


def as_text(value: Any) -> str:
    """A value as one types it (YAML, ``--set``): null, true, [0.08, 1.0], 0.001."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(as_text(v) for v in value) + "]"
    return str(value)


def unread_by_shared_build(recipe: dict[str, Any], name: str, value: Any) -> bool:
    """True for a method key set to None in a ``setup: shared`` recipe: the fair protocol's shared
    build does not read that key of the authors' build (``dml_core.methods.shared``), and None
    says so."""
    key = KEYS.get(canonical(name))
    return (value is None and key is not None and key.kind == "method"
            and recipe.get("setup") == "shared")


def check_recipe(recipe: dict[str, Any]) -> list[str]:
    """Every problem of a whole recipe (unknown keys, bad values), as messages; [] when valid."""
    problems = []
    for name, value in recipe.items():
        if unread_by_shared_build(recipe, name, value):
            continue
        try:
            coerce(name, value)
        except RecipeError as exc:
            problems.append(str(exc))
    return problems
