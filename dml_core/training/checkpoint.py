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

from dml_core.core.io import torch_save

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
    """Load a checkpoint or features file on the CPU, safely (``weights_only=True``). A file
    that does not load (truncated, empty, not a checkpoint) raises :class:`CorruptCheckpointError`
    naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - EOFError, RuntimeError, UnpicklingError, ...
        raise CorruptCheckpointError(
            f"{path} cannot be loaded ({type(exc).__name__}: {exc or 'empty or truncated'}); "
            "it is damaged (a kill during a copy, a full disk?): delete it, or let `train` move "
            "it aside and start again") from exc


class CorruptCheckpointError(RuntimeError):
    """A checkpoint or features file that does not load; the message names it."""


def unreadable(path: str | Path) -> str | None:
    """None when ``path`` loads as a resume point (a dict with ``epoch`` and ``method``), else
    what is wrong with it, in words."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__}: empty or truncated"
    if not isinstance(state, dict) or "epoch" not in state or "method" not in state:
        return "not a resume point (no epoch/method state)"
    return None


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
