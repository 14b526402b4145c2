"""CGD's losses (leftthomas/CGD): label-smoothed temperature CE and batch-hard triplet."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .functional import check_embeddings_labels, compute_dtype, full_precision


class LabelSmoothingCrossEntropy(nn.Module):
    r"""Label smoothing with temperature, called as ``loss(logits (B, C), labels (B,))``:

    :math:`q=\log\mathrm{softmax}(z/\tau)`,
    :math:`L=\frac1B\sum_i[(1-\varepsilon)(-q_{iy_i})+\frac{\varepsilon}{C}\sum_c(-q_{ic})]`.

    The uniform part includes the true class, so it equals
    ``F.cross_entropy(z / tau, y, label_smoothing=eps)``. Defaults ε = 0.1, τ = 0.5.
    """

    def __init__(self, smoothing: float = 0.1, temperature: float = 0.5):
        super().__init__()
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"smoothing must lie in [0, 1], got {smoothing}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.smoothing, self.temperature = float(smoothing), float(temperature)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_embeddings_labels(logits, labels, logits.shape[-1] if logits.dim() == 2 else None)
        with full_precision(logits.device):
            q = F.log_softmax(logits.to(compute_dtype(logits)) / self.temperature, dim=1)
            nll = -q.gather(1, labels.unsqueeze(1)).squeeze(1)
            uniform = -q.mean(dim=1)
            return ((1.0 - self.smoothing) * nll + self.smoothing * uniform).mean()

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, temperature={self.temperature}"


class BatchHardTripletLoss(nn.Module):
    r"""Batch-hard triplet on non-squared Euclidean distances :math:`d_{ij}=\lVert x_i-x_j\rVert`
    (``torch.cdist``), called as ``loss(embeddings (B, D), labels (B,))``:

    - :math:`d^+_i=\max_{j\ne i,\,y_j=y_i} d_{ij}` (0 when the anchor has no positive),
    - :math:`d^-_i=\min_j(d_{ij}+\mathbb 1[y_j=y_i]\max_l d_{il})`,
    - :math:`L=\frac1B\sum_i[d^+_i-d^-_i+m]_+` over ALL anchors (m = 0.1).
    """

    def __init__(self, margin: float = 0.1):
        super().__init__()
        self.margin = float(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels)
        with full_precision(embeddings.device):
            x = embeddings.to(compute_dtype(embeddings))
            d = torch.cdist(x, x)  # (B, B)
            same = labels.unsqueeze(0) == labels.unsqueeze(1)
            eye = torch.eye(len(labels), dtype=torch.bool, device=d.device)
            hardest_pos = (d * (same & ~eye)).max(dim=1).values
            hardest_neg = (d + same * d.max(dim=1, keepdim=True).values).min(dim=1).values
            return F.relu(hardest_pos - hardest_neg + self.margin).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


__all__ = ["LabelSmoothingCrossEntropy", "BatchHardTripletLoss"]
