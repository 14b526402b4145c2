r"""The STL-10 toy of AsymptoticProxy (leftthomas/ProxyAnchor, ``toy.py``): moving vs learnable proxies
shaping a 2-D (unit circle) or 3-D (unit sphere) embedding.

Data: STL-10 fold 0, training classes 0–6 (≈100 images each), unseen test classes 7–9 (first 60
each, relabelled 0–2); without STL-10 on disk the scikit-learn digits stand-in with the same split
shape (train digits 0–6, test 7–9) — ``ToyData.source`` says which, and so do the printout and
every figure title. Transforms: train HFlip → ToTensor → ImageNet Normalize; test ToTensor →
Normalize (``build_transform("toy", ...)``), on an in-memory dataset over the uint8 arrays.

Training: :class:`dml_core.methods.toy.ToyMethod` driven by the one loop
:func:`dml_core.training.fit`. After every epoch the evaluator (eval mode, under no_grad) embeds
the test images (R@1 by self-retrieval, −∞ self-exclusion) and a fixed subset of the training
images, and records the normalised proxies. Everything lands in the run folder
(:class:`dml_core.core.run_folder.RunFolder`):

- the variant's history (:meth:`RunFolder.toy_history`; variant ``moving`` | ``learnable``; tensors, str and numbers only,
  ``torch.load(..., weights_only=True)``): ``epochs`` (K,) with K = E + 1 (epoch 0 = before
  training), ``proxies`` (K, C, d), ``train_embeddings`` (K, Ns, d) + ``train_labels`` (Ns,),
  ``test_embeddings`` (K, Nt, d) + ``test_labels`` (Nt,), ``test_recall`` (K,) R@1,
  ``train_loss``/``train_accuracy`` (K,) (NaN at epoch 0), ``trail`` (S + 1, C, d) the proxies
  after every optimiser step with ``trail_epoch`` (S + 1,), plus ``variant``, ``source``,
  ``momentum``, ``learnable``, ``feature_dim``, class names.
- what every training run writes (the engine; :class:`dml_core.core.run_folder.RunFolder`).

Config: a plain dict (:data:`TOY_DEFAULTS` = the original toy; :data:`TOY_PROFILES` adjusts the
non-parameter keys per profile; :func:`toy_config` merges and checks). Entry points:
:func:`run_toy` (one variant), :func:`run_momentum_sweep`, :func:`run_toy_study` (moving +
learnable + sweep + every figure: notebook 07 in one call, its config from
:func:`config_from_parameters`).
"""
from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from dml_core.data.toy import ToyArrayDataset, prepare_toy_arrays, source_label
from dml_core.core.io import read_json, torch_save, write_json, write_text
from dml_core.core.run_folder import RunFolder

__all__ = [
    "TOY_DEFAULTS", "TOY_PROFILES", "toy_config", "config_from_parameters", "run_toy",
    "load_toy_history", "run_momentum_sweep", "run_toy_study", "history_path", "write_toy_study",
    "read_toy_study",
]

#: The original toy with its fixes; every key of a toy config.
TOY_DEFAULTS: dict[str, Any] = {
    "source": "auto",           # auto | stl10 | digits
    "data_root": None,          # None = dml_core.core.paths.data_root()
    "feature_dim": 2,           # 2 (unit circle) or 3 (unit sphere)
    "epochs": 30,
    "batch_size": 128,
    "lr": 1e-4,                 # Adam; hard-coded in the seed
    "lr_step": None,            # StepLR step; None = epochs // 2
    "lr_gamma": 0.1,
    "temperature": 0.03,
    "momentum": 0.5,            # m weights the NEW features
    "learnable": False,         # True: proxies are an nn.Parameter trained by Adam
    "pretrained": True,         # ImageNet resnet18 from the torch cache
    "freeze_bn": None,          # None = freeze backbone BN2d iff pretrained (seed: always)
    "max_train_per_class": None,  # None = every training image
    "digits_per_class": 100,    # the digits stand-in is capped like STL-10 fold 0 (~100/class)
    "image_size": None,         # None = native (STL-10 96 px, digits 32 px); else resize once
    "snapshot_per_class": 50,   # training images per class embedded every epoch for the pictures
    "eval_batch_size": 256,
    "seed": 0,
    "device": "auto",           # auto | cpu | cuda
    "num_workers": 0,
    "progress": True,
}

#: Per-profile changes of the keys that are not notebook parameters. A profile not listed here
#: (e.g. a copy of full.yaml under another name) gets :data:`TOY_DEFAULTS` unchanged, the original code's
#: setting: no profile inherits another's small settings by accident.
TOY_PROFILES: dict[str, dict[str, Any]] = {
    "full": {},
    # from scratch on 16-px digits (8x8 originals, nothing lost), 60 per class (the cap of the
    # the original code's FashionMNIST toy, 33b5aaf), lr x10 for the few steps
    "demo": {"epochs": 4, "pretrained": False, "image_size": 16, "snapshot_per_class": 40,
             "lr": 1e-3, "digits_per_class": 60},
    "smoke": {"epochs": 1, "pretrained": False, "image_size": 16, "snapshot_per_class": 10,
              "lr": 1e-3, "digits_per_class": 20, "progress": False},
}

VARIANTS = ("moving", "learnable")


def toy_config(profile: str = "demo", **overrides: Any) -> dict[str, Any]:
    """:data:`TOY_DEFAULTS` ← ``TOY_PROFILES[profile]`` (nothing for unlisted names) ← overrides.

    Overrides equal to None keep the profile's value for ``epochs`` only; unknown keys raise.
    """
    unknown = sorted(set(overrides) - set(TOY_DEFAULTS))
    if unknown:
        raise KeyError(f"unknown toy config keys {unknown}; valid: {sorted(TOY_DEFAULTS)}")
    cfg = {**copy.deepcopy(TOY_DEFAULTS), **TOY_PROFILES.get(profile, {})}
    for key, value in overrides.items():
        if key == "epochs" and value is None:
            continue
        cfg[key] = value
    return _check(cfg)


def _check(cfg: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(cfg) - set(TOY_DEFAULTS))
    if unknown:
        raise KeyError(f"unknown toy config keys {unknown}; valid: {sorted(TOY_DEFAULTS)}")
    cfg = {**copy.deepcopy(TOY_DEFAULTS), **cfg}
    if cfg["source"] not in ("auto", "stl10", "digits"):
        raise ValueError(f"source must be auto, stl10 or digits, got {cfg['source']!r}")
    if int(cfg["feature_dim"]) not in (2, 3):
        raise ValueError(f"feature_dim must be 2 or 3, got {cfg['feature_dim']!r}")
    if int(cfg["epochs"]) < 1 or int(cfg["batch_size"]) < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    if not 0.0 <= float(cfg["momentum"]) <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {cfg['momentum']}")
    return cfg


def toy_code_fingerprint() -> str:
    """The training code's fingerprint (:func:`dml_core.training.provenance.code_fingerprint`)
    combined with this module's source, which builds the toy's data, model and loop."""
    import hashlib

    from dml_core.training.provenance import code_fingerprint

    return hashlib.sha256(code_fingerprint().encode() + Path(__file__).read_bytes()).hexdigest()


def history_path(run_dir: str | os.PathLike, variant: str) -> Path:
    return RunFolder(run_dir).toy_history(variant)


def config_from_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The toy config of notebook 07's validated parameters: the profile's settings
    (:data:`TOY_PROFILES`) with the notebook's parameters on top."""
    return toy_config(params["profile"], **{k: params[k] for k in (
        "source", "data_root", "feature_dim", "epochs", "batch_size", "pretrained",
        "max_train_per_class", "device")})


# ------------------------------------------------------------------------------------- one run
def _stack(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(r, dtype=torch.float32) for r in rows])


class _History:
    """Per-epoch records of one run, saved atomically after every epoch (so a resume keeps them)."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path, self.meta = path, meta
        self.rows: dict[int, dict[str, torch.Tensor]] = {}
        self.trail: list[torch.Tensor] = []
        self.trail_epoch: list[int] = []
        if path.is_file():
            old = torch.load(path, weights_only=True)
            for k, e in enumerate(old["epochs"].tolist()):
                self.rows[e] = {key: old[key][k] for key in
                                ("proxies", "train_embeddings", "test_embeddings", "test_recall")}
            self.trail = list(old["trail"])
            self.trail_epoch = old["trail_epoch"].tolist()

    def record(self, epoch: int, proxies, train_emb, test_emb, recall: float, trail) -> None:
        self.rows[epoch] = {"proxies": proxies, "train_embeddings": train_emb,
                            "test_embeddings": test_emb, "test_recall": torch.tensor(float(recall))}
        # keep the trail up to the previous epoch, then this epoch's steps (a resume may rerun one)
        kept = [i for i, e in enumerate(self.trail_epoch) if e < epoch]
        self.trail = [self.trail[i] for i in kept] + list(trail)
        self.trail_epoch = [self.trail_epoch[i] for i in kept] + [epoch] * len(trail)

    def to_dict(self, metrics_rows: list[dict] | None = None) -> dict[str, Any]:
        epochs = sorted(self.rows)
        out: dict[str, Any] = dict(self.meta)
        out["epochs"] = torch.tensor(epochs, dtype=torch.int64)
        for key in ("proxies", "train_embeddings", "test_embeddings"):
            out[key] = _stack([self.rows[e][key] for e in epochs])
        out["test_recall"] = torch.stack([self.rows[e]["test_recall"] for e in epochs]).float()
        out["trail"] = _stack(self.trail)
        out["trail_epoch"] = torch.tensor(self.trail_epoch, dtype=torch.int64)
        loss = {r["epoch"]: r for r in (metrics_rows or [])}  # RunFolder.read_metrics rows
        for key in ("train_loss", "train_accuracy"):
            out[key] = torch.tensor([float(loss.get(e, {}).get(key, math.nan)) for e in epochs],
                                    dtype=torch.float32)
        return out

    def save(self, metrics_rows: list[dict] | None = None) -> None:
        torch_save(self.to_dict(metrics_rows), self.path)


def load_toy_history(run_dir_or_file: str | os.PathLike, variant: str | None = None) -> dict:
    """Load a variant's history (from its run folder, or the file itself); without ``variant``,
    the one history the folder holds."""
    p = Path(run_dir_or_file)
    if p.is_dir():
        if variant is None:
            found = [f for f in (history_path(p, v) for v in VARIANTS) if f.is_file()]
            if len(found) != 1:
                raise FileNotFoundError(f"expected the history of one toy variant {VARIANTS} in "
                                        f"{p}, found {[f.name for f in found]}")
            p = found[0]
        else:
            p = history_path(p, variant)
    return torch.load(p, weights_only=True)


def _recipe(cfg: dict[str, Any], source: str, variant: str) -> dict[str, Any]:
    """The run's recipe (its config): the toy config with the keys the report layer expects."""
    return {"name": f"toy/{source}/resnet18/{variant}", "method": "toy", "dataset": f"toy_{source}",
            "backbone": "resnet18", "embedding_dim": int(cfg["feature_dim"]), "crop": False,
            "variant": variant, **{k: v for k, v in cfg.items() if k != "progress"},
            "source": source}


def run_toy(config: dict[str, Any], run_dir: str | os.PathLike) -> dict[str, Any]:
    """Train one toy variant (``config["learnable"]``) into ``run_dir``; return a result dict.

    Result: ``variant``, ``source``, ``momentum``, ``run_dir``, ``history_path``, ``summary`` (the
    engine's), ``final_r1`` and ``best_r1`` (test dense R@1 in [0, 1]), ``train_time_s``. A run
    already complete in ``run_dir`` is reused and an interrupted one resumes, but only when the
    recipe, the training code (this module included) and the toy data are those that produced
    it (its provenance, as :func:`dml_core.training.train`: :meth:`RunFolder.open`); otherwise
    the old files are removed and it is retrained. One process at a time trains into ``run_dir``.
    """
    from dml_core.data import build_transform, make_eval_loader, make_train_loader
    from dml_core.data.samplers import ShuffleBatchSampler
    from dml_core.evaluation import evaluate, extract_features
    from dml_core.methods.toy import ToyMethod
    from dml_core.training import Evaluation, fit, resolve_device, seed_everything

    cfg = _check(dict(config))
    run_dir = Path(run_dir)
    variant = "learnable" if cfg["learnable"] else "moving"
    device = resolve_device(None if cfg["device"] in (None, "auto") else cfg["device"])
    seed_everything(int(cfg["seed"]), deterministic=True)

    data, snap = prepare_toy_arrays(cfg)
    source = data.source
    print(f"toy [{variant}, m={cfg['momentum']:g}, d={cfg['feature_dim']}]: {source_label(source)}; "
          f"{len(data.train_labels)} train images of {len(data.train_class_names)} classes, "
          f"{len(data.test_labels)} test images of {len(data.test_class_names)} unseen classes, "
          f"{data.train_images.shape[1]} px, device {device}")

    recipe = {"feature_dim": int(cfg["feature_dim"]), "pretrained": bool(cfg["pretrained"]),
              "epochs": int(cfg["epochs"]), "temperature": float(cfg["temperature"]),
              "momentum": float(cfg["momentum"]), "learnable": bool(cfg["learnable"]),
              "lr": float(cfg["lr"]), "lr_step": cfg["lr_step"], "lr_gamma": float(cfg["lr_gamma"]),
              "freeze_bn": bool(cfg["pretrained"] if cfg["freeze_bn"] is None else cfg["freeze_bn"])}
    num_classes = int(data.train_labels.max()) + 1
    method = ToyMethod(recipe, num_classes).to(device)

    backbone = "resnet18"
    train_ds = ToyArrayDataset(data.train_images, data.train_labels,
                               build_transform("toy", True, backbone), "train")
    snap_ds = ToyArrayDataset(data.train_images[snap], data.train_labels[snap],
                              build_transform("toy", False, backbone), "train")
    test_ds = ToyArrayDataset(data.test_images, data.test_labels,
                              build_transform("toy", False, backbone), "test")
    workers = cfg["num_workers"]
    train_loader = make_train_loader(
        train_ds, ShuffleBatchSampler(len(train_ds), int(cfg["batch_size"]), False, int(cfg["seed"])),
        num_workers=workers)
    snap_loader = make_eval_loader(snap_ds, int(cfg["eval_batch_size"]), num_workers=workers)
    test_loader = make_eval_loader(test_ds, int(cfg["eval_batch_size"]), num_workers=workers)

    meta = {"variant": variant, "source": source, "momentum": float(cfg["momentum"]),
            "temperature": float(cfg["temperature"]), "learnable": bool(cfg["learnable"]),
            "feature_dim": int(cfg["feature_dim"]),
            "train_class_names": list(data.train_class_names),
            "test_class_names": list(data.test_class_names),
            "train_labels": torch.as_tensor(snap_ds.labels), "test_labels": torch.as_tensor(test_ds.labels)}
    # The reuse rule of every training run: a folder made by another recipe, other code or
    # other data is cleared (its history file too) and retrained, never reused.
    run = RunFolder(run_dir)
    toy_recipe = _recipe(cfg, source, variant)
    provenance = {"code": toy_code_fingerprint(), "data": {"toy": source}}
    with run.open(toy_recipe, provenance, int(cfg["epochs"])) as resume:
        hist = _History(run.toy_history(variant), meta)

        def snapshot(model, epoch: int) -> Evaluation:
            test = extract_features(model, test_loader, device, progress=False)
            train = extract_features(model, snap_loader, device, progress=False)
            metrics = {f"test/{k}": v for k, v in evaluate(test.features, test.labels, "toy").items()}
            trail = method.pop_proxy_trail() if epoch > 0 else [method.proxies.clone()]
            hist.record(epoch, method.proxies.clone(), train.features, test.features,
                        metrics["test/dense/R@1"], trail)
            hist.save(run.read_metrics())
            return Evaluation(metrics=metrics, features=test.to_dict())

        if 0 not in hist.rows:  # the picture before training (eval mode, no_grad, no RNG used)
            method.model.eval()
            with torch.no_grad():
                snapshot(method.model, 0)
        t0 = time.perf_counter()
        summary = fit(method, train_loader, run_dir, int(cfg["epochs"]), evaluator=snapshot,
                      device=device, recipe=toy_recipe, protocol="toy", resume=resume,
                      selection_metric="test/dense/R@1", progress=bool(cfg["progress"]),
                      summary_extra={"toy": {"variant": variant, "source": source,
                                             "source_label": source_label(source)},
                                     "provenance": provenance})
        hist.save(run.read_metrics())  # now with the final epoch's train loss/accuracy
        h = hist.to_dict()
        return {"variant": variant, "source": source, "momentum": float(cfg["momentum"]),
                "feature_dim": int(cfg["feature_dim"]), "run_dir": str(run_dir),
                "history_path": str(hist.path), "summary": summary,
                "final_r1": float(h["test_recall"][-1]), "best_r1": float(h["test_recall"][1:].max()),
                "train_time_s": float(summary.get("train_time_s") or (time.perf_counter() - t0))}


# ------------------------------------------------------------------------------------- sweep
def _momentum_dir(m: float) -> str:
    return f"m{m:g}"


def run_momentum_sweep(config: dict[str, Any], run_dir: str | os.PathLike, momenta: Sequence[float],
                       reuse: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Moving-proxy runs at each momentum into ``<run_dir>/sweep/m<m>/``; a result in ``reuse``
    (from :func:`run_toy`, same config) with the same momentum is taken as is. Writes
    ``<run_dir>/sweep.csv`` (momentum, final_r1, best_r1, run_dir) and returns the rows."""
    run_dir = Path(run_dir)
    known = {round(r["momentum"], 12): r for r in reuse if r.get("variant") == "moving"}
    rows = []
    for m in momenta:
        m = float(m)
        res = known.get(round(m, 12))
        if res is None:
            res = run_toy({**config, "momentum": m, "learnable": False},
                          run_dir / "sweep" / _momentum_dir(m))
        rows.append({"momentum": m, "final_r1": res["final_r1"], "best_r1": res["best_r1"],
                     "run_dir": res["run_dir"]})
    lines = ["momentum,final_r1,best_r1,run_dir"]
    lines += [f"{r['momentum']:g},{r['final_r1']:.6f},{r['best_r1']:.6f},{r['run_dir']}" for r in rows]
    write_text(run_dir / "sweep.csv", "\n".join(lines) + "\n")
    return rows


# ------------------------------------------------------------------------------------- study
def run_toy_study(config: dict[str, Any], run_dir: str | os.PathLike,
                  momenta: Sequence[float] = (), gif: bool = True) -> dict[str, Any]:
    """Notebook 07 in one call: moving (``<run_dir>/moving``) and learnable
    (``<run_dir>/learnable``) proxies, the momentum sweep (reusing the moving run), and every
    figure into its figures folder (08_figures collects them from there). Writes the study's
    results (:attr:`RunFolder.toy_study`) and returns them (R@1 of both variants, the sweep rows,
    the figure paths by name)."""
    from dml_core.report import toy_figures as tf

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    moving = run_toy({**config, "learnable": False}, run_dir / "moving")
    learnable = run_toy({**config, "learnable": True}, run_dir / "learnable")
    sweep = run_momentum_sweep(config, run_dir, momenta, reuse=[moving]) if momenta else []
    histories = {"moving": load_toy_history(moving["history_path"]),
                 "learnable": load_toy_history(learnable["history_path"])}
    figures = tf.make_toy_figures(histories, RunFolder(run_dir).figures, sweep=sweep, gif=gif)
    return write_toy_study(run_dir, config, moving, learnable, sweep, figures,
                           time.perf_counter() - t0)


def write_toy_study(run_dir: str | os.PathLike, config: dict[str, Any], moving: dict[str, Any],
                    learnable: dict[str, Any], sweep: Sequence[dict[str, Any]] = (),
                    figures: dict[str, Sequence] | None = None,
                    wall_time_s: float | None = None) -> dict[str, Any]:
    """Write the toy study's results (:attr:`RunFolder.toy_study`: data source, config, both
    variants' R@1, the sweep, figure paths) and return them."""
    study = {"source": moving["source"], "source_label": source_label(moving["source"]),
             "config": _check(dict(config)),
             "results": {v: {k: r[k] for k in ("variant", "momentum", "final_r1", "best_r1",
                                                "train_time_s", "run_dir", "history_path")}
                         for v, r in (("moving", moving), ("learnable", learnable))},
             "sweep": list(sweep),
             "figures": {k: [str(p) for p in v] for k, v in (figures or {}).items()},
             "wall_time_s": wall_time_s}
    write_json(RunFolder(run_dir).toy_study, study)
    return study


def read_toy_study(run_dir: str | os.PathLike) -> dict[str, Any]:
    return read_json(RunFolder(run_dir).toy_study)
