"""DataLoaders with settings chosen for the machine (a 2-core CPU box or a 16-core GPU box).

Workers: ``num_workers=None`` → :func:`auto_num_workers` (0 on ≤ 2 cores, where worker processes
only add overhead; otherwise ``min(8, cores - 1)``, 8 as in the seeds). ``pin_memory`` only when
CUDA is available; ``persistent_workers`` whenever workers > 0. Augmentation randomness comes
from torch's RNG (each worker is seeded from it), so ``torch.manual_seed`` makes it repeatable.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def auto_num_workers() -> int:
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores - 1)


def _settings(num_workers: Optional[int]) -> dict:
    workers = auto_num_workers() if num_workers is None else int(num_workers)
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0 or None (auto), got {workers}")
    return {"num_workers": workers, "pin_memory": torch.cuda.is_available(),
            "persistent_workers": workers > 0}


def make_train_loader(dataset: Dataset, batch_sampler: Sampler, num_workers: Optional[int] = None) -> DataLoader:
    """Training loader driven by ``batch_sampler`` (call its ``set_epoch`` before each epoch)."""
    return DataLoader(dataset, batch_sampler=batch_sampler, **_settings(num_workers))


def make_eval_loader(dataset: Dataset, batch_size: int, num_workers: Optional[int] = None) -> DataLoader:
    """Evaluation loader: dataset order, no shuffling, last partial batch kept."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, **_settings(num_workers))
