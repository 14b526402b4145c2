"""The GPU check: what a GPU user gets from this project, measured in one short run on synthetic data.

Written for one H200 (torch 2.11 / torchvision 0.26 preinstalled, Python 3.12, no network, no
installs, ~10 minutes of use): ``python benchmarks/gpu_check.py`` (≈ 4–6 min) writes
``benchmarks/gpu_check.json`` with

- ``backbone``: forward + backward + SGD step of the bare trunk (global mean pool, no head),
  images/s, for ResNet-50 and BN-Inception at 224 px at each recipe batch size below, in fp32
  (TF32 off) and in bf16 autocast + channels_last (what the engine does on CUDA);
- ``methods``: each method's full training step (the Method contract in the engine's order:
  zero_grad, bf16 ``training_step``, backward, clip, ``optimizer_step``, ``after_optimizer_step``,
  ``loss.item()``) on resident batches, images/s and its ratio to the bare trunk at the same batch
  size and image size (goal ≥ 0.85);
- ``loss_agreement``: every method's loss on one batch in fp32 and under bf16 autocast, and the
  relative difference;
- ``loader_loop``: the same step fed by a DataLoader (workers: ``auto_num_workers``) over 2,000
  synthetic CUB-sized JPEGs, through the PIL path and through the cached path (uint8 batches,
  normalised on the device), against the resident-batch step (goal ≥ 0.95), and the cache's
  build time;
- ``evaluation``: SOP scale (60,502 × 512 unit vectors, classes of 2–12) Recall@{1,10,100,1000}
  and MAP@R on the GPU, seconds;
- ``vit``: the ViT track (``dml_core.methods.fair``, settings ``vit_dino`` and ``vit_dinov2``:
  batch 128, 224 px): images/s of the bare DINO ViT-S/16 and DINOv2 ViT-S/14 trunks and each
  method's full training step on them, each in bf16 autocast and in fp32 (TF32 off), the step's
  ratio to the bare trunk in the same precision, and each method's bf16-vs-fp32 loss agreement.

Every section is timed against a budget (``--budget-s``, default 540 s) and skipped with a note
when the budget is spent; the JSON is rewritten after every section, so a run that is cut short
still returns what it measured. ``--dry-run`` runs every section on the CPU in tiny sizes (the
test suite's check that the script works; its numbers mean nothing).

Imports: only ``dml_core.models``, ``dml_core.methods``, ``dml_core.methods.recipes``,
``dml_core.methods.fair``, ``dml_core.evaluation`` and ``dml_core.data`` (torch, torchvision,
numpy, PIL). BN-Inception needs the pure-Python ``pretrainedmodels`` (+ ``munch``, ``tqdm``) and
the ViTs the pure-Python ``timm`` (it imports with torch and torchvision alone): when they are
not installed, copy them from the venv into ``benchmarks/_vendor/`` (the README says how);
without them the BN-Inception rows, or the ``vit`` section, are skipped with a note.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VENDOR = REPO / "benchmarks" / "_vendor"
if VENDOR.is_dir():
    sys.path.append(str(VENDOR))  # after the system packages: only fills what is missing

import torch  # noqa: E402

#: (recipe method, data set, backbone): one training recipe per method and backbone family.
METHOD_RECIPES = [
    ("normsoftmax", "sop", "resnet50"),
    ("cgd", "sop", "resnet50"),
    ("asymptotic_proxy", "sop", "resnet50"),
    ("asymptotic_proxy", "cub", "bninception"),
    ("positive_proxy", "cub", "bninception"),
    ("dynamic_margin", "cub", "bninception"),
    ("dynamic_margin", "sop", "resnet50"),
    ("proxy_anchor", "cub", "bninception"),
]
NUM_CLASSES = {"sop": 11318, "cub": 100, "car": 98, "isc": 3997}
#: The ViT track's trunks and the fair setting each is measured under (its batch and input).
VIT_TRUNKS = (("vit_s16_dino", "vit_dino"), ("vit_s14_dinov2", "vit_dinov2"))
SOP_TEST = 60502


class Budget:
    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _batch(bs: int, size: int, device, channels_last: bool, num_classes: int, m: int = 2):
    x = torch.randn(bs, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.arange(bs, device=device) // m) % num_classes
    return x, y


def _time(step, warmup: int, steps: int, device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t) / steps


def backbone_rate(name, bs, size, device, bf16, warmup, steps) -> float:
    from dml_core.models.backbones import build_backbone

    trunk = build_backbone(name, False).to(device)
    if bf16:
        trunk = trunk.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(trunk.parameters(), lr=1e-4, momentum=0.9)
    x, _ = _batch(bs, size, device, bf16, 2)

    def step():
        opt.zero_grad(set_to_none=True)
        with _autocast(device, bf16):
            loss = trunk(x).float().mean(dim=(2, 3)).square().sum()
        loss.backward()
        opt.step()

    sec = _time(step, warmup, steps, device)
    del trunk, opt
    return bs / sec


def build(method, dataset, backbone, device, small: dict | None):
    from dml_core.methods import build_method
    from dml_core.methods.recipes import get_recipe

    recipe = get_recipe(method, dataset, backbone, pretrained=False, **(small or {}))
    classes = NUM_CLASSES[dataset] if not small else 8
    m = build_method(recipe, classes)
    m.to(device)
    if device.type == "cuda":
        m.model.to(memory_format=torch.channels_last)
    return recipe, m, classes


def method_step_fn(m, x, y, device, bf16, epoch):
    m.model.train()
    m.criterion.train()
    m.on_epoch_start(epoch)

    def step():
        m.zero_grad()
        with _autocast(device, bf16):
            out = m.training_step(x, y)
        float(out.loss.detach().float().item())  # the engine reads the loss every step
        out.loss.backward()
        m.clip_gradients()
        m.optimizer_step(epoch)
        m.after_optimizer_step(out, y)

    return step


def vit_section(device, dry: bool, warmup: int, steps: int, res: dict, guarded, save) -> None:
    """The ``vit`` section: per ViT trunk, the bare trunk and every headline variant's step (on
    SOP where the method has a row there, else CUB), bf16 and fp32, plus the loss agreement."""
    from dml_core.methods import fair
    from dml_core.models.conventions import input_convention

    out = res.setdefault("vit", {"backbone": {}, "methods": {}, "loss_agreement": {}})
    for bb, setting in VIT_TRUNKS:
        s = fair.setting(setting)
        size = 2 * input_convention(bb).patch_size if dry else s.crop_size
        bs = 8 if dry else s.batch_size
        base = {}
        for mode, bf16 in (("bf16_channels_last", True), ("fp32", False)):
            key = f"{bb}/bs{bs}/{size}px/{mode}"
            r = guarded(f"vit backbone {key}", lambda: backbone_rate(bb, bs, size, device, bf16, warmup, steps))
            if r is not None:
                out["backbone"][key] = round(r, 1)
                base[bf16] = r
                print(f"vit backbone {key}: {r:.1f} images/s", flush=True)
            save()
        variants = [v for v, x in fair.VARIANTS.items() if x.headline]
        if dry:  # CPU bf16 is slow: each trunk steps half the methods (the tests step them all)
            variants = variants[VIT_TRUNKS.index((bb, setting))::len(VIT_TRUNKS)]
        for variant in variants:
            method = fair.VARIANTS[variant].method
            ds = "sop" if fair.available(method, "sop", bb) else "cub"
            name = f"{variant}/{ds}/{bb}"

            def one():
                recipe = fair.fair_recipe(variant, setting, ds, seed=0)
                recipe.update(pretrained=False, crop_size=size, batch_size=bs)
                classes = 8 if dry else NUM_CLASSES[ds]
                from dml_core.methods import build_method

                m = build_method(recipe, classes)
                m.to(device)
                if device.type == "cuda":
                    m.model.to(memory_format=torch.channels_last)
                m_per = 2 if dry else int(recipe.get("samples_per_class") or 2)
                x, y = _batch(bs, size, device, device.type == "cuda", classes, m_per)
                epoch = _epoch_after_warmup(recipe)
                out["loss_agreement"][name] = loss_agreement(m, x, y, device, epoch)
                for mode, bf16 in (("bf16", True), ("fp32", False)):
                    rate = bs / _time(method_step_fn(m, x, y, device, bf16, epoch), warmup, steps, device)
                    b = base.get(bf16)
                    out["methods"][f"{name}/{mode}"] = {
                        "batch_size": bs, "crop_size": size, "embedding_dim": recipe["embedding_dim"],
                        "images_per_s": round(rate, 1), "backbone_images_per_s": round(b, 1) if b else None,
                        "ratio": round(rate / b, 3) if b else None, "goal": 0.85, "epoch": epoch,
                        "optimizers": [type(o).__name__ for o in m.optimizers_for_epoch(epoch)]}
                    print(f"vit method {name}/{mode}: {rate:.1f} images/s"
                          + (f" = {rate / b:.2f} of the bare trunk" if b else ""), flush=True)
                del m

            guarded(f"vit method {name}", one)
            save()


def _epoch_after_warmup(recipe) -> int:
    return int(recipe.get("warmup_epochs") or 0) + 1


def loss_agreement(m, x, y, device, epoch) -> dict:
    m.model.train()
    m.criterion.train()
    m.on_epoch_start(epoch)
    out = {}
    for label, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        with torch.no_grad(), _autocast(device, bf16):
            out[label] = float(m.training_step(x, y).loss.float())
    out["rel_diff"] = abs(out["bf16"] - out["fp32"]) / max(abs(out["fp32"]), 1e-12)
    return out


def sop_eval_time(device, n, dim) -> dict:
    from dml_core.evaluation import evaluate

    g = torch.Generator().manual_seed(0)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(torch.randint(2, 13, (1,), generator=g)))
    sizes[-1] -= sum(sizes) - n
    if sizes[-1] < 2:
        sizes[-2] += sizes.pop()
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    centres = torch.nn.functional.normalize(torch.randn(len(sizes), dim, generator=g), dim=1)
    feats = torch.nn.functional.normalize(centres[labels] + 0.9 * torch.randn(n, dim, generator=g)
                                          / math.sqrt(dim) * 4, dim=1)
    feats, labels = feats.to(device), labels.to(device)
    _sync(device)
    t = time.perf_counter()
    metrics = evaluate(feats, labels, "sop")
    _sync(device)
    sec = time.perf_counter() - t
    keep = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    return {"n": n, "dim": dim, "seconds": sec, "metrics": dict(list(keep.items())[:8])}


def loader_loop(recipe, m, classes, device, bf16, n_images: int, size, workers, steps, work: Path) -> dict:
    """The step fed by a DataLoader over synthetic CUB-sized JPEGs: the PIL path and the cached
    path (:mod:`dml_core.data.cache`, uint8 batches normalised on the device)."""
    import warnings

    import torch.utils.data as tud

    from dml_core.data import RetrievalDataset
    from dml_core.data.cache import cached_split
    from dml_core.data.loaders import auto_num_workers
    from dml_core.data.preparation import prepare
    from dml_core.data.transforms import build_transform
    from tools.rehearsal import make_cub_raw, photo

    per = max(2, n_images // 100)
    make_cub_raw(work / "cub", classes=tuple(range(1, n_images // per + 1)), per_class=per, size=size,
                 painter=photo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare("cub", work, verbose=False)
    r = dict(recipe, dataset="cub", crop=False)
    bs = int(r["batch_size"])
    nw = auto_num_workers() if workers is None else workers
    info = {"images": n_images, "image_size": list(size), "batch_size": bs, "workers": nw,
            "transform": r["transform"]}
    t = time.perf_counter()
    cached = cached_split(r, "train", True, work, device_normalize=True)
    info["cache_build_s"] = round(time.perf_counter() - t, 2)
    pil = RetrievalDataset("cub", "train", crop=False, data_root=work, transform=build_transform(
        r["transform"], True, r["backbone"], r["crop_size"], r["resize_size"], r.get("hflip", True),
        tuple(r.get("rrc_scale", (0.08, 1.0)))))
    epoch = _epoch_after_warmup(recipe)
    for name, ds in (("pil", pil), ("cached", cached)):
        loader = tud.DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True, num_workers=nw,
                                pin_memory=device.type == "cuda", persistent_workers=nw > 0)
        prep = getattr(ds, "device_transform", None)
        m.model.train()
        m.criterion.train()
        m.on_epoch_start(epoch)
        it = iter(_forever(loader))

        def step():
            xb, yb = next(it)
            xb = xb.to(device, non_blocking=True,
                        memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
            if prep is not None:
                xb = prep(xb)
            yb = yb.to(device, non_blocking=True).long() % classes
            m.zero_grad()
            with _autocast(device, bf16):
                out = m.training_step(xb, yb)
            float(out.loss.detach().float().item())
            out.loss.backward()
            m.clip_gradients()
            m.optimizer_step(epoch)
            m.after_optimizer_step(out, yb)

        info[f"{name}_images_per_s"] = round(bs / _time(step, 2, steps, device), 1)
        del it, loader
    return info


def _forever(loader):
    while True:
        yield from loader


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "gpu_check.json"))
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, seconds (for the tests)")
    p.add_argument("--budget-s", type=float, default=540.0)
    p.add_argument("--steps", type=int, default=15, help="timed steps per measurement")
    p.add_argument("--sections", default="backbone,methods,loss_agreement,loader_loop,evaluation,vit")
    args = p.parse_args(argv)
    dry = args.dry_run
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    size = 64 if dry else 224
    warmup, steps = (1, 1) if dry else (5, args.steps)
    small = {"batch_size": 8, "crop_size": 64, "resize_size": 72, "embedding_dim": 32} if dry else None
    budget = Budget(args.budget_s)
    sections = set(args.sections.split(","))
    out = Path(args.out)
    res: dict = {"dry_run": dry, "device": str(device), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "python": platform.python_version(), "torch": torch.__version__,
                 "torch_cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                 "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                 "notes": [], "errors": {}}
    try:
        import torchvision
        res["torchvision"] = torchvision.__version__
    except Exception as exc:  # noqa: BLE001
        res["errors"]["torchvision"] = repr(exc)
    try:
        import pretrainedmodels  # noqa: F401
        has_bni = True
    except Exception as exc:  # noqa: BLE001
        has_bni = False
        res["notes"].append(f"pretrainedmodels missing ({exc!r}): BN-Inception rows skipped; copy "
                            "pretrainedmodels, munch and tqdm into benchmarks/_vendor/")
    try:
        import timm
        has_timm = True
        res["timm"] = timm.__version__
    except Exception as exc:  # noqa: BLE001
        has_timm = False
        res["notes"].append(f"timm missing ({exc!r}): the vit section is skipped; copy timm into "
                            "benchmarks/_vendor/")

    def save():
        res["elapsed_s"] = round(time.perf_counter() - budget.t0, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")

    def guarded(key, fn):
        if budget.left() <= 0:
            res["notes"].append(f"{key}: skipped, budget spent")
            return None
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - recorded, the other sections go on
            res["errors"][key] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            if dry:
                traceback.print_exc()
            return None
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    from dml_core.methods.recipes import get_recipe

    recipes = [(mt, ds, bb) for mt, ds, bb in METHOD_RECIPES if has_bni or bb != "bninception"]
    shapes = sorted({(bb, int(get_recipe(mt, ds, bb, **(small or {}))["batch_size"]),
                      int(get_recipe(mt, ds, bb, **(small or {}))["crop_size"]))
                     for mt, ds, bb in recipes})
    backbone: dict = {}
    if "backbone" in sections:
        res["backbone"] = {}
        for bb, bs, sz in shapes:
            for mode, bf16 in (("bf16_channels_last", True), ("fp32", False)):
                key = f"{bb}/bs{bs}/{sz}px/{mode}"
                r = guarded(f"backbone {key}", lambda: backbone_rate(bb, bs, sz, device, bf16, warmup, steps))
                if r is not None:
                    res["backbone"][key] = round(r, 1)
                    backbone[(bb, bs, sz, bf16)] = r
                    print(f"backbone {key}: {r:.1f} images/s", flush=True)
                save()

    if "methods" in sections or "loss_agreement" in sections:
        res.setdefault("methods", {})
        res.setdefault("loss_agreement", {})
        for mt, ds, bb in recipes:
            name = f"{mt}/{ds}/{bb}"

            def one():
                recipe, m, classes = build(mt, ds, bb, device, small)
                bs, sz = int(recipe["batch_size"]), int(recipe["crop_size"])
                m_per = 2 if small else int(recipe.get("samples_per_class") or 2)
                x, y = _batch(bs, sz, device, device.type == "cuda", classes, m_per)
                epoch = _epoch_after_warmup(recipe)
                if "loss_agreement" in sections:
                    res["loss_agreement"][name] = loss_agreement(m, x, y, device, epoch)
                if "methods" in sections:
                    rate = bs / _time(method_step_fn(m, x, y, device, True, epoch), warmup, steps, device)
                    base = backbone.get((bb, bs, sz, True))
                    res["methods"][name] = {"batch_size": bs, "crop_size": sz, "images_per_s": round(rate, 1),
                                            "backbone_images_per_s": round(base, 1) if base else None,
                                            "ratio": round(rate / base, 3) if base else None,
                                            "goal": 0.85, "epoch": epoch,
                                            "optimizers": [type(o).__name__ for o in m.optimizers_for_epoch(epoch)]}
                    print(f"method {name}: {rate:.1f} images/s"
                          + (f" = {rate / base:.2f} of the bare trunk" if base else ""), flush=True)
                del m

            guarded(f"method {name}", one)
            save()

    if "loader_loop" in sections:
        def loop():
            mt, ds, bb = ("asymptotic_proxy", "cub", "bninception") if has_bni else ("normsoftmax", "sop", "resnet50")
            recipe, m, classes = build(mt, ds, bb, device, small)
            with tempfile.TemporaryDirectory() as tmp:
                info = loader_loop(recipe, m, classes, device, True, 48 if dry else 2000, (500, 375), 0 if dry else None,
                                   2 if dry else 30, Path(tmp))
            step = res.get("methods", {}).get(f"{mt}/{ds}/{bb}", {}).get("images_per_s")
            info.update(recipe=f"{mt}/{ds}/{bb}", resident_step_images_per_s=step, goal=0.95,
                        ratio_pil=round(info["pil_images_per_s"] / step, 3) if step else None,
                        ratio_cached=round(info["cached_images_per_s"] / step, 3) if step else None)
            res["loader_loop"] = info
            print(f"loader loop: {info}", flush=True)

        guarded("loader_loop", loop)
        save()

    if "evaluation" in sections:
        r = guarded("evaluation", lambda: sop_eval_time(device, 1000 if dry else SOP_TEST, 32 if dry else 512))
        if r is not None:
            res["evaluation"] = r
            print(f"evaluation: {r['n']} x {r['dim']} in {r['seconds']:.2f} s", flush=True)
        save()

    if "vit" in sections and has_timm:
        vit_section(device, dry, warmup, steps, res, guarded, save)
    save()
    print(f"wrote {out} ({res['elapsed_s']} s; errors: {list(res['errors']) or 'none'})")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
