"""Checkpoints and saved features, all loadable with ``torch.load(..., weights_only=True)``.

``checkpoints/last.pt`` is the resume point: the state at the end of the last complete epoch
(method: model, criterion, optimisers, schedulers; RNG states; metrics history; best so far;
running totals). ``checkpoints/best.pt`` holds the model and criterion of the selected epoch.
Only tensors, dicts, lists, numbers, strings and None are stored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dml_core.io import torch_save

CHECKPOINT_VERSION = 1


def save_last(path: str | Path, *, epoch: int, method_state: dict, rng: dict, history: list,
              best: dict | None, totals: dict, loader_rng: dict | None = None) -> None:
    """Write the resume point for the end of ``epoch`` atomically."""
    torch_save({"version": CHECKPOINT_VERSION, "epoch": int(epoch), "method": method_state,
                "rng": rng, "loader_rng": loader_rng or {}, "history": history, "best": best, "totals": totals}, path)


def save_best(path: str | Path, *, epoch: int, method: Any, metrics: dict) -> None:
    """Write the model and criterion weights of the selected epoch atomically."""
    torch_save({"version": CHECKPOINT_VERSION, "epoch": int(epoch),
                "model": method.model.state_dict(), "criterion": method.criterion.state_dict(),
                "metrics": dict(metrics)}, path)


def load(path: str | Path) -> dict:
    """Load a checkpoint or features file on the CPU, safely (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_features(path: str | Path, features: dict, epoch: int) -> None:
    """Write test features (``features, labels, paths`` [+ ``gallery_*``]) atomically."""
    out = {"epoch": int(epoch)}
    for key, value in features.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.detach().cpu()
        elif hasattr(value, "__array__") and not isinstance(value, (list, tuple, str)):
            out[key] = torch.as_tensor(value)
        elif isinstance(value, (list, tuple)):
            out[key] = [str(v) if not isinstance(v, (int, float)) else v for v in value]
        else:
            out[key] = value
    torch_save(out, path)
