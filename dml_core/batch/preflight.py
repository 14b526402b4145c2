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
- **disk**: free space under the runs root against :func:`run_disk_bytes` summed over the runs.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Sequence

from dml_core.core import paths

__all__ = ["Check", "PreflightReport", "check_profile", "run_disk_bytes", "NOTEBOOK_METHOD"]

#: The method a training notebook runs when its parameters name none.
NOTEBOOK_METHOD = {"01_normsoftmax": "normsoftmax", "02_asymptotic_proxy": "asymptotic_proxy",
                   "03_positive_proxy": "positive_proxy", "04_cgd": "cgd",
                   "05_dynamic_margin": "dynamic_margin"}
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

    ``checkpoints/last.pt``: the weights and up to two optimiser moment buffers (Adam; SGD with
    momentum keeps one), 3 × 4 bytes per backbone parameter; ``best.pt`` the weights, 4 bytes;
    the proxies / class weights (C × D) in both, 4 × 4 bytes each; ``features/{best,last}.pt``
    the test (+ gallery) embeddings, 2 × N × D × 4 bytes. Measured (CPU, state dicts, no
    training): NormSoftmax SOP ResNet-50 (D 2048, SGD) last.pt 407 MB + best.pt 204 MB + 2 × 499
    MB of features = 1.6 GB (estimate 1.74 GB); AsymptoticProxy SOP ResNet-50 (D 512, Adam)
    318 + 122 + 2 × 128 MB = 0.70 GB.
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
    from dml_core.data.preparation import dataset_dir, is_prepared
    from dml_core.methods.recipes import get_recipe

    prof, runs_root, runs = _runs(profile, only, data_root, runs_root, profiles_dir, settings)
    checks: list[Check] = []
    recipes, to_prepare, toy_backbones, devices = [], set(), set(), set()
    for run, p in runs:
        stem = nbparams.notebook_stem(run.notebook)
        devices.add(str(p.get("device", "auto")))
        if stem == "00_prepare_data":
            to_prepare.update(p.get("datasets") or [])
        elif stem in NOTEBOOK_METHOD:
            method = p.get("method") or NOTEBOOK_METHOD[stem]
            try:
                recipes.append(get_recipe(method, p["dataset"], p["backbone"], crop=bool(p.get("crop")),
                                          **dict(p.get("overrides") or {})))
            except Exception as exc:  # noqa: BLE001 - reported, not raised
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
    probe = runs_root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    checks.append(Check("disk", str(runs_root), free >= need,
                        f"{free / 1e9:.1f} GB free, the runs write about {need / 1e9:.1f} GB "
                        "(checkpoints + saved features)"))
    return PreflightReport(prof.name, checks)


def _check_weights(backbone: str, source: str = "imagenet") -> Check:
    from dml_core.models.backbones import MissingWeightsError, build_backbone, find_weights

    what = backbone if source == "imagenet" else f"{backbone} ({source} stand-in)"
    try:
        path = find_weights(backbone, source)
    except MissingWeightsError as exc:
        if source == "digits":  # the demo's stand-in: built by its data preparation
            return Check("weights", what, True, "not built yet; the demo's data preparation or "
                         f"first run builds it into {paths.torch_checkpoint_dir()} (~1-2 min)")
        return Check("weights", what, False, str(exc).splitlines()[0]
                     + f" (expected in {paths.torch_checkpoint_dir()})")
    except Exception as exc:  # noqa: BLE001
        return Check("weights", what, False, str(exc).splitlines()[0])
    try:
        build_backbone(backbone, True, source=source)
    except Exception as exc:  # noqa: BLE001
        return Check("weights", what, False, f"{path} does not load: {exc}")
    return Check("weights", what, True, f"{path.name} loads")


def _check_cuda(devices: list[str]) -> Check:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return Check("cuda", ",".join(devices), False, f"torch does not import: {exc}")
    if not torch.cuda.is_available():
        return Check("cuda", ",".join(devices), False,
                     f"the profile asks for {', '.join(devices)} but torch.cuda.is_available() is "
                     f"False (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                     "check the NVIDIA driver (nvidia-smi) or run with --set device=cpu")
    try:
        x = torch.ones(8, device="cuda")
        float((x * 2).sum())
    except Exception as exc:  # noqa: BLE001
        return Check("cuda", ",".join(devices), False, f"a tensor op on CUDA fails: {exc}")
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return Check("cuda", ",".join(devices), True, f"{torch.cuda.device_count()} GPU(s): {names}")
