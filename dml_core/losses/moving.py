"""AsymptoticProxy's moving proxies (leftthomas/ProxyAnchor b3786cd, its toy.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .functional import (
    check_embeddings_labels,
    compute_dtype,
    cosine_to_proxies,
    full_precision,
    init_proxies,
    normalize_rows,
)


class MovingProxyLoss(nn.Module):
    r"""Temperature softmax on cosine logits with moving (asymptotic) proxies.

    :math:`s_{ic}=f_i\cdot\hat w_c`, :math:`\hat w_c=w_c/\max(\lVert w_c\rVert,10^{-12})`,
    :math:`L=\frac1B\sum_i-\log\mathrm{softmax}(s_i/T)_{y_i}` (T = 0.03 default).

    ``learnable=False`` (the seed): ``.proxies`` is a persistent BUFFER (C, D) drawn N(0,1), not
    normalised; it gets no gradient, and the method calls :meth:`update` after the optimiser step.
    ``proxy_init`` (:func:`~dml_core.losses.functional.init_proxies`) draws the initial proxies
    (the seed: ``randn``; only their directions matter, the update and the logits normalise them).
    ``learnable=True`` (toy ``--with_learnable_proxy``): ``.proxies`` is an ``nn.Parameter`` (randn,
    normalised in forward) trained by the optimiser; :meth:`update` is then a no-op.
    Embeddings (B, D) are used as given (the model L2-normalises them).
    """

    def __init__(self, num_classes: int, embedding_dim: int, temperature: float = 0.03,
                 momentum: float = 0.5, learnable: bool = False, proxy_init: str = "randn"):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.num_classes, self.embedding_dim = int(num_classes), int(embedding_dim)
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.learnable = bool(learnable)
        self.proxy_init = proxy_init
        w = init_proxies(torch.empty(num_classes, embedding_dim), proxy_init)
        if self.learnable:
            self.proxies = nn.Parameter(w)
        else:
            self.register_buffer("proxies", w)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine logits s (B, C), float32."""
        check_embeddings_labels(embeddings, None, None, self.embedding_dim)
        with full_precision(embeddings.device):
            dt = compute_dtype(embeddings, self.proxies)
            return cosine_to_proxies(embeddings.to(dt), self.proxies.to(dt))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_embeddings_labels(embeddings, labels, self.num_classes, self.embedding_dim)
        with full_precision(embeddings.device):
            return F.cross_entropy(self.logits(embeddings) / self.temperature, labels)

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        r"""The moving-proxy step, called by the method AFTER ``optimizer.step()`` with the
        detached embeddings of the same forward pass. For every class c in the batch:

        :math:`w_c \leftarrow (1-m)\,\hat w_c + m\sum_{i:y_i=c} f_i`

        (a SUM over the same-class samples; m weights the NEW features; the stored row is not
        renormalised). Absent classes are unchanged. Deterministic (one-hot matmul, no
        ``index_add_``). No-op when ``learnable=True``.
        """
        if self.learnable:
            return
        check_embeddings_labels(embeddings, labels, self.num_classes, self.embedding_dim)
        w = self.proxies
        f = embeddings.detach().to(device=w.device, dtype=w.dtype)
        labels = labels.to(w.device)
        classes, inverse = torch.unique(labels, sorted=True, return_inverse=True)
        onehot = F.one_hot(inverse, classes.numel()).to(w.dtype)  # (B, K)
        sums = onehot.t() @ f  # (K, D): sum of the features of each present class
        m = self.momentum
        w.index_copy_(0, classes, (1.0 - m) * normalize_rows(w[classes]) + m * sums)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
                f"temperature={self.temperature}, momentum={self.momentum}, "
                f"learnable={self.learnable}")


__all__ = ["MovingProxyLoss"]
