"""STL-10 from its official binary files, and the toy data of AsymptoticProxy's toy.py.

Files (``<data_root>/stl10/stl10_binary/``): ``{train,test}_X.bin`` uint8, every image 3×96×96
stored channel by channel, each channel COLUMN-major (so a record reshaped to (3, 96, 96) is
(C, W, H) and is transposed to (H, W, C)); ``{train,test}_y.bin`` uint8 labels 1..10;
``fold_indices.txt`` 10 lines of 0-based train indices (fold 0 = line 1).

Toy split: train = fold 0 of ``train`` restricted to classes 0-6 (airplane ... horse); test =
``test`` classes 7-9 (monkey, ship, truck) relabelled 0-2, the first 60 of each in file order.

Prepared index rows point at records, not image files: ``path`` is
``stl10_binary/<file>.bin#<record>`` (0-based record number in that file); ``class_name`` is the
raw 1..10 label string; the index holds exactly the toy split.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from dml_core.core import paths

from .index import Record
from .raw import require_files

SIDE = 96
RECORD_BYTES = 3 * SIDE * SIDE
FILES = ["stl10_binary/train_X.bin", "stl10_binary/train_y.bin", "stl10_binary/test_X.bin",
         "stl10_binary/test_y.bin", "stl10_binary/fold_indices.txt"]
CLASS_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
TRAIN_CLASSES = range(0, 7)
TEST_CLASSES = range(7, 10)
TEST_PER_CLASS = 60


def decode_records(raw: np.ndarray) -> np.ndarray:
    """uint8 bytes of n records → ``(n, 96, 96, 3)`` images (undo the column-major storage)."""
    return raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 3, 2, 1)


def _num_records(x_path: Path) -> int:
    size = x_path.stat().st_size
    if size % RECORD_BYTES:
        raise ValueError(f"{x_path} has {size} bytes, not a multiple of 3*96*96={RECORD_BYTES}: truncated?")
    return size // RECORD_BYTES


def read_labels(folder: Path, split: str) -> np.ndarray:
    """0-based int64 labels of ``split`` (file stores 1..10), checked against the image count."""
    folder = Path(folder)
    y = np.fromfile(folder / f"stl10_binary/{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
    n = _num_records(folder / f"stl10_binary/{split}_X.bin")
    if len(y) != n:
        raise ValueError(f"STL-10 {split}: {n} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"STL-10 {split}_y.bin: labels must be 1..10, found {y.min() + 1}..{y.max() + 1}")
    return y


def read_fold(folder: Path, fold: int, num_train: int) -> np.ndarray:
    """0-based train indices of ``fold`` from ``fold_indices.txt``, range-checked."""
    lines = (Path(folder) / "stl10_binary/fold_indices.txt").read_text().splitlines()
    if fold >= len(lines):
        raise ValueError(f"fold_indices.txt has {len(lines)} lines, no fold {fold}")
    idx = np.array(lines[fold].split(), dtype=np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= num_train):
        raise ValueError(f"fold_indices.txt fold {fold} has indices outside 0..{num_train - 1}")
    return idx


def read_images(folder: Path, split: str, records: np.ndarray) -> np.ndarray:
    """Images ``records`` of ``split`` as uint8 ``(n, 96, 96, 3)`` (memory-mapped read)."""
    x_path = Path(folder) / f"stl10_binary/{split}_X.bin"
    mm = np.memmap(x_path, dtype=np.uint8, mode="r", shape=(_num_records(x_path), RECORD_BYTES))
    return decode_records(np.asarray(mm[np.asarray(records, dtype=np.int64)]))


def toy_split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Record numbers ``(train_records, test_records)`` of the toy split."""
    train_y, test_y = read_labels(folder, "train"), read_labels(folder, "test")
    fold = read_fold(folder, 0, len(train_y))
    train = fold[np.isin(train_y[fold], list(TRAIN_CLASSES))]
    test = np.concatenate([np.flatnonzero(test_y == c)[:TEST_PER_CLASS] for c in TEST_CLASSES])
    return train, test


def read_stl10(folder: Path) -> list[Record]:
    """Validate the binary files and return index records of the toy split (see module doc)."""
    folder = Path(folder)
    require_files("stl10", folder, FILES)
    train, test = toy_split(folder)
    train_y, test_y = read_labels(folder, "train"), read_labels(folder, "test")
    records = [Record(f"stl10_binary/train_X.bin#{i}", str(train_y[i] + 1), "train") for i in train]
    records += [Record(f"stl10_binary/test_X.bin#{i}", str(test_y[i] + 1), "test") for i in test]
    return records


@dataclass
class ToyData:
    """Toy data: uint8 images ``(N, H, W, 3)``, int64 labels; ``source`` is "stl10" or "digits"."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    train_class_names: tuple[str, ...]
    test_class_names: tuple[str, ...]


def load_toy_data(data_root: Optional[str | os.PathLike] = None, source: str = "auto") -> ToyData:
    """The toy data of AsymptoticProxy's toy.py (docs/methods/02_asymptotic_proxy.md).

    ``source``: "stl10" (needs ``<data_root>/stl10/stl10_binary/``), "digits" (scikit-learn
    digits stand-in, train digits 0-6, test 7-9 first 60 each relabelled 0-2, 32×32 RGB), or
    "auto": STL-10 when its files are on disk, else digits. Check ``.source`` to say which ran.
    """
    if source not in ("auto", "stl10", "digits"):
        raise ValueError(f"source must be 'auto', 'stl10' or 'digits', got {source!r}")
    folder = Path(data_root if data_root is not None else paths.data_root()) / "stl10"
    if source == "auto":
        source = "stl10" if all((folder / f).is_file() for f in FILES) else "digits"
    if source == "digits":
        from .demo import digits_toy_arrays

        tx, ty, vx, vy = digits_toy_arrays(TEST_PER_CLASS)
        return ToyData(tx, ty, vx, vy, "digits", tuple(f"digit_{k}" for k in range(7)),
                       tuple(f"digit_{k}" for k in range(7, 10)))
    require_files("stl10", folder, FILES)
    train, test = toy_split(folder)
    train_y, test_y = read_labels(folder, "train"), read_labels(folder, "test")
    return ToyData(read_images(folder, "train", train), train_y[train],
                   read_images(folder, "test", test), test_y[test] - 7, "stl10",
                   CLASS_NAMES[:7], CLASS_NAMES[7:])
