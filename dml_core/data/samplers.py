"""Batch samplers, deterministic given ``(seed, epoch)`` so that resuming needs only the epoch.

:class:`MPerClassBatchSampler` reproduces the original code's ``utils.MPerClassSampler``
(leftthomas/NormSoftmax and CGD): an epoch is ⌊N/B⌋ INDEPENDENT batches (not a pass over the data); a
batch is built by drawing classes uniformly (skipping ones already in the batch), taking the
first ``m`` of a random permutation of the class's images (without replacement: a class with
fewer than ``m`` images gives all of them), until at least B indices are collected; then it is
truncated to B (the last class may be cut short, even to one image) and shuffled. The original repositories use
numpy's global RNG; here each epoch uses ``numpy.random.default_rng([seed, epoch])``.

pytorch-metric-learning's ``MPerClassSampler`` does NOT fit this behaviour exactly, so it is only
offered as an alternative (:class:`PMLMPerClassBatchSampler`):

- it takes exactly B/m classes per batch and requires ``B % m == 0`` (the original repositories allow 75/25 but
  also any B, truncating the last class);
- it samples WITH replacement when a class has fewer than m images (duplicates in the batch),
  while the original repositories give all of a small class's images and fill the batch with more classes;
- its epoch length is ``length_before_new_iter`` samples (default 100,000), not ⌊N/B⌋ batches,
  and batches are consecutive chunks of one long list built from passes over shuffled classes
  (no repeated class within a batch, as here);
- it draws from a module-global numpy RNG (``c_f.NUMPY_RANDOM``).
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class _EpochSeeded(Sampler):
    seed: int
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (call before every epoch)."""
        self.epoch = int(epoch)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), self.epoch])


class MPerClassBatchSampler(_EpochSeeded):
    """The original code's m-per-class batch sampler (module doc). Yields lists of ``batch_size`` indices;
    ``len`` = ⌊N / batch_size⌋ batches per epoch."""

    def __init__(self, labels: Sequence[int], batch_size: int, m: int, seed: int = 0):
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
        if batch_size < 1 or m < 1:
            raise ValueError(f"batch_size and m must be >= 1, got batch_size={batch_size}, m={m}")
        self.classes = np.unique(labels)
        self.class_indices = [np.flatnonzero(labels == c) for c in self.classes]
        capacity = sum(min(m, len(ix)) for ix in self.class_indices)
        if capacity < batch_size:
            raise ValueError(f"cannot fill a batch of {batch_size}: all {len(self.classes)} classes "
                             f"together give only {capacity} images at m={m}; lower batch_size or raise m")
        self.num_samples, self.batch_size, self.m, self.seed = len(labels), batch_size, m, seed

    def __len__(self) -> int:
        return self.num_samples // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = self._rng()
        for _ in range(len(self)):
            batch: list[int] = []
            used: set[int] = set()
            while len(batch) < self.batch_size:
                k = int(rng.integers(len(self.classes)))
                if k in used:
                    continue
                used.add(k)
                batch.extend(rng.permutation(self.class_indices[k])[: self.m].tolist())
            batch = batch[: self.batch_size]
            rng.shuffle(batch)
            yield batch


class ShuffleBatchSampler(_EpochSeeded):
    """A seeded permutation of ``range(n)`` cut into batches (the last one dropped if
    ``drop_last`` and incomplete)."""

    def __init__(self, n: int, batch_size: int, drop_last: bool = False, seed: int = 0):
        if n < 1 or batch_size < 1:
            raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
        self.n, self.batch_size, self.drop_last, self.seed = n, batch_size, drop_last, seed

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._rng().permutation(self.n).tolist()
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]


class PMLMPerClassBatchSampler(_EpochSeeded):
    """pytorch-metric-learning's ``MPerClassSampler`` as a seeded batch sampler with ⌊N/B⌋
    batches per epoch (see the module doc for how it differs from the original code's sampler)."""

    def __init__(self, labels: Sequence[int], batch_size: int, m: int, seed: int = 0):
        from pytorch_metric_learning.samplers import MPerClassSampler

        labels = np.asarray(labels)
        if batch_size % m:
            raise ValueError(f"pytorch-metric-learning needs batch_size % m == 0, got {batch_size} % {m}")
        self.num_batches = len(labels) // batch_size
        if self.num_batches < 1:
            raise ValueError(f"{len(labels)} labels cannot fill one batch of {batch_size}")
        self.batch_size, self.seed = batch_size, seed
        self._sampler = MPerClassSampler(labels, m, batch_size=batch_size,
                                         length_before_new_iter=self.num_batches * batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        from pytorch_metric_learning.utils import common_functions as c_f

        saved = c_f.NUMPY_RANDOM
        c_f.NUMPY_RANDOM = np.random.RandomState(np.random.SeedSequence([int(self.seed), self.epoch]).generate_state(1))
        try:
            self._sampler.labels = sorted(self._sampler.labels_to_indices)  # PML shuffles it in place
            order = [int(i) for i in iter(self._sampler)]
        finally:
            c_f.NUMPY_RANDOM = saved
        for b in range(self.num_batches):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]
