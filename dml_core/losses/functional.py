"""Shared pieces of the losses: input checks, float32 computation, cosine-to-proxy similarities
(with the positive-proxy gradient options), masked log-sum-exp and proxy initialisation.

Notation: B = batch, C = classes, D = embedding dim, f_i the embedding of sample i, y_i its label,
p̂_c = w_c / max(||w_c||, 1e-12) the normalised proxy of class c, s_ic = f_i · p̂_c.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

PROXY_INITS = ("kaiming_uniform", "kaiming_normal_fan_out", "randn", "unit_randn")
POSITIVE_PROXY_MODES = (None, "embeddings", "proxies")


# ----------------------------------------------------------------------------- dtypes
def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64 (gradcheck), else float32 (bf16/fp16 are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def full_precision(device: torch.device | str):
    """Context that disables autocast on ``device`` so the loss is computed in float32."""
    device_type = torch.device(device).type
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except (RuntimeError, ValueError):  # a device type autocast does not know
        return contextlib.nullcontext()


# ----------------------------------------------------------------------------- checks
def check_embeddings_labels(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None,
    num_classes: int | None = None,
    embedding_dim: int | None = None,
) -> None:
    """Raise ValueError for wrong shapes/dtypes or labels outside [0, num_classes)."""
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be 2-D (B, D), got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {embeddings.dtype}")
    if embedding_dim is not None and embeddings.shape[1] != embedding_dim:
        raise ValueError(
            f"embeddings have dim {embeddings.shape[1]}, the loss expects {embedding_dim}"
        )
    if labels is None:
        return
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must be 1-D of length B={embeddings.shape[0]}, got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if num_classes is not None and labels.numel() > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels must lie in [0, {num_classes}), got values in [{lo}, {hi}]"
            )


# ----------------------------------------------------------------------------- log-sum-exp
def masked_logsumexp(
    x: torch.Tensor, mask: torch.Tensor, dim: int, add_one: bool = False
) -> torch.Tensor:
    r"""Stable :math:`\log(\mathbb 1[add\_one] + \sum_{j: mask_j} e^{x_j})` along ``dim``.

    With ``add_one=True`` this is :math:`\log(1+\sum e^{x}) = \mathrm{softplus}(\mathrm{logsumexp}(x))`
    and an empty set gives exactly 0 (with zero gradient). With ``add_one=False`` an empty set gives
    ``-inf`` (with zero gradient, never NaN). Masked-out entries get zero gradient even when ``x``
    is huge there.
    """
    mask = mask.to(torch.bool).expand_as(x)
    if add_one:
        x = x.masked_fill(~mask, float("-inf"))
        zero = torch.zeros_like(x.narrow(dim, 0, 1))
        return torch.logsumexp(torch.cat([zero, x], dim=dim), dim=dim)
    nonempty = mask.any(dim=dim, keepdim=True)
    # rows with an empty set are computed on a dummy all-zero row, then replaced by -inf
    x = x.masked_fill(~mask & nonempty, float("-inf")).masked_fill(~nonempty, 0.0)
    out = torch.logsumexp(x, dim=dim, keepdim=True)
    out = out.masked_fill(~nonempty, float("-inf"))
    return out.squeeze(dim)


def log1p_sum_exp(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    r""":math:`\log(1+\sum_{j\in mask} e^{x_j})` along ``dim``; 0 for an empty set."""
    return masked_logsumexp(x, mask, dim=dim, add_one=True)


# ----------------------------------------------------------------------------- proxies
def normalize_rows(w: torch.Tensor) -> torch.Tensor:
    r""":math:`\hat w_c = w_c / \max(\lVert w_c\rVert, 10^{-12})`, shape kept."""
    return F.normalize(w, p=2, dim=1, eps=1e-12)


def init_proxies(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    """Initialise a (C, D) proxy tensor in place and return it.

    - ``kaiming_uniform``: NormSoftmax's ProxyLinear, ``kaiming_uniform_(a=sqrt(5))`` = U(±1/√D).
    - ``kaiming_normal_fan_out``: Proxy-Anchor / LDM, N(0,1) draw then ``kaiming_normal_(mode=
      'fan_out')`` = N(0, 2/C) (the redundant first draw is kept so the RNG stream matches).
    - ``randn``: N(0,1), not normalised (AsymptoticProxy buffer, toy learnable proxies).
    - ``unit_randn``: N(0,1) rows L2-normalised (PP's ProxyLinear).
    """
    if weight.dim() != 2:
        raise ValueError(f"proxies must be 2-D (C, D), got shape {tuple(weight.shape)}")
    with torch.no_grad():
        if scheme == "kaiming_uniform":
            torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        elif scheme == "kaiming_normal_fan_out":
            weight.normal_()
            torch.nn.init.kaiming_normal_(weight, mode="fan_out")
        elif scheme == "randn":
            weight.normal_()
        elif scheme == "unit_randn":
            weight.normal_()
            weight.copy_(normalize_rows(weight))
        else:
            raise ValueError(f"unknown proxy init {scheme!r}; choose one of {PROXY_INITS}")
    return weight


def _positive_proxy_mode(option: bool | str | None) -> str | None:
    """Map the user-facing ``positive_proxy`` option to None | 'embeddings' | 'proxies'."""
    if option is None or option is False:
        return None
    if option is True:
        return "embeddings"
    if option in ("embeddings", "proxies"):
        return option
    raise ValueError(
        f"positive_proxy must be False, True, 'embeddings' or 'proxies', got {option!r}"
    )


def cosine_to_proxies(
    embeddings: torch.Tensor,
    proxies: torch.Tensor,
    labels: torch.Tensor | None = None,
    positive_proxy: bool | str | None = False,
    normalize_embeddings: bool = False,
) -> torch.Tensor:
    r"""Similarities :math:`s_{ic} = f_i\cdot\hat p_c`, shape (B, C); the value never depends on
    ``positive_proxy``, only the gradients do. Let :math:`G_{ic}=\partial L/\partial s_{ic}`.

    - ``False``: plain, :math:`\partial L/\partial f_i=\sum_c G_{ic}\hat p_c`,
      :math:`\partial L/\partial\hat p_c=\sum_i G_{ic} f_i`.
    - ``True`` / ``'embeddings'`` (PP commit f494707): the embeddings get only the positive-proxy
      component :math:`\partial L/\partial f_i := G_{i y_i}\hat p_{y_i}`; the proxies get the full
      gradient. Built as :math:`s = f^{sg}\hat P^\top + Y\odot(t - t^{sg})` with
      :math:`t_i = f_i\cdot\hat p_{y_i}^{sg}` (sg = stop-gradient, Y one-hot); the second term is 0.
    - ``'proxies'`` (commit af9156d ablation): the embeddings get the full gradient, the proxies only
      :math:`\partial L/\partial\hat p_c := \frac{1}{\max(n_c,1)}\sum_{i:y_i=c} G_{ic} f_i`
      (n_c = batch count of class c, the original code's "mean op").

    ``normalize_embeddings=True`` L2-normalises f first (as the official Proxy-Anchor code).
    """
    mode = _positive_proxy_mode(positive_proxy)
    if normalize_embeddings:
        embeddings = F.normalize(embeddings, p=2, dim=1, eps=1e-12)
    p_hat = normalize_rows(proxies)
    if mode is None:
        return embeddings @ p_hat.t()
    if labels is None:
        raise ValueError("positive_proxy needs the labels")
    onehot = F.one_hot(labels, num_classes=proxies.shape[0]).to(embeddings.dtype)
    if mode == "embeddings":
        full = embeddings.detach() @ p_hat.t()  # gradient to the proxies only
        t = (embeddings * p_hat.detach()[labels]).sum(dim=1, keepdim=True)  # to f only
        return full + onehot * (t - t.detach())
    # mode == "proxies"
    full = embeddings @ p_hat.detach().t()  # gradient to the embeddings only
    counts = onehot.sum(dim=0).clamp_min(1.0)  # n_c
    t = (embeddings.detach() * p_hat[labels]).sum(dim=1, keepdim=True)
    t = t / counts[labels].unsqueeze(1)
    return full + onehot * (t - t.detach())
