"""Model selection: the best epoch, and a validation split carved from the training classes.

The seeds pick the epoch whose test dense R@1 is *strictly greater* than the best so far; that is
optimistic (model selection on the test set). For honest selection, ``validation_fraction > 0``
holds out that fraction of the training CLASSES (seeded, so every run of a recipe holds out the
same classes): the model trains on the rest and the best epoch is chosen by validation R@1, while
test metrics are still reported at that epoch. The held-out classes are evaluated on the data
set's ``val`` split when it has one (the demo: images made of scans no training image uses, so
validation is as unseen as test), else on their training images (``trainer.build_data``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset


def split_classes(labels: Sequence[int] | np.ndarray, fraction: float,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split the classes in ``labels`` into (train_classes, validation_classes), both sorted.

    ``round(fraction * C)`` classes (at least one when ``fraction > 0``) go to validation, drawn
    with ``numpy.random.default_rng(seed)``; it does not touch the global RNGs. ``fraction == 0``
    returns every class for training and none for validation.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}")
    classes = np.unique(np.asarray(labels, dtype=np.int64))
    if fraction == 0.0:
        return classes, classes[:0]
    n_val = max(1, int(round(fraction * len(classes))))
    if len(classes) - n_val < 2:
        raise ValueError(f"validation_fraction={fraction} leaves {len(classes) - n_val} training "
                         f"class(es) of {len(classes)}; need at least 2")
    perm = np.random.default_rng(seed).permutation(classes)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class ClassSubset(Dataset):
    """The samples of ``dataset`` whose label is in ``classes``, relabelled densely 0..C'-1.

    Exposes the same attributes as ``RetrievalDataset`` (``labels``, ``paths``, ``num_classes``),
    so samplers, loaders and the evaluation engine take it unchanged.
    """

    def __init__(self, dataset: Any, classes: Sequence[int] | np.ndarray, relabel: bool = True):
        self.dataset = dataset
        self.classes = np.sort(np.asarray(classes, dtype=np.int64))
        original = np.asarray(dataset.labels, dtype=np.int64)
        self.indices = np.flatnonzero(np.isin(original, self.classes))
        kept = original[self.indices]
        self.labels = np.searchsorted(self.classes, kept).astype(np.int64) if relabel else kept
        self.paths = [dataset.paths[i] for i in self.indices]
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, _ = self.dataset[int(self.indices[i])]
        return image, int(self.labels[i])


def is_better(value: float, best: float | None) -> bool:
    """The original code's rule: strictly greater than the best so far. NaN is never better."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or value > best
