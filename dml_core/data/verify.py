"""Image checks during preparation: which listed images are missing, unreadable or truncated.

Modes (``verify_images``):

- ``"full"`` (default): decode the whole file (``Image.open(p).load()``); catches truncated and
  corrupt files, which would otherwise stop a training hours in. JPEGs are decoded with
  libjpeg's DCT scaling (``draft``, 1/8 size): every byte of the compressed stream is still
  entropy-decoded, so a truncated or corrupt stream fails the same way, at about twice the
  speed. Measured by ``benchmarks/verify_images.py`` (docs/DATA.md): SOP's 120,053 images take
  minutes on two cores, once, at preparation.
- ``"header"``: ``PIL.Image.open(p).verify()``, header and file structure only (for PNG the
  chunk CRCs); much faster, but a JPEG truncated mid-file passes.
- ``"none"``: only check that the files exist.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from PIL import Image

from .layout import VERIFY_MODES


def check_image(path: Path, mode: str) -> tuple[Optional[str], Optional[tuple[int, int]]]:
    """Return ``(error or None, (width, height) or None)`` for one image under ``mode``."""
    if mode == "none":
        return None, None
    try:
        with Image.open(path) as img:
            size = img.size
            if mode == "full":
                if img.format == "JPEG":  # entropy-decode all, IDCT at 1/8 (module docstring)
                    img.draft(img.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                img.load()
            else:
                img.verify()
        return None, size
    except Exception as exc:  # noqa: BLE001 - every failure is reported, never skipped silently
        return f"{type(exc).__name__}: {exc}", None


def check_images(paths: list[Path], mode: str = "full", workers: Optional[int] = None,
                 progress: bool = True) -> list[tuple[Optional[str], Optional[tuple[int, int]]]]:
    """:func:`check_image` over ``paths`` with a thread pool; results in input order."""
    if mode not in VERIFY_MODES:
        raise ValueError(f"verify_images must be one of {list(VERIFY_MODES)}, got {mode!r}")
    if mode == "none":
        return [(None, None)] * len(paths)
    workers = workers or min(8, os.cpu_count() or 1)
    results = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        it = pool.map(lambda p: check_image(p, mode), paths, chunksize=64)
        if progress and len(paths) > 2000:
            from tqdm import tqdm

            it = tqdm(it, total=len(paths), desc=f"checking images ({mode})")
        results.extend(it)
    return results
