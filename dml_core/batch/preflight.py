"""Pre-flight of a profile (``python -m dml_core.batch --profile full --check``): everything a
launch needs, checked at once, before hours of GPU time are booked.

Checks, one line each, all reported together (exit code 1 when any fails):

- **recipes**: every training run's recipe resolves (``--set`` keys included), so a typo fails
  here and not inside the notebook;
- **data**: every data set a run trains on (and the toy's STL-10) is prepared
  (``<data_root>/<ds>/index.csv``) or, when the profile's ``00_prepare_data`` run prepares it,
  its raw folder is there;
- **weights**: every pretrained backbone's checkpoint is present in ``$TORCH_HOME/hub/checkpoints``
  AND loads into the backbone (:func:`dml_core.models.backbones.build_backbone`);
- **cuda**: when a run asks for ``device: cuda``, CUDA is available and a tensor op runs on it;
- **disk**: free space under the runs root against :func:`run_disk_bytes` summed over the runs,
  and under the data root against the decoded-image caches that ``cache: true`` recipes build
  (:func:`dml_core.data.cache.estimate_cache_bytes`); one check per file system.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

from dml_core.core import paths

__all__ = ["Check", "PreflightReport", "check_profile", "run_disk_bytes"]
_TEST_IMAGES = {"car": 8131, "cub": 5924, "sop": 60502, "isc": 14218 + 12612, "demo": 1500}
_TRAIN_CLASSES = {"car": 98, "cub": 100, "sop": 11318, "isc": 3997, "demo": 50}


@dataclasses.dataclass
class Check:
    kind: str  # recipes | data | weights | cuda | disk
    name: str
    ok: bool
    detail: str = ""


@dataclasses.dataclass
class PreflightReport:
    profile: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def format(self) -> str:
        lines = [f"pre-flight of profile {self.profile}: "
                 + ("all checks passed" if self.ok else f"{len(self.failed)} problem(s)")]
        for c in self.checks:
            lines.append(f"  {'ok  ' if c.ok else 'FAIL'} {c.kind:<8} {c.name}: {c.detail}")
        return "\n".join(lines)


def _param_count(backbone: str) -> int:
    from dml_core.models.backbones import BACKBONES

    return sum(p.numel() for p in BACKBONES[backbone].builder().parameters())


def run_disk_bytes(recipe: dict, params: int | None = None) -> int:
    """Estimated bytes one training run writes: checkpoints and saved features (an upper bound).

    The resume point: the weights and up to two optimiser moment buffers (Adam; SGD with
    momentum keeps one), 3 × 4 bytes per backbone parameter; the selected epoch: the weights, 4
    bytes; the proxies / class weights (C × D) in both, 4 × 4 bytes each; the saved features of
    the best and last epochs: the test (+ gallery) embeddings, 2 × N × D × 4 bytes. Measured
    (CPU, state dicts, no training): NormSoftmax SOP ResNet-50 (D 2048, SGD) resume point 407 MB
    + selected epoch 204 MB + 2 × 499 MB of features = 1.6 GB (estimate 1.74 GB);
    AsymptoticProxy SOP ResNet-50 (D 512, Adam) 318 + 122 + 2 × 128 MB = 0.70 GB.
    """
    params = params if params is not None else _param_count(recipe["backbone"])
    n_test = _TEST_IMAGES.get(recipe["dataset"], 10_000)
    dim = int(recipe["embedding_dim"])
    classes = _TRAIN_CLASSES.get(recipe["dataset"], 1000)
    return 4 * params * (3 + 1) + 4 * 4 * classes * dim + 2 * 4 * n_test * dim


def _runs(profile, only, data_root, runs_root, profiles_dir, settings):
    from dml_core.profiles import params as nbparams

    from dml_core import profiles
    prof = (profile if isinstance(profile, profiles.Profile)
            else profiles.load_profile(profile, profiles_dir))
    runs_root = Path(runs_root).expanduser().resolve() if runs_root else paths.runs_root().resolve()
    out = []
    for run in profiles.select_runs(prof.runs, only):
        rdir = profiles.run_dir_of(runs_root, prof.name, run.id)
        p = profiles.apply_settings(
            run, profiles.effective_parameters(run, prof.name, rdir, data_root), settings)
        p = {**nbparams.defaults(run.notebook), **p} \
            if nbparams.notebook_stem(run.notebook) in nbparams.NOTEBOOK_PARAMETERS else p
        out.append((run, p))
    return prof, runs_root, out


def check_profile(profile, *, only: str | Sequence[str] | None = None, data_root=None,
                  runs_root=None, profiles_dir: Path | None = None,
                  settings: dict[str, Any] | None = None) -> PreflightReport:
    """Run every check for ``profile`` (name, path or :class:`dml_core.profiles.Profile`)."""
    from dml_core.profiles import params as nbparams
    from dml_core.data.cache import estimate_cache_bytes
    from dml_core.data.preparation import dataset_dir, is_prepared
    from dml_core.methods.recipes import get_recipe

    prof, runs_root, runs = _runs(profile, only, data_root, runs_root, profiles_dir, settings)
    trains = nbparams.notebook_method_of()  # the methods each training notebook runs, default first
    checks: list[Check] = []
    recipes, to_prepare, toy_backbones, devices = [], set(), set(), set()
    for run, p in runs:
        stem = nbparams.notebook_stem(run.notebook)
        devices.add(str(p.get("device", "auto")))
        if stem == "00_prepare_data":
            to_prepare.update(p.get("datasets") or [])
        elif stem in trains:
            method = p.get("method") or trains[stem][0]
            try:
                recipes.append(get_recipe(method, p["dataset"], p["backbone"], crop=bool(p.get("crop")),
                                          **dict(p.get("overrides") or {})))
            except Exception as exc:  # noqa: BLE001 - the check reports every problem at once:
                # whatever a run's recipe raises is that run's finding, not the end of the check
                checks.append(Check("recipes", run.id, False, str(exc)))
        elif stem == "07_toy_proxies":
            if p.get("source") == "stl10":
                to_prepare.discard("stl10")
                recipes.append({"dataset": "stl10", "backbone": "resnet18", "pretrained": False,
                                "toy": True})
            if p.get("pretrained"):
                toy_backbones.add("resnet18")
    if recipes and not any(c.kind == "recipes" for c in checks):
        checks.append(Check("recipes", "all", True, f"{len(recipes)} training run(s) resolve"))

    prepared_by = next((r.id for r, p in runs
                        if nbparams.notebook_stem(r.notebook) == "00_prepare_data"), None)
    for ds in sorted({r["dataset"] for r in recipes}):
        folder = dataset_dir(ds, data_root)
        if is_prepared(ds, data_root):
            checks.append(Check("data", ds, True, f"prepared ({folder / 'index.csv'})"))
        elif ds == "demo":
            checks.append(Check("data", ds, True, "embedded; prepared on the fly"))
        elif ds in to_prepare or (ds == "stl10" and prepared_by):
            raw = folder.is_dir() and any(folder.iterdir())
            checks.append(Check("data", ds, raw,
                                f"raw folder {folder} present; {prepared_by} prepares it" if raw else
                                f"not prepared and no raw files in {folder}: unpack the download "
                                f"there (docs/DATA.md)"))
        else:
            checks.append(Check("data", ds, False, f"not prepared ({folder / 'index.csv'} missing) "
                                f"and no 00_prepare_data run lists it: run `python -m "
                                f"dml_core.data.preparation {ds}` first (docs/DATA.md)"))

    from dml_core.models.backbones import pretraining_source

    weights = {(r["backbone"], pretraining_source(r["dataset"])) for r in recipes
               if r.get("pretrained")} | {(bb, "imagenet") for bb in toy_backbones}
    for bb, source in sorted(weights):
        checks.append(_check_weights(bb, source))

    wants_cuda = sorted(d for d in devices if d.startswith("cuda"))
    if wants_cuda:
        checks.append(_check_cuda(wants_cuda))

    need = 0
    counts: dict[str, int] = {}
    for r in recipes:
        if r.get("toy"):
            continue
        if r["backbone"] not in counts:
            try:
                counts[r["backbone"]] = _param_count(r["backbone"])
            except Exception:  # noqa: BLE001 - e.g. pretrainedmodels missing; weights check says so
                counts[r["backbone"]] = 25_000_000
        need += run_disk_bytes(r, counts[r["backbone"]])
    cache_need, seen = 0, set()
    for r in recipes:  # a cache serves every run with the same data and prefix (seeds share it)
        sig = tuple(str(r.get(k)) for k in ("dataset", "crop", "transform", "crop_size",
                                            "resize_size", "backbone", "validation_fraction"))
        if r.get("cache") and not r.get("toy") and sig not in seen:
            seen.add(sig)
            try:
                cache_need += estimate_cache_bytes(r, data_root)
            except Exception:  # noqa: BLE001 - an estimate; the data check reports the data
                pass
    checks.extend(_disk_checks(runs_root, need, Path(data_root) if data_root is not None
                               else paths.data_root(), cache_need))
    return PreflightReport(prof.name, checks)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disk_checks(runs_root: Path, runs_need: int, data_root: Path, cache_need: int) -> list[Check]:
    """Free space against what the runs write under the runs root and what the decoded-image
    caches add under the data root: one check per file system (both summed when they share one)."""
    from dml_core.core.io import fmt_bytes, free_bytes

    runs_dev = os.stat(_existing(runs_root)).st_dev
    data_dev = os.stat(_existing(data_root)).st_dev
    what = "checkpoints + saved features"
    if cache_need and runs_dev == data_dev:
        free = free_bytes(runs_root) or 0
        need = runs_need + cache_need
        return [Check("disk", str(runs_root), free >= need,
                      f"{fmt_bytes(free)} free, the runs write about {fmt_bytes(need)} ({what}: "
                      f"{fmt_bytes(runs_need)}; image caches under {data_root}: "
                      f"{fmt_bytes(cache_need)})")]
    free = free_bytes(runs_root) or 0
    out = [Check("disk", str(runs_root), free >= runs_need,
                 f"{fmt_bytes(free)} free, the runs write about {fmt_bytes(runs_need)} ({what})")]
    if cache_need:
        free = free_bytes(data_root) or 0
        out.append(Check("disk", str(data_root), free >= cache_need,
                         f"{fmt_bytes(free)} free, the decoded-image caches (cache: true) add "
                         f"about {fmt_bytes(cache_need)}"))
    return out


def _check_weights(backbone: str, source: str = "imagenet") -> Check:
    """Present and loading, or the file name(s) expected, the folder and the download URL (the
    demo's stand-in: built by data preparation or the first run, so its absence is no failure)."""
    from dml_core.models.backbones import (BACKBONES, MissingWeightsError, build_backbone,
                                           find_weights)

    what = backbone if source == "imagenet" else f"{backbone} ({source} stand-in)"
    try:
        path = find_weights(backbone, source)
    except MissingWeightsError:
        if source == "digits":  # the demo's stand-in: built by its data preparation
            return Check("weights", what, True, "not built yet; the demo's data preparation or "
                         f"first run builds it into {paths.torch_checkpoint_dir()} (~1-2 min)")
        spec = BACKBONES[backbone]
        return Check("weights", what, False,
                     f"missing: expected {' or '.join(spec.weight_files)} in "
                     f"{paths.torch_checkpoint_dir()} (download: {spec.urls[0]})")
    except (FileNotFoundError, KeyError, ValueError) as exc:  # no backbone, no stand-in for it
        return Check("weights", what, False, str(exc).splitlines()[0]
                     + f" (expected in {paths.torch_checkpoint_dir()})")
    try:
        build_backbone(backbone, True, source=source)
    except Exception as exc:  # noqa: BLE001 - a weight file fails to load in many ways (torch,
        # pretrainedmodels, a wrong state dict); each is this check's finding, reported
        return Check("weights", what, False, f"{path} does not load: {exc}")
    return Check("weights", what, True, f"{path} loads")


def _check_cuda(devices: list[str]) -> Check:
    try:
        import torch
    except (ImportError, OSError) as exc:  # no torch, or a shared library it needs
        return Check("cuda", ",".join(devices), False, f"torch does not import: {exc}")
    if not torch.cuda.is_available():
        return Check("cuda", ",".join(devices), False,
                     f"the profile asks for {', '.join(devices)} but torch.cuda.is_available() is "
                     f"False (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                     "check the NVIDIA driver (nvidia-smi) or run with --set device=cpu")
    try:
        x = torch.ones(8, device="cuda")
        float((x * 2).sum())
    except RuntimeError as exc:  # CUDA errors (driver, capability, out of memory)
        return Check("cuda", ",".join(devices), False, f"a tensor op on CUDA fails: {exc}")
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return Check("cuda", ",".join(devices), True, f"{torch.cuda.device_count()} GPU(s): {names}")
