r"""The demo's stand-in for ImageNet: its ResNet-18 pretrained on single digits.

Every method of the study fine-tunes an ImageNet-pretrained trunk (BatchNorm statistics frozen,
a warm-up in which only the head and the proxies move, small trunk learning rates). The embedded
demo (two-digit numbers, :mod:`dml_core.data.demo`) has no ImageNet, so its trunk is pretrained
here, once per machine, on a **source task** built from the same scikit-learn scans:

* **task**: recognise a SINGLE digit (10 classes, cross-entropy), rendered exactly as the demo
  renders its numbers (48-px canvas, random digit size, stroke, colours, gradient, noise and
  position; :func:`dml_core.data.demo.render_number`), resized to 27 px and randomly cropped to
  24 px (the demo recipes' sizes); ``IMAGES_PER_DIGIT`` images per digit;
* **data**: only training scans (``scan_role == "train"``): no test or validation scan is ever
  seen, and no source class is a demo class (a single digit is not a two-digit number). Like
  ImageNet for CUB, it teaches parts (digits) that the target task composes; how to tell "57"
  from "75" or from "58" is left to fine-tuning;
* **training**: ``STEPS`` steps of ``BATCH_SIZE`` (Adam, one-cycle learning rate up to ``LR``),
  on ``THREADS`` (one) thread, so the same CPU type gives the same bytes whatever its core count.

The result, ``torchvision.models.resnet18(num_classes=10)``'s state dict (torchvision's format;
the loader drops ``fc.*`` as it does for ImageNet files), is saved as
``$TORCH_HOME/hub/checkpoints/resnet18_digits-v<VERSION>-<first 8 hex of its SHA-256>.pth``
and loaded by :func:`dml_core.models.backbones.build_backbone` with ``pretrained=True,
source="digits"`` (every demo recipe), with the same loader and errors as ImageNet weights.
:func:`ensure_standin` builds it when missing, under the demo data set's lock (the demo's data
preparation and the first demo run call it). Its cost and the pretrained network's R@1 on the
demo's test split are in docs/DEMO.md. Change ``VERSION`` whenever the source task changes.
"""
from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

BACKBONE = "resnet18"
#: The trunks that load the stand-in: ResNet-18 and the demo's ResNet-18 up to layer2.
TRUNKS = (BACKBONE, "resnet18_s2")
VERSION = 1
FILE_STEM = f"{BACKBONE}_digits-v{VERSION}"
SEED = 0
NUM_CLASSES = 10         # the digits 0-9
IMAGES_PER_DIGIT = 400   # rendered once, from the training scans of the digit
RESIZE, CROP = 27, 24    # the demo recipes' resize_size and crop_size
STEPS = 100              # with BATCH_SIZE and LR: chosen on the demo's validation images
BATCH_SIZE = 64          # (docs/DEMO.md), within 2 min on a slow 2-core machine
LR = 2e-3                # peak of the one-cycle schedule (Adam)
WARMUP_FRACTION = 0.15   # of the steps, rising to LR
THREADS = 1              # fixed: the bytes depend on the thread count, not on the machine's cores


def standin_files(folder: str | os.PathLike) -> list[Path]:
    """The stand-in files of this :data:`VERSION` in ``folder`` (normally one), sorted."""
    folder = Path(folder)
    return sorted(folder.glob(f"{FILE_STEM}-*.pth")) if folder.is_dir() else []


def source_plan(labels: np.ndarray | None = None) -> list[tuple[int, int]]:
    """``[(digit, scan), ...]``: every source image, ``IMAGES_PER_DIGIT`` per digit, each one scan
    of ``load_digits()`` (whose ``target`` may be passed as ``labels``) drawn from the digit's
    training scans (:func:`dml_core.data.demo.scan_pool`)."""
    from dml_core.data.demo import scan_pool

    if labels is None:
        from sklearn.datasets import load_digits

        labels = load_digits().target
    rng = np.random.default_rng(SEED)
    plan = []
    for digit in range(NUM_CLASSES):
        pool = scan_pool("train", digit, labels)
        plan += [(digit, int(s)) for s in rng.choice(pool, size=IMAGES_PER_DIGIT)]
    return plan


def source_images(plan: list[tuple[int, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The source task's images, uint8 ``(N, RESIZE, RESIZE, 3)``, and digit labels ``(N,)``:
    each plan entry rendered alone by the demo's renderer (nuisances from one child generator
    per image) and resized like the demo's evaluation images (PIL bilinear)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from dml_core.data.demo import render_number

    digits = load_digits()
    plan = source_plan(digits.target) if plan is None else plan
    children = np.random.SeedSequence([SEED, VERSION]).spawn(len(plan))
    images = np.empty((len(plan), RESIZE, RESIZE, 3), dtype=np.uint8)
    for i, ((_, scan), child) in enumerate(zip(plan, children)):
        rgb, _ = render_number([digits.images[scan]], np.random.default_rng(child))
        images[i] = np.asarray(Image.fromarray(rgb).resize((RESIZE, RESIZE), Image.BILINEAR))
    return images, np.array([d for d, _ in plan], dtype=np.int64)


def train_standin(images: np.ndarray, labels: np.ndarray, steps: int = STEPS,
                  say: Callable[[str], None] = print):
    """Train ``torchvision.models.resnet18(num_classes=10)`` on the source task; returns the
    network and the training accuracy of the last 20 steps. One thread, seeded: deterministic."""
    import torch
    import torch.nn.functional as F
    import torchvision

    from dml_core.core.allocator import keep_freed_memory
    from dml_core.models.conventions import input_convention
    from dml_core.models.pixel_conv import use_pixel_convs

    keep_freed_memory()  # exact; fewer page faults per step (dml_core.core.allocator)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        torch.manual_seed(SEED)
        model = torchvision.models.resnet18(num_classes=NUM_CLASSES)
        model = use_pixel_convs(model).train()  # exact; ~2x faster at 24 px (pixel_conv)
        opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps,
                                                    pct_start=WARMUP_FRACTION)
        conv = input_convention(BACKBONE)
        mean = torch.tensor(conv.mean).view(1, 3, 1, 1)
        std = torch.tensor(conv.std).view(1, 3, 1, 1)
        x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, r, r)
        y_all = torch.from_numpy(labels)
        g = torch.Generator().manual_seed(SEED)
        hits: list[float] = []
        for step in range(steps):
            ids = torch.randint(0, len(y_all), (BATCH_SIZE,), generator=g)
            oy, ox = torch.randint(0, RESIZE - CROP + 1, (2,), generator=g).tolist()
            x = x_all[ids, :, oy:oy + CROP, ox:ox + CROP].float().div(255).sub(mean).div(std)
            out = model(x)
            loss = F.cross_entropy(out, y_all[ids])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            hits = (hits + [float((out.argmax(1) == y_all[ids]).float().mean())])[-20:]
            if (step + 1) % 50 == 0 or step + 1 == steps:
                say(f"stand-in: step {step + 1}/{steps}, loss {float(loss.detach()):.3f}, "
                    f"accuracy (last 20 steps) {np.mean(hits):.2f}")
        return model.to(memory_format=torch.contiguous_format).eval(), float(np.mean(hits))
    finally:
        torch.set_num_threads(threads)


def build_standin(folder: str | os.PathLike | None = None, *, steps: int = STEPS,
                  say: Callable[[str], None] = print) -> Path:
    """Build the stand-in into ``folder`` (default ``torch_checkpoint_dir()``) and return its
    path; see the module docstring. Not locked: call :func:`ensure_standin`."""
    import torch

    from dml_core.core.io import atomic_path
    from dml_core.core.paths import torch_checkpoint_dir

    folder = Path(folder) if folder is not None else torch_checkpoint_dir()
    t0 = time.perf_counter()
    say(f"stand-in: pretraining {BACKBONE} on single digits (the demo's ImageNet; "
        f"{NUM_CLASSES * IMAGES_PER_DIGIT} images, {steps} steps of {BATCH_SIZE}, "
        f"{THREADS} thread{'s' if THREADS > 1 else ''})")
    images, labels = source_images()
    model, accuracy = train_standin(images, labels, steps, say)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = folder / f"{FILE_STEM}-{digest[:8]}.pth"  # torch.hub's naming: the hash is checked
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    say(f"stand-in: wrote {path} in {time.perf_counter() - t0:.0f} s (source accuracy "
        f"{accuracy:.2f}; SHA-256 {digest[:16]}...)")
    return path


def ensure_standin(data_root: str | os.PathLike | None = None, *, verbose: bool = True) -> Path:
    """The stand-in's path, built first when ``torch_checkpoint_dir()`` has none of this
    :data:`VERSION` — under the demo data set's lock (``<data_root>/demo/.prepare.lock``), so
    that concurrent notebooks build it once and the others wait and reuse it."""
    from dml_core.core.locks import FileLock
    from dml_core.core.paths import torch_checkpoint_dir
    from dml_core.data.layout import LOCK_FILE, dataset_dir

    folder = torch_checkpoint_dir()
    found = standin_files(folder)
    if found:
        return found[0]
    with FileLock(dataset_dir("demo", data_root) / LOCK_FILE,
                  what="the data set 'demo' (building the stand-in weights)"):
        found = standin_files(folder)
        if found:
            return found[0]
        return build_standin(folder, say=print if verbose else (lambda *_: None))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Build the demo's stand-in pretrained trunk "
                                 "(if missing) and print its path.")
    ap.add_argument("--data-root", default=None, help="the data root whose demo lock to take")
    print(ensure_standin(ap.parse_args().data_root))
