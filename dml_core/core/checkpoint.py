"""What the run folder's ``.pt`` files hold; all load with ``torch.load(..., weights_only=True)``.

Where they lie is :class:`dml_core.core.run_folder.RunFolder`'s business; this module is their
format. Only tensors, dicts, lists, numbers, strings and None are stored.

- The resume point (:func:`save_last`): the state at the end of the last complete epoch —
  method (model, criterion, optimisers, schedulers), RNG states, the metrics history, the best
  epoch so far, running totals, and the untrained network's metrics (the baseline measured once
  before the first step).
- The selected epoch (:func:`save_best`): model and criterion weights and that epoch's metrics.
- Saved test features (:func:`save_features`, read back as :class:`SavedFeatures`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dml_core.core.io import torch_save

CHECKPOINT_VERSION = 1


class CorruptCheckpointError(RuntimeError):
    """A checkpoint or features file that does not load; the message names it."""


def save_last(path: str | Path, *, epoch: int, method_state: dict, rng: dict, history: list,
              best: dict | None, totals: dict, loader_rng: dict | None = None,
              untrained: dict | None = None) -> None:
    """Write the resume point for the end of ``epoch`` atomically."""
    torch_save({"version": CHECKPOINT_VERSION, "epoch": int(epoch), "method": method_state,
                "rng": rng, "loader_rng": loader_rng or {}, "history": history, "best": best,
                "totals": totals, "untrained": untrained}, path)


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
    except Exception as exc:  # noqa: BLE001 - torch.load raises EOFError, RuntimeError, UnpicklingError, ...
        raise CorruptCheckpointError(
            f"{path} cannot be loaded ({type(exc).__name__}: {exc or 'empty or truncated'}); "
            "it is damaged (a kill during a copy, a full disk?): delete it, or let `train` move "
            "it aside and start again") from exc


def unreadable(path: str | Path) -> str | None:
    """None when ``path`` loads as a resume point (a dict with ``epoch`` and ``method``), else
    what is wrong with it, in words."""
    try:
        state = load(path)
    except (CorruptCheckpointError, OSError) as exc:
        cause = exc.__cause__ or exc
        return f"{type(cause).__name__}: {cause}" if str(cause) else \
            f"{type(cause).__name__}: empty or truncated"
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


@dataclass
class SavedFeatures:
    """Saved embeddings of one evaluation set: ``features`` (N, D) float32, ``labels`` (N,)
    int64, ``paths`` (the N image paths, or none when the evaluator saved none). For a query/gallery
    protocol (In-shop) these are the queries and ``gallery`` holds the gallery."""

    features: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    epoch: int | None = None
    gallery: "SavedFeatures | None" = None

    @classmethod
    def from_dict(cls, saved: dict, prefix: str = "") -> "SavedFeatures":
        """From what :func:`save_features` wrote (``prefix="gallery_"``: its gallery part)."""
        feats = torch.as_tensor(saved[f"{prefix}features"]).float()
        labels = torch.as_tensor(saved[f"{prefix}labels"]).long()
        paths = [str(p) for p in saved.get(f"{prefix}paths", [])]
        gallery = (cls.from_dict(saved, "gallery_") if not prefix and "gallery_features" in saved
                   else None)
        return cls(feats, labels, paths, saved.get("epoch"), gallery)

    def searched(self) -> "SavedFeatures":
        """The images a query is searched in: the gallery when there is one, else these."""
        return self.gallery if self.gallery is not None else self
