"""``train(recipe, run_dir)``: build data, method and evaluator from a recipe, then :func:`fit`.

The recipe is plain data with the keys of docs/ARCHITECTURE.md. Everything method-specific is
left to ``dml_core.methods.build_method``; everything about images to ``dml_core.data``; the
metrics to ``dml_core.evaluation``. Those packages are imported inside the functions, so the
engine (``fit``) works without them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dml_core.core.allocator import keep_freed_memory
from dml_core.core.run_folder import RunFolder

from .engine import Evaluation, fit, resolve_device
from .provenance import TRAINING_CODE, code_fingerprint, git_commit
from .seeding import seed_everything
from .selection import ClassSubset, split_classes

#: Keys every recipe has (docs/ARCHITECTURE.md); ``train`` refuses a recipe that lacks one.
REQUIRED_KEYS = ("name", "method", "dataset", "backbone", "pretrained", "crop", "embedding_dim",
                 "epochs", "batch_size", "sampler", "samples_per_class", "drop_last", "transform",
                 "crop_size", "resize_size", "eval_batch_size", "eval_every", "seed",
                 "num_workers", "validation_fraction", "max_steps_per_epoch")

@dataclass
class DataBundle:
    """Everything ``train`` builds from the data side of a recipe."""

    train_loader: Any
    test_loader: Any
    gallery_loader: Any | None
    val_loader: Any | None
    num_classes: int
    protocol: str
    val_protocol: str | None
    info: dict


def train(recipe: dict, run_dir: str | os.PathLike, data_root: str | os.PathLike | None = None,
          device: str | torch.device | None = None, resume: bool = True,
          progress: bool = True, evaluate_test: bool = True) -> dict:
    """Train ``recipe`` into ``run_dir`` and return the summary (see docs/ARCHITECTURE.md).

    A finished run (summary status ``complete``, all epochs) returns at once and an interrupted
    one resumes from its last complete epoch (unless ``resume=False``), but only when it was
    produced by the same recipe (``epochs`` aside: more epochs continue), the same training code
    and the same prepared data (the provenance, :mod:`.provenance`). Otherwise, and when its
    resume point cannot be read, every file of the old run is moved aside and deleted and
    training starts from scratch, saying why. One process at a time trains into a folder (its
    lock; a second one waits, then reuses or resumes the result): :meth:`RunFolder.open`.

    ``evaluate_test=False`` (the tuning, :mod:`dml_core.study.tuning`): the test split is never
    loaded nor evaluated; the run evaluates and selects on its validation split only (the recipe
    must carve one: ``validation_fraction`` > 0), and no features are saved.
    """
    missing = [k for k in REQUIRED_KEYS if k not in recipe]
    if missing:
        raise KeyError(f"recipe {recipe.get('name')!r} lacks the keys {missing}")
    recipe = dict(recipe)
    check_recipe_values(recipe)
    if not evaluate_test and not float(recipe["validation_fraction"] or 0) > 0:
        raise ValueError(f"recipe {recipe.get('name')!r}: evaluate_test=False needs a validation "
                         "split (validation_fraction > 0) to evaluate and select on")
    run = RunFolder(run_dir)
    epochs = int(recipe["epochs"])
    data_files = data_fingerprints(recipe, data_root)
    provenance = {"code": code_fingerprint(), "training_code": list(TRAINING_CODE),
                  "data": {ds: fp for ds, (fp, _) in data_files.items()},
                  "data_index": {ds: path for ds, (_, path) in data_files.items()},
                  "weights": pretrained_weights(recipe, data_root, verbose=progress),
                  "git_commit": git_commit()}
    if not evaluate_test:
        provenance["evaluated"] = "validation only"
    with run.open(recipe, provenance, epochs, resume) as resume:
        if resume and run.is_complete(epochs):
            return run.read_summary()

        device = resolve_device(device)
        keep_freed_memory()  # CPU steps reuse their large blocks (dml_core.core.allocator)
        if recipe["seed"] is not None:
            seed_everything(int(recipe["seed"]), bool(recipe.get("deterministic", False)))
        data = build_data(recipe, data_root, test=evaluate_test)
        method = _build_method(recipe, data.num_classes, device)
        evaluator = build_evaluator(data.test_loader, data.protocol, device, data.gallery_loader,
                                    data.val_loader, data.val_protocol, progress=progress)
        complexity = _complexity(method, recipe)
        selection = recipe.get("selection_metric") or (
            "val/dense/R@1" if data.val_loader is not None else "test/dense/R@1")
        return fit(method, data.train_loader, run_dir, epochs, evaluator,
                   eval_every=int(recipe["eval_every"] or 1), device=device,
                   max_steps_per_epoch=recipe["max_steps_per_epoch"], recipe=recipe,
                   protocol=data.protocol, selection_metric=selection, resume=resume,
                   progress=progress, summary_extra={"num_classes": data.num_classes,
                                                     "data": data.info, "complexity": complexity,
                                                     "provenance": provenance})


def check_recipe_values(recipe: dict) -> None:
    """Reject values that would train nothing or fail deep inside torch: ``epochs`` and
    ``crop_size`` must be positive integers."""
    for key in ("epochs", "crop_size"):
        value = recipe.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"recipe {recipe.get('name')!r}: {key} must be a positive integer, "
                             f"got {value!r}")


def data_fingerprints(recipe: dict, data_root: str | os.PathLike | None = None
                      ) -> dict[str, tuple[str, str]]:
    """``{dataset: ("v<prepare version>:<sha256 of its index.csv>", index path)}`` for the data
    the recipe reads. An unprepared data set raises the data layer's FileNotFoundError."""
    from dml_core.data import RetrievalDataset, index_path
    from dml_core.data.index import index_fingerprint

    path = index_path(recipe["dataset"], data_root)
    if not path.is_file():
        RetrievalDataset(recipe["dataset"], "train", data_root=data_root)  # raises the clear error
    return {recipe["dataset"]: (index_fingerprint(path), str(path.resolve()))}


def pretrained_weights(recipe: dict, data_root: str | os.PathLike | None = None,
                       verbose: bool = True) -> dict | None:
    """``{"file", "sha256", "source"}`` of the pretrained weights the recipe starts from (None
    from scratch): what ``provenance.json`` records, so that other weights retrain the run. The
    demo's stand-in (:mod:`dml_core.models.standin`) is built first when missing."""
    from dml_core.models.backbones import find_weights, pretraining_source, weights_fingerprint

    if not recipe["pretrained"]:
        return None
    source = pretraining_source(recipe["dataset"])
    if source == "digits":
        from dml_core.models.standin import ensure_standin

        ensure_standin(data_root, verbose=verbose)
    return {**weights_fingerprint(find_weights(recipe["backbone"], source)), "source": source}


def _complexity(method, recipe: dict) -> dict:
    """Parameters (model + criterion) and MACs of one forward at the recipe's crop size
    (``macs``: torch.utils.flop_counter; ``macs_thop``: the authors' thop accounting)."""
    from dml_core.models.complexity import complexity_report

    size = int(recipe["crop_size"])
    proxies = getattr(method.criterion, "proxies", None)
    return complexity_report(method.model, method.criterion, input_size=(1, 3, size, size),
                             proxies=proxies if isinstance(proxies, torch.Tensor) else None)


def protocol_of(recipe: dict) -> str:
    """The evaluation protocol: ``recipe["protocol"]`` if set, ``toy`` for stl10, else the data set."""
    return recipe.get("protocol") or {"stl10": "toy"}.get(recipe["dataset"], recipe["dataset"])


def build_data(recipe: dict, data_root: str | os.PathLike | None = None,
               test: bool = True) -> DataBundle:
    """Datasets, transforms, the (deterministic per epoch) batch sampler and the loaders
    (``test=False``: no test loader; the test split is not even read)."""
    from dml_core.data import RetrievalDataset, make_eval_loader, make_train_loader
    from dml_core.data import samplers as samplers_mod
    from dml_core.data.preparation import prepared_splits
    from dml_core.data.transforms import build_transform
    from dml_core.evaluation import get_protocol

    ds, crop, workers = recipe["dataset"], bool(recipe["crop"]), recipe["num_workers"]
    seed = int(recipe["seed"]) if recipe["seed"] is not None else 0

    def transform(train: bool):
        return build_transform(recipe["transform"], train=train, backbone=recipe["backbone"],
                               crop_size=recipe["crop_size"], resize_size=recipe["resize_size"],
                               hflip=recipe.get("hflip", True),
                               rrc_scale=tuple(recipe.get("rrc_scale", (0.08, 1.0))))

    def split(name: str, train: bool):
        if recipe.get("cache"):  # decoded once; the same tensors as the PIL path (data/cache.py)
            from dml_core.data.cache import cached_split

            return cached_split(recipe, name, train, data_root, device_normalize=train)
        return RetrievalDataset(ds, name, transform=transform(train), crop=crop, data_root=data_root)

    train_set = split("train", True)
    info: dict[str, Any] = {"train_images": len(train_set), "train_classes": train_set.num_classes}
    val_loader, val_protocol = None, None
    fraction = float(recipe["validation_fraction"] or 0.0)
    if fraction > 0:
        train_classes, val_classes = split_classes(train_set.labels, fraction, seed)
        # the held-out classes' images: their own split when the data set has one (the demo's
        # validation images, made of scans no training image uses), else their training images
        val_images = split("val" if "val" in prepared_splits(ds, data_root) else "train", False)
        val_set = ClassSubset(val_images, val_classes)
        train_set = ClassSubset(train_set, train_classes)
        val_protocol = recipe.get("validation_protocol") or _self_retrieval_protocol(protocol_of(recipe))
        val_loader = make_eval_loader(val_set, recipe["eval_batch_size"], num_workers=workers)
        info.update(train_images=len(train_set), train_classes=train_set.num_classes,
                    val_images=len(val_set), val_classes=[int(c) for c in val_classes])

    if recipe["sampler"] == "m_per_class":
        batch_sampler = samplers_mod.MPerClassBatchSampler(
            train_set.labels, recipe["batch_size"], recipe["samples_per_class"], seed=seed)
    elif recipe["sampler"] == "shuffle":
        batch_sampler = samplers_mod.ShuffleBatchSampler(
            len(train_set), recipe["batch_size"], drop_last=bool(recipe["drop_last"]), seed=seed)
    else:
        raise ValueError(f"unknown sampler {recipe['sampler']!r}; expected m_per_class or shuffle")
    train_loader = make_train_loader(train_set, batch_sampler, num_workers=workers)

    eval_bs = recipe["eval_batch_size"]
    if not test:
        return DataBundle(train_loader, None, None, val_loader, train_set.num_classes,
                          protocol_of(recipe), val_protocol, info)
    if get_protocol(protocol_of(recipe)).mode == "query_gallery":
        test_loader = make_eval_loader(split("query", False), eval_bs, num_workers=workers)
        gallery_loader = make_eval_loader(split("gallery", False), eval_bs, num_workers=workers)
    else:
        test_loader = make_eval_loader(split("test", False), eval_bs, num_workers=workers)
        gallery_loader = None
    info["test_images"] = len(test_loader.dataset)
    return DataBundle(train_loader, test_loader, gallery_loader, val_loader, train_set.num_classes,
                      protocol_of(recipe), val_protocol, info)


def _self_retrieval_protocol(protocol: str) -> str:
    """Validation is self-retrieval within held-out training classes; a query/gallery protocol
    (isc) is replaced by the self-retrieval protocol with the most similar Ks (sop)."""
    from dml_core.evaluation import get_protocol

    return "sop" if get_protocol(protocol).mode == "query_gallery" else protocol


def build_evaluator(test_loader, protocol: str, device: torch.device | str,
                    gallery_loader=None, val_loader=None, val_protocol: str | None = None,
                    progress: bool = True):
    """``evaluator(model, epoch) -> Evaluation`` over the test (query/gallery) and validation sets.

    Metric keys are ``test/<key>`` and ``val/<key>`` for every key of ``evaluate(...)``; the test
    features (and gallery features) come back for the run folder's saved features. Without
    a ``test_loader`` only the validation split is evaluated (and no features come back).
    """
    from dml_core.evaluation import evaluate, extract_features

    def features_of(model, loader):
        return extract_features(model, loader, device, progress=progress)

    def evaluator(model: torch.nn.Module, epoch: int) -> Evaluation:
        if test_loader is None:
            val = features_of(model, val_loader)
            return Evaluation({f"val/{k}": float(v) for k, v in
                               evaluate(val.features, val.labels, val_protocol).items()}, None)
        test = features_of(model, test_loader)
        features = {"features": _tensor(test.features), "labels": _tensor(test.labels),
                    "paths": [str(p) for p in test.paths]}
        kwargs = {}
        if gallery_loader is not None:
            gallery = features_of(model, gallery_loader)
            kwargs = {"gallery_features": gallery.features, "gallery_labels": gallery.labels}
            features.update(gallery_features=_tensor(gallery.features),
                            gallery_labels=_tensor(gallery.labels),
                            gallery_paths=[str(p) for p in gallery.paths])
        metrics = {f"test/{k}": float(v) for k, v in
                   evaluate(test.features, test.labels, protocol, **kwargs).items()}
        if val_loader is not None:
            val = features_of(model, val_loader)
            metrics.update({f"val/{k}": float(v) for k, v in
                            evaluate(val.features, val.labels, val_protocol).items()})
        return Evaluation(metrics, features)

    return evaluator


def _tensor(x) -> torch.Tensor:
    return x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _build_method(recipe: dict, num_classes: int, device: torch.device):
    from dml_core.methods import build_method

    return build_method(recipe, num_classes, device=device)
