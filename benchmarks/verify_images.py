"""Speed of the image checks of ``prepare`` (dml_core.data.verify) on SOP-size JPEGs.

Writes ``--n`` synthetic JPEGs (quality 90, sides drawn from 300–640 px like Stanford Online
Products' photos; smooth colour fields plus noise, so they compress like photos) into a temporary
folder, truncates every tenth one mid-file, then times each verification mode over them with the
thread pool ``prepare`` uses, and prints images/s, the projected time for SOP's 120,053 images,
and how many truncated files each mode caught.

Usage: ``python benchmarks/verify_images.py [--n 400] [--workers N]``. The files are written once
and read from the page cache, so this measures decoding, not the disk.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dml_core.data.verify import check_images  # noqa: E402

SOP_IMAGES = 59_551 + 60_502


def write_images(folder: Path, n: int, seed: int = 0) -> tuple[list[Path], int]:
    rng = np.random.default_rng(seed)
    paths, truncated = [], 0
    for i in range(n):
        w, h = (int(v) for v in rng.integers(300, 641, size=2))
        base = rng.random((h // 16 + 1, w // 16 + 1, 3)) * 255
        img = Image.fromarray(base.astype(np.uint8)).resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(h, w, 3))
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
        if i % 10 == 5:  # truncated mid-file, as by an interrupted copy
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
            truncated += 1
        paths.append(path)
    return paths, truncated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--workers", type=int, default=None, help="threads (default: as prepare)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths, truncated = write_images(Path(tmp), args.n)
        mb = sum(p.stat().st_size for p in paths) / 2**20
        print(f"{args.n} JPEGs ({mb:.1f} MiB, {truncated} truncated), {os.cpu_count()} CPU(s), "
              f"workers={args.workers or 'default'}")
        print("| mode | images/s | SOP (120,053 images) | truncated caught |")
        print("|---|---:|---:|---:|")
        for mode in ("header", "full"):
            check_images(paths[:20], mode, workers=args.workers, progress=False)  # warm up
            t0 = time.perf_counter()
            results = check_images(paths, mode, workers=args.workers, progress=False)
            dt = time.perf_counter() - t0
            caught = sum(err is not None for err, _ in results)
            rate = len(paths) / dt
            print(f"| {mode} | {rate:,.0f} | {SOP_IMAGES / rate / 60:.1f} min | {caught}/{truncated} |")


if __name__ == "__main__":
    main()
