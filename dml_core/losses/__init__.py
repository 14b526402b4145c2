"""Losses, pytorch-metric-learning style: ``loss(embeddings, labels) -> scalar`` (float32 inside).

- :class:`NormSoftmaxLoss`, :class:`ProxyAnchorLoss` (both with the ``positive_proxy`` option:
  False | True/'embeddings' (PP f494707) | 'proxies' (PP af9156d)), :class:`PositiveProxyLoss`
  (PP ebad4cb ablation), :class:`DynamicMarginLoss` (AMLoss) + :func:`make_margin_optimizer`;
- :class:`MovingProxyLoss` (AsymptoticProxy; ``.update(embeddings, labels)`` after the step);
- CGD: :class:`LabelSmoothingCrossEntropy` (on logits), :class:`BatchHardTripletLoss`.
"""
from .cgd import BatchHardTripletLoss, LabelSmoothingCrossEntropy
from .functional import (
    PROXY_INITS,
    check_embeddings_labels,
    cosine_to_proxies,
    init_proxies,
    log1p_sum_exp,
    masked_logsumexp,
    normalize_rows,
)
from .moving import MovingProxyLoss
from .proxy import (
    DynamicMarginLoss,
    NormSoftmaxLoss,
    PositiveProxyLoss,
    ProxyAnchorLoss,
    make_margin_optimizer,
    proxy_anchor_terms,
)

__all__ = [
    "BatchHardTripletLoss",
    "DynamicMarginLoss",
    "LabelSmoothingCrossEntropy",
    "MovingProxyLoss",
    "NormSoftmaxLoss",
    "PROXY_INITS",
    "PositiveProxyLoss",
    "ProxyAnchorLoss",
    "check_embeddings_labels",
    "cosine_to_proxies",
    "init_proxies",
    "log1p_sum_exp",
    "make_margin_optimizer",
    "masked_logsumexp",
    "normalize_rows",
    "proxy_anchor_terms",
]
