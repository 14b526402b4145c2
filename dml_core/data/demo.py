"""The embedded demo data: scikit-learn's bundled handwritten digits (1,797 real 8×8 images, no
download), as a CUB-layout retrieval set and as the STL-10 stand-in of the toy.

Demo retrieval set (:func:`write_demo_raw`), written as 48×48 RGB PNGs in the exact CUB-200-2011
raw layout (``images.txt``, ``image_class_labels.txt``, ``bounding_boxes.txt`` with the tight float
box ``x y w h`` around the transformed digit, ``images/<NNN.digit_k>/digit_k_<id>.png``). Class ids
are ``k+1`` (1..10); ``prepare("demo")`` reads it with the CUB reader, digits 0-4 (ids 1-5) train
and 5-9 are the unseen test classes. Deterministic (one seeded generator, PNG) and fast (a few seconds).

Why nuisance factors: the first version (the ×4 digit, white on black, at a random offset) was
too easy for the study's purpose: an UNTRAINED random resnet18 already reached R@1 ≈ 0.73 on the
unseen digits (random conv features of a clean binary shape are a good shape descriptor), and a
few CPU epochs on digits 0-4 did not beat it, so the demo could not show that a method learns
anything that transfers. Each digit image (still the real bundled digit; only its rendering
changes) now gets, drawn independently per image from its own seeded generator:

* a random size (the 8×8 digit resized bilinearly to 24-32 px; ``SIZE_RANGE``) and optionally a
  small rotation (``MAX_ROTATION``, 0 by default);
* a random stroke thickness (the smooth ink is thresholded at a random level, thin to bold);
* a random dark background colour (each channel < 0.45) with a linear gradient towards a second
  colour plus pixel noise, and a random bright ink colour (each channel > 0.55): random hues, a
  fixed polarity (a random polarity and thin clutter lines, ``POLARITY_FIXED`` / ``CLUTTER_LINES``,
  made the set too hard to learn from scratch in a CPU minute);
* a random position (as before).

Measured (resnet18 from scratch, the demo recipes' 32-px crops, CPU): an untrained network gets
R@1 ≈ 0.35 on the unseen digits (its features follow the colours); NormSoftmax with the demo
recipe's overrides ``epochs=10, lr=0.03, lr_step=8`` reaches ≈ 0.38 and is still rising, i.e. the
invariances learned on digits 0-4 (colour, texture, scale, thickness) transfer to 5-9, but slowly:
the demo recipes (≤ 6 epochs, tests/test_recipes.py) are not yet tuned to beat the untrained
network clearly (see tests/test_methods_demo_training.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dml_core.io import atomic_path, write_text

SCALE = 4          # the toy stand-in's upscaling (8 -> 32 px)
CANVAS = 48
SEED = 0
NUM_TRAIN_CLASSES = 5  # digits 0-4
SIZE_RANGE = (24, 32)  # rendered digit size (px) before rotation
MAX_ROTATION = 0.0     # degrees
THRESHOLD_RANGE = (0.3, 0.45)  # lower = bolder strokes
MIN_CONTRAST = 0.35    # random polarity only: min mean |ink - background| (colours in [0, 1])
NOISE_STD = 0.03
CLUTTER_LINES = (0, 0)  # (min, max) thin random line segments per image
POLARITY_FIXED = True
DARK_MAX = 0.45
BRIGHT_MIN = 0.55


def digit_images(scale: int = SCALE) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 ``(N, 8*scale, 8*scale)`` ink images (0..255) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    ink = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    ink = ink.repeat(scale, axis=1).repeat(scale, axis=2)
    return ink, digits.target.astype(np.int64)


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Float ``(x, y, w, h)`` of the smallest box holding every True pixel of the 2-D ``mask``."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0, 0.0, float(mask.shape[1]), float(mask.shape[0])
    return float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and an ink colour (RGB in [0, 1]): dark/bright with random hues when
    ``POLARITY_FIXED``, else any two colours at least ``MIN_CONTRAST`` apart."""
    if POLARITY_FIXED:
        bg = rng.random(3) * DARK_MAX
        fg = BRIGHT_MIN + rng.random(3) * (1.0 - BRIGHT_MIN)
        return bg, fg
    while True:
        bg, fg = rng.random(3), rng.random(3)
        if np.abs(fg - bg).mean() >= MIN_CONTRAST:
            return bg, fg


def render_digit(digit8: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One 8×8 digit (values 0..16) with random nuisances -> (uint8 RGB ``(CANVAS, CANVAS, 3)``,
    bool ink mask ``(CANVAS, CANVAS)``). Every random draw comes from ``rng`` in a fixed order."""
    size = int(rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
    angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    threshold = float(rng.uniform(*THRESHOLD_RANGE))
    bg, fg = _colour_pair(rng)
    bg2 = np.clip(bg + rng.uniform(-0.3, 0.3, size=3), 0.0, 1.0)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    # smooth ink at the target size, rotated, then thresholded into a soft alpha (thickness)
    src = Image.fromarray((digit8 * (255.0 / 16.0)).astype(np.float32), mode="F")
    ink = src.resize((size, size), Image.BILINEAR).rotate(angle, Image.BILINEAR, expand=True)
    ink = np.asarray(ink, dtype=np.float32) / 255.0
    alpha = np.clip((ink - threshold) / 0.15, 0.0, 1.0)
    h, w = alpha.shape
    if h > CANVAS or w > CANVAS:  # cannot happen with the defaults; keep the digit whole anyway
        raise ValueError(f"rendered digit {h}x{w} exceeds the {CANVAS}px canvas")
    oy = int(rng.integers(0, CANVAS - h + 1))
    ox = int(rng.integers(0, CANVAS - w + 1))
    # background: a linear gradient between two colours plus noise
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32) / (CANVAS - 1)
    t = (np.cos(direction) * xx + np.sin(direction) * yy)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = bg[None, None, :] * (1 - t[..., None]) + bg2[None, None, :] * t[..., None]
    img = img + rng.normal(0.0, NOISE_STD, size=img.shape)
    # clutter: a few thin random line segments (drawn before the digit, which stays on top)
    n_lines = int(rng.integers(CLUTTER_LINES[0], CLUTTER_LINES[1] + 1))
    clutter = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(clutter)
    colours = rng.random((n_lines, 3))
    layers = []
    for k in range(n_lines):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, CANVAS, size=4))
        clutter.paste(0, (0, 0, CANVAS, CANVAS))
        draw.line((x0, y0, x1, y1), fill=255, width=1)
        layers.append((np.asarray(clutter, dtype=np.float32) / 255.0, colours[k]))
    for mask, colour in layers:
        img = img * (1 - mask[..., None]) + colour[None, None, :] * mask[..., None]
    full_alpha = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    full_alpha[oy:oy + h, ox:ox + w] = alpha
    img = img * (1 - full_alpha[..., None]) + fg[None, None, :] * full_alpha[..., None]
    rgb = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return rgb, full_alpha > 0


def write_demo_raw(root: str | os.PathLike, limit: int | None = None) -> Path:
    """Write the demo raw data set into ``root`` (normally ``<data_root>/demo``); return ``root``.

    ``limit``: write only the first ``limit`` digits (identical files; for quick tests only,
    ``prepare("demo")`` writes all). The annotation files are written last (atomically), so a
    half-written folder is redone. Image ``i`` depends only on ``SEED`` and ``i`` (one child
    generator per image), so a prefix is identical to the full set's.
    """
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    images, labels = digits.images, digits.target.astype(np.int64)
    n = len(images) if limit is None else min(limit, len(images))
    children = np.random.SeedSequence(SEED).spawn(len(images))
    image_lines, label_lines, box_lines = [], [], []
    for i in range(1, n + 1):
        label = int(labels[i - 1])
        rgb, mask = render_digit(images[i - 1], np.random.default_rng(children[i - 1]))
        relpath = f"{label + 1:03d}.digit_{label}/digit_{label}_{i:04d}.png"
        out = root / "images" / relpath
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG")
        x, y, w, h = tight_box(mask)
        image_lines.append(f"{i} {relpath}")
        label_lines.append(f"{i} {label + 1}")
        box_lines.append(f"{i} {x} {y} {w} {h}")
    write_text(root / "bounding_boxes.txt", "\n".join(box_lines) + "\n")
    write_text(root / "image_class_labels.txt", "\n".join(label_lines) + "\n")
    write_text(root / "images.txt", "\n".join(image_lines) + "\n")
    return root


def demo_raw_exists(root: str | os.PathLike) -> bool:
    """True when the three annotation files of the demo are present in ``root``."""
    root = Path(root)
    return all((root / n).is_file() for n in ("images.txt", "image_class_labels.txt", "bounding_boxes.txt"))


def digits_toy_arrays(test_per_class: int = 60):
    """The STL-10 toy stand-in: ``(train_x, train_y, test_x, test_y)``, uint8 ``(N, 32, 32, 3)``.

    Train: every digit 0-6 (labels 0-6). Test: digits 7-9, the first ``test_per_class`` of each
    in file order, relabelled 0-2 (the shape of the STL-10 toy split, asymptotic_proxy_pp.md §A.8).
    """
    ink, labels = digit_images()
    rgb = np.repeat(ink[..., None], 3, axis=-1)
    train = labels <= 6
    test_idx = np.concatenate([np.flatnonzero(labels == c)[:test_per_class] for c in (7, 8, 9)])
    return rgb[train], labels[train], rgb[test_idx], labels[test_idx] - 7
