"""The embedded demo data: scikit-learn's bundled handwritten digits (1,797 real 8×8 scans, no
download), composed into two-digit NUMBERS as a CUB-layout retrieval set, and the STL-10 stand-in
of the toy (single digits).

Demo retrieval set (:func:`write_demo_raw`): 100 classes, the numbers 00-99, ``IMAGES_PER_CLASS``
images each, written as 48×48 RGB PNGs in the exact CUB-200-2011 raw layout (``images.txt``,
``image_class_labels.txt``, ``bounding_boxes.txt`` with the tight float box ``x y w h`` around the
rendered number, ``images/<NNN.number_XY>/number_XY_<id>.png``). Like CUB, the first half of the
class ids trains and the second half is the unseen test set:

* train (ids 1-50): the 50 numbers whose digit sum is EVEN (00, 02, 04, ..., 11, 13, ...);
* test (ids 51-100): the 50 numbers whose digit sum is ODD (01, 03, ..., 10, 12, ...).

Besides its ``IMAGES_PER_CLASS`` training images, every training class has
``VAL_IMAGES_PER_CLASS`` **validation** images (split ``val`` of the prepared index, listed in
``validation_images.txt``; CUB has no such file). When a run holds out validation classes
(``validation_fraction``), it trains on the other classes' training images and selects its epoch
on the held-out classes' validation images.

Every test number is a new class, but each of its digits has been seen in both positions during
training (e.g. test 57: train has 53, 55, 17, 37, ...), so features that recognise digits and
their order transfer, as bird parts transfer between CUB's disjoint species. Reversal keeps the
digit sum, so a number and its mirror-ordered twin (08/80) always fall in the same split.

Scans (:func:`scan_role`): every image is made of scans of ONE role, chosen by the scan's index in
``load_digits()``: odd indices make the test images, even indices ``≡ 2 (mod 8)`` the validation
images, the other even indices the training images (and the source task of the demo's pretrained
stand-in trunk, :mod:`dml_core.models.standin`). No scan appears in two roles, so validation images
are as unseen as test images: their scans were never trained on (until version 2 the validation
classes were rendered from the training scans, which made validation easier than test).

Why numbers, not single digits: the first demo (digits 0-4 train, 5-9 test) had 5 training
classes. Five classes teach an embedding with five directions, which does not transfer: an
UNTRAINED random ResNet-18 reached R@1 ≈ 0.33 on the unseen digits and no method beat it by more
than 0.03 in a CPU budget (the diagnosis is in the README's history). Deep metric learning needs
many training classes; 50 is CUB's order of magnitude.

Nuisances, drawn per image from its own seeded generator (so an untrained network cannot match
numbers by colour or size, and random features are a weak baseline): a random digit size
(``SIZE_RANGE``), a random stroke thickness (the smooth ink thresholded at a random level), a
random dark background colour with a linear gradient towards a second colour plus pixel noise, a
random bright ink colour, a small vertical jitter and gap between the two digits, and a random
position of the number on the canvas. The digits keep their natural orientation.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from dml_core.core.io import atomic_path, write_text

SCALE = 4          # the toy stand-in's upscaling (8 -> 32 px)
CANVAS = 48
SEED = 0
#: 1: single digits 0-4 / 5-9 (until Nov 2026); 2: two-digit numbers; 3: validation images from
#: their own scans (:func:`scan_role`).
VERSION = "3"
VERSION_FILE = "demo_version.txt"
ANNOTATION_FILES = ("images.txt", "image_class_labels.txt", "bounding_boxes.txt",
                    "validation_images.txt")
VALIDATION_FILE = "validation_images.txt"  # '<image id>' per line: the validation images
NUM_CLASSES = 100       # the numbers 00-99
NUM_TRAIN_CLASSES = 50  # class ids 1-50 (even digit sum) train, 51-100 (odd digit sum) test
IMAGES_PER_CLASS = 30   # training images of a training class; test images of a test class
VAL_IMAGES_PER_CLASS = 30  # validation images of a training class
SCAN_ROLES = ("train", "val", "test")
SIZE_RANGE = (18, 22)   # rendered digit height = width (px), one size per image
GAP_RANGE = (0, 3)      # px between the two digits
JITTER = 2              # max vertical offset (px) of the second digit against the first
THRESHOLD_RANGE = (0.3, 0.45)  # lower = bolder strokes
NOISE_STD = 0.02
GRADIENT = 0.1          # max per-channel colour change across the background gradient
DARK_MAX = 0.15         # background channels < DARK_MAX
BRIGHT_MIN = 0.85       # ink channels > BRIGHT_MIN


def digit_images(scale: int = SCALE) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 ``(N, 8*scale, 8*scale)`` ink images (0..255) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    ink = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    ink = ink.repeat(scale, axis=1).repeat(scale, axis=2)
    return ink, digits.target.astype(np.int64)


def scan_role(index: int | np.ndarray) -> str | np.ndarray:
    """What the scan ``load_digits().images[index]`` may make: ``"test"`` (odd index), ``"val"``
    (even, ``index % 8 == 2``) or ``"train"`` (the other even indices). Vectorised over arrays."""
    index = np.asarray(index)
    role = np.where(index % 2 == 1, "test", np.where(index % 8 == 2, "val", "train"))
    return str(role) if role.ndim == 0 else role


def scan_pool(role: str, digit: int, labels: np.ndarray) -> np.ndarray:
    """Indices of the scans of ``digit`` (``labels = load_digits().target``) with ``role``."""
    if role not in SCAN_ROLES:
        raise ValueError(f"unknown scan role {role!r}; expected one of {SCAN_ROLES}")
    index = np.arange(len(labels))
    return np.flatnonzero((labels == int(digit)) & (scan_role(index) == role))


def demo_classes() -> list[tuple[int, str]]:
    """``[(class_id, number), ...]`` for the 100 classes: ids 1-50 the numbers with an even digit
    sum (train), ids 51-100 those with an odd digit sum (test), each half in increasing order."""
    numbers = [f"{n:02d}" for n in range(NUM_CLASSES)]
    even = [n for n in numbers if (int(n[0]) + int(n[1])) % 2 == 0]
    odd = [n for n in numbers if (int(n[0]) + int(n[1])) % 2 == 1]
    return list(enumerate(even + odd, start=1))


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Float ``(x, y, w, h)`` of the smallest box holding every True pixel of the 2-D ``mask``."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0, 0.0, float(mask.shape[1]), float(mask.shape[0])
    return float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)


def _ink_alpha(digit8: np.ndarray, size: int, threshold: float) -> np.ndarray:
    """An 8×8 digit (values 0..16) resized bilinearly to ``size``² and thresholded into a soft
    alpha in [0, 1] (a lower ``threshold`` gives bolder strokes)."""
    src = Image.fromarray((digit8 * (255.0 / 16.0)).astype(np.float32), mode="F")
    ink = np.asarray(src.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return np.clip((ink - threshold) / 0.15, 0.0, 1.0)


def render_number(digits8, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Digits (a sequence of 8×8 arrays, values 0..16) written left to right with random
    nuisances -> (uint8 RGB ``(CANVAS, CANVAS, 3)``, bool ink mask ``(CANVAS, CANVAS)``).
    Every random draw comes from ``rng`` in a fixed order."""
    size = int(rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
    threshold = float(rng.uniform(*THRESHOLD_RANGE))
    bg = rng.random(3) * DARK_MAX
    fg = BRIGHT_MIN + rng.random(3) * (1.0 - BRIGHT_MIN)
    bg2 = np.clip(bg + rng.uniform(-GRADIENT, GRADIENT, size=3), 0.0, 1.0)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    gaps = [int(rng.integers(GAP_RANGE[0], GAP_RANGE[1] + 1)) for _ in digits8[1:]]
    dys = [0] + [int(rng.integers(-JITTER, JITTER + 1)) for _ in digits8[1:]]
    width = size * len(digits8) + sum(gaps)
    height = size + max(dys) - min(dys)
    if width > CANVAS or height > CANVAS:  # cannot happen with the defaults
        raise ValueError(f"rendered number {height}x{width} exceeds the {CANVAS}px canvas")
    oy = int(rng.integers(0, CANVAS - height + 1)) - min(dys)
    ox = int(rng.integers(0, CANVAS - width + 1))
    alpha = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    for k, digit8 in enumerate(digits8):
        y = oy + dys[k]
        alpha[y:y + size, ox:ox + size] = np.maximum(alpha[y:y + size, ox:ox + size],
                                                     _ink_alpha(digit8, size, threshold))
        ox += size + (gaps[k] if k < len(gaps) else 0)
    # background: a linear gradient between two colours plus noise; the ink on top
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32) / (CANVAS - 1)
    t = np.cos(direction) * xx + np.sin(direction) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = bg[None, None, :] * (1 - t[..., None]) + bg2[None, None, :] * t[..., None]
    img = img + rng.normal(0.0, NOISE_STD, size=img.shape)
    img = img * (1 - alpha[..., None]) + fg[None, None, :] * alpha[..., None]
    rgb = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return rgb, alpha > 0


def demo_plan(labels: np.ndarray | None = None) -> list[tuple[int, str, int, int, str]]:
    """``[(class_id, number, scan_of_first_digit, scan_of_second_digit, split), ...]``: the
    deterministic list of every demo image. First ``IMAGES_PER_CLASS`` per class, class by class
    (split ``train`` for ids 1-50, ``test`` for 51-100), then ``VAL_IMAGES_PER_CLASS`` per training
    class (split ``val``). Scans are indices into ``load_digits()`` (whose ``target`` may be passed
    as ``labels``), each drawn from the pool of its split's role (:func:`scan_role`)."""
    if labels is None:
        from sklearn.datasets import load_digits

        labels = load_digits().target
    rng = np.random.default_rng(SEED)
    plan = []
    classes = demo_classes()
    blocks = [(cid, number, "train" if cid <= NUM_TRAIN_CLASSES else "test", IMAGES_PER_CLASS)
              for cid, number in classes]
    blocks += [(cid, number, "val", VAL_IMAGES_PER_CLASS) for cid, number in classes
               if cid <= NUM_TRAIN_CLASSES]
    for class_id, number, split, count in blocks:
        pools = [scan_pool(split, int(d), labels) for d in number]
        for _ in range(count):
            first, second = (int(rng.choice(pool)) for pool in pools)
            plan.append((class_id, number, first, second, split))
    return plan


def write_demo_raw(root: str | os.PathLike, limit: int | None = None) -> Path:
    """Write the demo raw data set into ``root`` (normally ``<data_root>/demo``); return ``root``.

    ``limit``: write only the first ``limit`` images (identical files; for quick tests only,
    ``prepare("demo")`` writes all 4,500). The annotation files are written last (atomically),
    so a half-written folder is redone. Image ``i`` depends only on ``SEED`` and ``i`` (its scans
    from :func:`demo_plan`, its nuisances from one child generator per image), so a prefix is
    identical to the full set's.
    """
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    scans, plan = digits.images, demo_plan(digits.target)
    n = len(plan) if limit is None else min(limit, len(plan))
    children = np.random.SeedSequence(SEED).spawn(len(plan))
    image_lines, label_lines, box_lines, val_lines = [], [], [], []
    for i in range(1, n + 1):
        class_id, number, first, second, split = plan[i - 1]
        rgb, mask = render_number([scans[first], scans[second]],
                                  np.random.default_rng(children[i - 1]))
        relpath = f"{class_id:03d}.number_{number}/number_{number}_{i:04d}.png"
        out = root / "images" / relpath
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out, durable=False) as tmp:  # made durable at once below
            Image.fromarray(rgb).save(tmp, format="PNG")
        x, y, w, h = tight_box(mask)
        image_lines.append(f"{i} {relpath}")
        label_lines.append(f"{i} {class_id}")
        box_lines.append(f"{i} {x} {y} {w} {h}")
        if split == "val":
            val_lines.append(f"{i}")
    os.sync()  # every image on the disk before the annotation files say the folder is complete
    write_text(root / VALIDATION_FILE, "".join(f"{line}\n" for line in val_lines))
    write_text(root / "bounding_boxes.txt", "\n".join(box_lines) + "\n")
    write_text(root / "image_class_labels.txt", "\n".join(label_lines) + "\n")
    write_text(root / "images.txt", "\n".join(image_lines) + "\n")
    if limit is None:
        write_text(root / VERSION_FILE, VERSION + "\n")
    return root


def demo_raw_exists(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a complete demo of the current :data:`VERSION` (its
    annotation files and ``demo_version.txt``, written last)."""
    root = Path(root)
    return all((root / n).is_file() for n in ANNOTATION_FILES) and demo_version(root) == VERSION


def demo_version(root: str | os.PathLike) -> str | None:
    """The version written in ``root/demo_version.txt``: None when the file is absent (a
    version-1 demo or none at all)."""
    path = Path(root) / VERSION_FILE
    return path.read_text().strip() if path.is_file() else None


def remove_stale_demo(root: str | os.PathLike) -> str | None:
    """Delete the generated files of a demo of another version, or of an unfinished one (an
    interrupted preparation), in ``root`` (images and annotation files; nothing else is
    touched). Returns what was removed, in words, or None when nothing was."""
    import shutil

    root = Path(root)
    generated = [root / n for n in (*ANNOTATION_FILES, VERSION_FILE)]
    if demo_raw_exists(root) or not any(p.exists() for p in [*generated, root / "images"]):
        return None
    version = demo_version(root)
    if version is not None:
        what = f"the generated demo of version {version} (current: {VERSION})"
    elif all((root / n).is_file() for n in ANNOTATION_FILES[:3]):
        what = "the generated demo of version 1 (current: {VERSION})".format(VERSION=VERSION)
    else:
        what = "an unfinished generated demo (an interrupted preparation)"
    shutil.rmtree(root / "images", ignore_errors=True)
    for path in generated:
        path.unlink(missing_ok=True)
    return what


def digits_toy_arrays(test_per_class: int = 60):
    """The STL-10 toy stand-in: ``(train_x, train_y, test_x, test_y)``, uint8 ``(N, 32, 32, 3)``.

    Train: every digit 0-6 (labels 0-6). Test: digits 7-9, the first ``test_per_class`` of each
    in file order, relabelled 0-2 (the shape of the STL-10 toy split; docs/methods/02_asymptotic_proxy.md).
    """
    ink, labels = digit_images()
    rgb = np.repeat(ink[..., None], 3, axis=-1)
    train = labels <= 6
    test_idx = np.concatenate([np.flatnonzero(labels == c)[:test_per_class] for c in (7, 8, 9)])
    return rgb[train], labels[train], rgb[test_idx], labels[test_idx] - 7
