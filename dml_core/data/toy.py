"""The toy's data pieces (:mod:`dml_core.study.toy`): the in-memory array data set, the capped and resized
arrays, and the human-readable name of the data source.

The raw arrays come from :func:`dml_core.data.stl10.load_toy_data` (STL-10 fold 0, or the
scikit-learn digits stand-in with the same split shape).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ToyArrayDataset", "source_label", "first_per_class", "prepare_toy_arrays"]


def source_label(source: str) -> str:
    """Human-readable data name for printouts and figure titles."""
    return "STL-10" if source == "stl10" else "digits stand-in for STL-10 (STL-10 not on disk)"


class ToyArrayDataset(Dataset):
    """uint8 images (N, H, W, 3) + int64 labels (N,) → ``(transform(image), label)``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None, prefix: str = "img"):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.paths = [f"{prefix}/{i:05d}" for i in range(len(labels))]  # names, not files

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.images[i]
        return (self.transform(img) if self.transform is not None else torch.from_numpy(img.copy()),
                int(self.labels[i]))


def first_per_class(labels: np.ndarray, k: int | None) -> np.ndarray:
    """Indices of the first ``k`` items of each class, in file order (all when k is None)."""
    if k is None:
        return np.arange(len(labels))
    keep = np.concatenate([np.flatnonzero(labels == c)[:int(k)] for c in np.unique(labels)])
    return np.sort(keep)


def _resize(images: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or images.shape[1] == size and images.shape[2] == size:
        return images
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
                     for im in images])


def prepare_toy_arrays(cfg: dict[str, Any]):
    """Load (:func:`dml_core.data.load_toy_data`), cap and resize the toy arrays.

    The digits stand-in is first capped at ``digits_per_class`` per class (STL-10 fold 0 has
    ~100), then both sources at ``max_train_per_class``. Returns ``(data, snapshot_idx)``:
    ``data`` a ToyData with the capped, resized arrays; ``snapshot_idx`` indexes its training set:
    the first ``snapshot_per_class`` images of each class, embedded every epoch for the pictures.
    """
    from dml_core.data.stl10 import load_toy_data

    data = load_toy_data(cfg["data_root"], cfg["source"])
    cap = cfg["max_train_per_class"]
    if data.source == "digits" and cfg["digits_per_class"] is not None:
        cap = min(int(cfg["digits_per_class"]), cap if cap is not None else 10**9)
    keep = first_per_class(data.train_labels, cap)
    data.train_images = _resize(data.train_images[keep], cfg["image_size"])
    data.train_labels = data.train_labels[keep].astype(np.int64)
    data.test_images = _resize(data.test_images, cfg["image_size"])
    data.test_labels = data.test_labels.astype(np.int64)
    snap = first_per_class(data.train_labels, cfg["snapshot_per_class"])
    return data, snap
