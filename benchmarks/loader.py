"""Input pipeline benchmark: the PIL path against the cached path, per core, and the demo loop.

``python benchmarks/loader.py`` (≈ 1–2 min on 2 cores) prints

1. images/s on ONE core (one process, one torch thread, no workers) of the training transform,
   for CUB-like (500 × 375) and SOP-like (400 × 400) photo-like JPEGs (:func:`tools.rehearsal.photo`,
   quality 90), two styles (``squash_random_crop`` 256/224 and ``random_resized_crop`` 224):
   the PIL path (decode + resize + crop + flip + ToTensor + normalise, what the original code's workers do)
   against the cached path (:mod:`dml_core.data.cache`: crop + flip on the cached uint8; the float
   conversion and normalisation happen on the device and are not counted here, as on a GPU
   machine), and their ratio (goal ≥ 5×). The one-off cache build is timed separately. For
   RandomResizedCrop the cached copy is the native resolution (bit-exact) or, second row, capped
   at a shorter side of 256 (not bit-exact); there the resize of the random crop, not the decoding,
   dominates, so the cache gains little;
2. the demo's training loop against a bare step: images/s of NormSoftmax / Proxy-Anchor / CGD on
   the demo recipe when the batches come from the loader (cached, as the demo runs) and when the
   same batch is reused (forward + backward + optimiser step only), and their ratio (goal ≥ 0.95).

Numbers depend on the machine and its load: say which when quoting them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def _rate(fn, n: int, min_s: float = 2.0) -> float:
    """Calls of ``fn(i)`` per second (at least ``n`` calls and ``min_s`` seconds)."""
    fn(0)
    t, i = time.perf_counter(), 0
    while i < n or time.perf_counter() - t < min_s:
        fn(i)
        i += 1
    return i / (time.perf_counter() - t)


def pipeline(kind: str, size, n_images: int, work: Path) -> list[dict]:
    from dml_core.data import RetrievalDataset
    from dml_core.data.cache import cached_split
    from dml_core.data.preparation import prepare
    from dml_core.data.transforms import build_transform
    from tools.rehearsal import make_cub_raw, photo

    root = work / kind
    per = 10
    half = max(1, n_images // per // 2)
    make_cub_raw(root / "cub", classes=tuple(range(1, half + 1)) + tuple(range(101, 101 + half)),
                 per_class=per, size=size, painter=photo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare("cub", root, verbose=False)
    rows = []
    for style, r, cap in (("squash_random_crop", 256, None), ("random_resized_crop", 256, None),
                          ("random_resized_crop", 256, 256)):
        recipe = {"dataset": "cub", "transform": style, "backbone": "resnet50", "crop": False,
                  "crop_size": 224, "resize_size": r, "hflip": True, "rrc_scale": [0.08, 1.0]}
        pil = RetrievalDataset("cub", "train", crop=False, data_root=root,
                               transform=build_transform(style, True, "resnet50", 224, r))
        t = time.perf_counter()
        cached = cached_split(recipe, "train", True, root, workers=1, cap=cap)
        build_s = time.perf_counter() - t
        m = len(pil)
        pil_rate = _rate(lambda i: pil[i % m], 40)
        cached_rate = _rate(lambda i: cached[i % m], 200)
        rows.append({"images": kind, "size": f"{size[0]}x{size[1]}",
                     "style": style + (f" (cap {cap})" if cap else ""),
                     "pil_per_core": pil_rate, "cached_per_core": cached_rate,
                     "ratio": cached_rate / pil_rate, "cache_build_per_core": m / build_s,
                     "cache_mb": cached.cache.meta["bytes"] / 1e6})
    return rows


def demo_loop(methods, steps: int, work: Path) -> list[dict]:
    from dml_core.data.preparation import prepare
    from dml_core.methods import build_method
    from dml_core.methods.recipes import get_recipe
    from dml_core.training.engine import device_transform
    from dml_core.training.trainer import build_data

    root = work / "demo"
    prepare("demo", root, verbose=False)
    rows = []
    for method in methods:
        recipe = get_recipe(method, "demo", "resnet18_s2")
        torch.manual_seed(0)
        data = build_data(recipe, root)
        m = build_method(recipe, data.num_classes)
        prep = device_transform(data.train_loader) or (lambda x: x)  # the cache's uint8 → float
        epoch = int(recipe.get("warmup_epochs") or 0) + 1
        m.model.train()
        m.criterion.train()
        m.on_epoch_start(epoch)

        def step(x, y):
            m.zero_grad()
            out = m.training_step(x, y)
            float(out.loss.detach().item())
            out.loss.backward()
            m.clip_gradients()
            m.optimizer_step(epoch)
            m.after_optimizer_step(out, y)

        def loop(n):
            it, done, t = iter(data.train_loader), 0, time.perf_counter()
            while done < n:
                try:
                    x, y = next(it)
                except StopIteration:
                    it = iter(data.train_loader)
                    continue
                step(prep(x), y.long())
                done += 1
            return time.perf_counter() - t

        x0, y0 = next(iter(data.train_loader))
        x0, y0 = prep(x0), y0.long()
        bs = int(x0.shape[0])
        loop(2)  # warm-up
        loop_s = loop(steps)
        for _ in range(2):
            step(x0, y0)
        t = time.perf_counter()
        for _ in range(steps):
            step(x0, y0)
        bare_s = time.perf_counter() - t
        rows.append({"method": method, "batch": bs, "loop_img_s": bs * steps / loop_s,
                     "bare_img_s": bs * steps / bare_s, "ratio": bare_s / loop_s,
                     "cache": bool(recipe.get("cache"))})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=60, help="JPEGs per image kind")
    p.add_argument("--steps", type=int, default=20, help="timed steps per demo method")
    p.add_argument("--methods", default="normsoftmax,proxy_anchor,cgd")
    p.add_argument("--parts", default="pipeline,demo", help="pipeline and/or demo")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = args.parts.split(",")
        rows = pipeline("CUB-like", (500, 375), args.images, work) if "pipeline" in parts else []
        rows += pipeline("SOP-like", (400, 400), args.images, work) if "pipeline" in parts else []
        print(f"## Input pipeline, images/s on one core (torch threads 1, {os.cpu_count()} CPUs)\n")
        print("| images | style | PIL path | cached path | ratio | cache build | cache MB |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['images']} {r['size']} | {r['style']} | {r['pil_per_core']:.0f} | "
                  f"{r['cached_per_core']:.0f} | {r['ratio']:.1f}× | {r['cache_build_per_core']:.0f} | "
                  f"{r['cache_mb']:.1f} |")
        demo = demo_loop(args.methods.split(","), args.steps, work) if "demo" in parts else []
        print("\n## Demo: training loop against the bare step (one thread, CPU)\n")
        print("| method | batch | loop images/s | bare step images/s | loop / bare |")
        print("|---|---:|---:|---:|---:|")
        for r in demo:
            print(f"| {r['method']} | {r['batch']} | {r['loop_img_s']:.0f} | {r['bare_img_s']:.0f} | "
                  f"{r['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
