"""Image checks during preparation: which listed images are missing, unreadable or truncated.

Modes (``verify_images``):

- ``"header"`` (default): ``PIL.Image.open(p).verify()``, which checks the header and file
  structure (for PNG the chunk CRCs) without decoding pixels; fast enough for SOP. It does not
  catch every truncated JPEG.
- ``"full"``: decode every pixel (``Image.open(p).load()``); catches truncation; slow on SOP.
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
                img.load()
            else:
                img.verify()
        return None, size
    except Exception as exc:  # noqa: BLE001 - every failure is reported, never skipped silently
        return f"{type(exc).__name__}: {exc}", None


def check_images(paths: list[Path], mode: str = "header", workers: Optional[int] = None,
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
