"""The embedded demo data: scikit-learn's bundled handwritten digits (1,797 real 8×8 images, no
download), as a CUB-layout retrieval set and as the STL-10 stand-in of the toy.

Demo retrieval set (:func:`write_demo_raw`): each digit is upscaled ×4 (nearest, 32×32), put at
a seeded random offset on a black 48×48 RGB canvas, and written as PNG in the exact CUB-200-2011
raw layout (``images.txt``, ``image_class_labels.txt``, ``bounding_boxes.txt`` with the tight float
box ``x y w h`` around the ink, ``images/<NNN.digit_k>/digit_k_<id>.png``). Class ids are
``k+1`` (1..10); ``prepare("demo")`` reads it with the CUB reader, digits 0-4 (ids 1-5) train and
5-9 test. Deterministic (fixed seed, PNG) and fast (~1 s).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from dml_core.io import atomic_path, write_text

SCALE = 4
CANVAS = 48
SEED = 0
NUM_TRAIN_CLASSES = 5  # digits 0-4


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


def write_demo_raw(root: str | os.PathLike, limit: int | None = None) -> Path:
    """Write the demo raw data set into ``root`` (normally ``<data_root>/demo``); return ``root``.

    ``limit``: write only the first ``limit`` digits (identical files; for quick tests only,
    ``prepare("demo")`` writes all). The annotation files are written last (atomically), so a
    half-written folder is redone.
    """
    root = Path(root)
    ink, labels = digit_images()
    rng = np.random.default_rng(SEED)
    size = ink.shape[1]
    offsets = rng.integers(0, CANVAS - size + 1, size=(len(ink), 2))
    if limit is not None:
        ink, labels, offsets = ink[:limit], labels[:limit], offsets[:limit]
    image_lines, label_lines, box_lines = [], [], []
    for i, (digit, label, (ox, oy)) in enumerate(zip(ink, labels, offsets), start=1):
        canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
        canvas[oy:oy + size, ox:ox + size] = digit
        relpath = f"{label + 1:03d}.digit_{label}/digit_{label}_{i:04d}.png"
        out = root / "images" / relpath
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            Image.fromarray(np.stack([canvas] * 3, axis=-1)).save(tmp, format="PNG")
        x, y, w, h = tight_box(canvas > 0)
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
