"""DataLoaders with settings chosen for the machine (a 2-core CPU box or a 16-core GPU box).

Workers: ``num_workers=None`` → :func:`auto_num_workers`: from the CPUs granted to this process
(``os.sched_getaffinity``, which honours taskset/cgroup cpusets, not ``os.cpu_count``), 0 on ≤ 2
of them (worker processes only add overhead there), else ``min(cpus - 1, MAX_WORKERS)``. The
the original code's cap of 8 is raised to :data:`MAX_WORKERS` = 16: decoding JPEGs with PIL runs at ~150–250
images/s per core, so 8 workers feed at most ~2,000 images/s, below what one H100/H200 trains a
ResNet-50 at in bf16; with the cache (:mod:`dml_core.data.cache`) a worker does only crops and
flips and a few suffice. ``pin_memory`` only when CUDA is available; ``persistent_workers``
whenever workers > 0. Augmentation randomness comes
from torch's RNG (each worker is seeded from it), so ``torch.manual_seed`` makes it repeatable.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


MAX_WORKERS = 16


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where unsupported)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_num_workers(cpus: int | None = None) -> int:
    """``$DML_NUM_WORKERS`` when set (the batch runner shares the CPUs out between the jobs it
    runs at once), else 0 on ≤ 2 CPUs and ``min(cpus - 1, MAX_WORKERS)`` above (``cpus``:
    :func:`available_cpus`)."""
    if cpus is None and os.environ.get("DML_NUM_WORKERS", "").strip():
        value = os.environ["DML_NUM_WORKERS"].strip()
        if not value.isdigit():
            raise ValueError(f"DML_NUM_WORKERS must be a whole number >= 0, got {value!r}")
        return int(value)
    cores = available_cpus() if cpus is None else int(cpus)
    return 0 if cores <= 2 else min(MAX_WORKERS, cores - 1)


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
