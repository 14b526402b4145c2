"""Feature extraction: a model and a loader → (N, D) float32 CPU features in dataset order."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from .protocols import evaluate, get_protocol


@dataclass
class Features:
    """features (N, D) float32 CPU, labels (N,) int64, paths (N,) or [] when the dataset has none."""
    features: torch.Tensor
    labels: torch.Tensor
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.features.shape[0]

    def to_dict(self) -> dict:
        """Plain dict of tensors + path list (what the run folder saves with ``torch_save``)."""
        return {"features": self.features, "labels": self.labels, "paths": list(self.paths)}

    @classmethod
    def from_dict(cls, d: dict) -> "Features":
        return cls(d["features"], d["labels"], list(d.get("paths", [])))


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def extract_features(model: nn.Module, loader, device=None, amp: bool | None = None,
                     progress: bool = True) -> Features:
    """Embed every batch of ``loader`` (which must not shuffle) with ``model``.

    Batches are ``(images, labels, ...)``; the model maps images → (B, D) (a tuple output: element
    0). Runs in eval mode (the previous mode is restored) under ``torch.inference_mode``, with bf16
    autocast on CUDA when ``amp`` is None or True (never on CPU); the output is float32 on the CPU.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    use_amp = device.type == "cuda" and (amp is None or amp)
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        from tqdm import tqdm  # plain text: no widget warning, no widget noise in notebooks
        it = tqdm(loader, desc="features", disable=not progress, leave=False)
        with torch.inference_mode():
            for batch in it:
                if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                    raise TypeError("each batch must be (images, labels, ...); got "
                                    f"{type(batch).__name__}")
                images, y = batch[0], batch[1]
                ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if use_amp
                       else contextlib.nullcontext())
                with ctx:
                    out = model(images.to(device, non_blocking=True))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                if out.dim() != 2:
                    raise ValueError(f"the model must return (B, D) embeddings, got shape {tuple(out.shape)}")
                feats.append(out.float().cpu())
                labels.append(torch.as_tensor(y).long().cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("the loader yielded no batches; nothing to evaluate")
    paths = [str(p) for p in getattr(getattr(loader, "dataset", None), "paths", [])]
    f, l = torch.cat(feats), torch.cat(labels)
    if paths and len(paths) != len(f):
        raise ValueError(f"loader.dataset.paths has {len(paths)} entries but {len(f)} features were "
                         "extracted; the loader must not drop or reorder items")
    return Features(f.contiguous(), l, paths)


def evaluate_model(model: nn.Module, eval_sets: dict, protocol, device=None, binary: bool = True,
                   progress: bool = True) -> tuple[dict[str, float], dict[str, Features]]:
    """Extract features for ``{"test": loader}`` or ``{"query": loader, "gallery": loader}`` and
    :func:`evaluate` them. Returns (metrics, {set name: Features})."""
    p = get_protocol(protocol)
    want = {"test"} if p.mode == "self" else {"query", "gallery"}
    if set(eval_sets) != want:
        raise ValueError(f"protocol {protocol!r} needs eval_sets with keys {sorted(want)}, got {sorted(eval_sets)}")
    feats = {name: extract_features(model, loader, device, progress=progress) for name, loader in eval_sets.items()}
    if p.mode == "self":
        m = evaluate(feats["test"].features, feats["test"].labels, p, binary=binary)
    else:
        m = evaluate(feats["query"].features, feats["query"].labels, p, feats["gallery"].features,
                     feats["gallery"].labels, binary=binary)
    return m, feats
