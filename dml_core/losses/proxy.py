"""Learnable-proxy losses: NormSoftmax, Proxy-Anchor, the PP positive-only ablation and AMLoss
(learnable dynamic margins).

All are called as ``loss(embeddings (B, D), labels (B,)) -> scalar`` and hold their proxies as an
``nn.Parameter`` ``.proxies`` of shape (C, D) (normalised in every forward, never in place).
They compute in float32 (float64 if given float64), with autocast disabled inside.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .functional import (
    POSITIVE_PROXY_MODES,
    _positive_proxy_mode,
    check_embeddings_labels,
    compute_dtype,
    cosine_to_proxies,
    full_precision,
    init_proxies,
    log1p_sum_exp,
    normalize_rows,
)


def proxy_anchor_terms(
    s: torch.Tensor,
    labels: torch.Tensor,
    alpha_p: float,
    alpha_n: float,
    pos_margin: float | torch.Tensor,
    neg_margin: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The two halves of Proxy-Anchor on similarities ``s`` (B, C).

    pos = :math:`\frac1{|P^+|}\sum_{c\in P^+}\log(1+\sum_{i\in X_c^+}e^{-\alpha_p(s_{ic}-m^+_c)})`,
    neg = :math:`\frac1C\sum_{c}\log(1+\sum_{i\in X_c^-}e^{\alpha_n(s_{ic}+m^-_c)})`;
    margins are floats or (C,) tensors. Empty sets contribute 0.
    """
    num_classes = s.shape[1]
    pos_mask = F.one_hot(labels, num_classes).to(torch.bool)  # (B, C)
    pos_per_class = log1p_sum_exp(-alpha_p * (s - pos_margin), pos_mask, dim=0)  # (C,)
    neg_per_class = log1p_sum_exp(alpha_n * (s + neg_margin), ~pos_mask, dim=0)  # (C,)
    num_present = pos_mask.any(dim=0).sum()
    return pos_per_class.sum() / num_present, neg_per_class.sum() / num_classes


class _ProxyLoss(nn.Module):
    """Base: ``.proxies`` nn.Parameter (C, D), input checks, float32 similarities."""

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        proxy_init: str,
        normalize_embeddings: bool,
        positive_proxy: bool | str | None = False,
    ):
        super().__init__()
        if num_classes < 1 or embedding_dim < 1:
            raise ValueError(f"need num_classes, embedding_dim >= 1, got {num_classes}, {embedding_dim}")
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.normalize_embeddings = bool(normalize_embeddings)
        self.positive_proxy = _positive_proxy_mode(positive_proxy)
        self.proxy_init = proxy_init
        self.proxies = nn.Parameter(init_proxies(torch.empty(num_classes, embedding_dim), proxy_init))

    def _check(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        check_embeddings_labels(embeddings, labels, self.num_classes, self.embedding_dim)
        if embeddings.shape[0] == 0:
            raise ValueError("empty batch")

    def _similarities(self, embeddings: torch.Tensor, labels: torch.Tensor | None,
                      positive_proxy: str | None) -> torch.Tensor:
        dt = compute_dtype(embeddings, self.proxies)
        return cosine_to_proxies(
            embeddings.to(dt), self.proxies.to(dt), labels, positive_proxy, self.normalize_embeddings
        )

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarities s (B, C) in float32 (train accuracy = argmax over classes)."""
        check_embeddings_labels(embeddings, None, None, self.embedding_dim)
        with full_precision(embeddings.device):
            return self._similarities(embeddings, None, None)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._check(embeddings, labels)
        with full_precision(embeddings.device):
            s = self._similarities(embeddings, labels, self.positive_proxy)
            return self._loss(s, labels)

    def _loss(self, s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
                f"proxy_init={self.proxy_init!r}, normalize_embeddings={self.normalize_embeddings}, "
                f"positive_proxy={self.positive_proxy!r}")


class NormSoftmaxLoss(_ProxyLoss):
    r"""Normalised softmax: :math:`L=\frac1B\sum_i -\log\mathrm{softmax}(s_i/T)_{y_i}`,
    :math:`s_{ic}=f_i\cdot\hat p_c`.

    NormSoftmax uses T = 0.05 and ``proxy_init='kaiming_uniform'`` (ProxyLinear, U(±1/√D));
    PP's normalized softmax is T = 1/32 with ``proxy_init='unit_randn'``.
    ``positive_proxy``: False | True (= 'embeddings', f494707) | 'proxies' (af9156d); see
    :func:`cosine_to_proxies`. The true gradient is used (with the batch mean's 1/B, which the
    original code's ``normalized_softmax*`` hook lacked).
    Shapes: embeddings (B, D) (expected unit-norm; not renormalised unless
    ``normalize_embeddings``), labels (B,) in [0, C).
    """

    def __init__(self, num_classes: int, embedding_dim: int, temperature: float = 0.05,
                 positive_proxy: bool | str | None = False, proxy_init: str = "kaiming_uniform",
                 normalize_embeddings: bool = False):
        super().__init__(num_classes, embedding_dim, proxy_init, normalize_embeddings, positive_proxy)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def _loss(self, s, labels):
        return F.cross_entropy(s / self.temperature, labels)


class ProxyAnchorLoss(_ProxyLoss):
    r"""Proxy-Anchor (Kim et al. 2020):

    :math:`L=\frac1{|P^+|}\sum_{c\in P^+}\log(1+\sum_{i\in X_c^+}e^{-\alpha(s_{ic}-\delta)})
    +\frac1C\sum_{c=1}^C\log(1+\sum_{i\in X_c^-}e^{\alpha(s_{ic}+\delta)})`

    P+ = classes present in the batch. Proxies: ``proxy_init='kaiming_normal_fan_out'`` (std √(2/C),
    official) or ``'unit_randn'`` (PP). Embeddings are L2-normalised inside by default (official
    code; a no-op for unit-norm inputs). ``positive_proxy`` as in :class:`NormSoftmaxLoss`.
    """

    def __init__(self, num_classes: int, embedding_dim: int, margin: float = 0.1, alpha: float = 32.0,
                 positive_proxy: bool | str | None = False,
                 proxy_init: str = "kaiming_normal_fan_out", normalize_embeddings: bool = True):
        super().__init__(num_classes, embedding_dim, proxy_init, normalize_embeddings, positive_proxy)
        self.margin = float(margin)
        self.alpha = float(alpha)

    def _loss(self, s, labels):
        pos, neg = proxy_anchor_terms(s, labels, self.alpha, self.alpha, self.margin, self.margin)
        return pos + neg

    def extra_repr(self) -> str:
        return super().extra_repr() + f", margin={self.margin}, alpha={self.alpha}"


class PositiveProxyLoss(_ProxyLoss):
    r"""PP commit ebad4cb ablation, the positive half of Proxy-Anchor without margin:
    :math:`L=\frac1{|P^+|}\sum_{c\in P^+}\log(1+\sum_{i\in X_c^+}e^{-\alpha s_{ic}})`.

    No negative term (a collapsed solution is possible). Proxies ``unit_randn`` as PP's ProxyLinear.
    """

    def __init__(self, num_classes: int, embedding_dim: int, alpha: float = 32.0,
                 proxy_init: str = "unit_randn", normalize_embeddings: bool = False):
        super().__init__(num_classes, embedding_dim, proxy_init, normalize_embeddings, False)
        self.alpha = float(alpha)

    def _loss(self, s, labels):
        pos_mask = F.one_hot(labels, self.num_classes).to(torch.bool)
        per_class = log1p_sum_exp(-self.alpha * s, pos_mask, dim=0)
        return per_class.sum() / pos_mask.any(dim=0).sum()


#: The negative term of LDM at e4e4832 (the only original with a learnable negative margin):
#: exp(E4E4832_NEG_SCALE * (s - m_c + E4E4832_NEG_OFFSET)).
E4E4832_NEG_SCALE = 32.0
E4E4832_NEG_OFFSET = 0.05


class DynamicMarginLoss(_ProxyLoss):
    r"""AMLoss, learnable dynamic margins (wyfan714/LDM HEAD):

    :math:`L = L_{pos} + L_{neg} + \lambda L_{pp}` with

    - :math:`L_{pos}=\frac1{|P^+|}\sum_{c\in P^+}\log(1+\sum_{i\in X_c^+}e^{-\alpha_p(s_{ic}-m_c)})`,
    - :math:`L_{neg}=\frac1C\sum_c\log(1+\sum_{i\in X_c^-}e^{\alpha_n(s_{ic}+\delta_n)})`, δ_n = ``margin``
      (fixed); ``neg_uses_learnable_margin=True`` reproduces the LDM repository at e4e4832
      (``AMLoss.forward``): :math:`L_{neg}=\frac1C\sum_c\log(1+\sum_{i\in X_c^-}e^{32(s_{ic}-m_c+0.05)})`,
      minus the learnable margin, a +0.05 offset and the scale 32 hard-coded (``alpha_n`` unused),
    - :math:`L_{pp}=\frac1N\sum_{i=1}^C\log(1+\sum_{j\ne i}e^{\kappa(\hat w_i\cdot\hat w_j-m_i+\delta)})`,
      κ = ``pp_scale`` (1 in LDM), N = C (``pp_normaliser='C'``, LDM) or |P+| (``'P+'``).

    ``.margins`` (C,) nn.Parameter initialised to ``margin``, unconstrained (no clamp), trained by
    its own optimiser (:func:`make_margin_optimizer`); ``learn_margins=False`` freezes them.
    With lam=0, frozen margins and alpha_p == alpha_n it equals :class:`ProxyAnchorLoss`.
    """

    def __init__(self, num_classes: int, embedding_dim: int, alpha_p: float = 32.0,
                 alpha_n: float = 32.0, margin: float = 0.1, delta: float = 0.1, lam: float = 1.0,
                 neg_uses_learnable_margin: bool = False, pp_scale: float = 1.0,
                 pp_normaliser: str = "C", learn_margins: bool = True,
                 proxy_init: str = "kaiming_normal_fan_out", normalize_embeddings: bool = True):
        super().__init__(num_classes, embedding_dim, proxy_init, normalize_embeddings, False)
        if pp_normaliser not in ("C", "P+"):
            raise ValueError(f"pp_normaliser must be 'C' or 'P+', got {pp_normaliser!r}")
        self.alpha_p, self.alpha_n = float(alpha_p), float(alpha_n)
        self.margin, self.delta, self.lam = float(margin), float(delta), float(lam)
        self.neg_uses_learnable_margin = bool(neg_uses_learnable_margin)
        self.pp_scale = float(pp_scale)
        self.pp_normaliser = pp_normaliser
        self.margins = nn.Parameter(torch.full((num_classes,), float(margin)),
                                    requires_grad=bool(learn_margins))

    def proxy_parameters(self) -> list[nn.Parameter]:
        return [self.proxies]

    def margin_parameters(self) -> list[nn.Parameter]:
        return [self.margins]

    def margin_stats(self) -> dict[str, float]:
        m = self.margins.detach().float()
        return {"margin_mean": float(m.mean()), "margin_min": float(m.min()),
                "margin_max": float(m.max())}

    def _loss(self, s, labels):
        margins = self.margins.to(s.dtype)
        if self.neg_uses_learnable_margin:
            # e4e4832's exp(32 * (s - m_c + 0.05)) written as alpha_n * (s + neg_margin)
            pos, neg = proxy_anchor_terms(s, labels, self.alpha_p, E4E4832_NEG_SCALE, margins,
                                          E4E4832_NEG_OFFSET - margins)
        else:
            pos, neg = proxy_anchor_terms(s, labels, self.alpha_p, self.alpha_n, margins,
                                          self.margin)
        loss = pos + neg
        if self.lam != 0.0:
            loss = loss + self.lam * self._proxy_proxy_term(margins, labels, s.dtype)
        return loss

    def _proxy_proxy_term(self, margins: torch.Tensor, labels: torch.Tensor, dtype) -> torch.Tensor:
        p_hat = normalize_rows(self.proxies.to(dtype))
        z = self.pp_scale * (p_hat @ p_hat.t() - margins.unsqueeze(1) + self.delta)  # (C, C), row i
        off_diag = ~torch.eye(self.num_classes, dtype=torch.bool, device=z.device)
        per_row = log1p_sum_exp(z, off_diag, dim=1)
        if self.pp_normaliser == "C":
            return per_row.sum() / self.num_classes
        return per_row.sum() / torch.unique(labels).numel()

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", alpha_p={self.alpha_p}, alpha_n={self.alpha_n}, "
                f"margin={self.margin}, delta={self.delta}, lam={self.lam}, "
                f"neg_uses_learnable_margin={self.neg_uses_learnable_margin}, "
                f"pp_scale={self.pp_scale}, pp_normaliser={self.pp_normaliser!r}")


def make_margin_optimizer(loss: DynamicMarginLoss, lr: float = 1e-4, weight_decay: float = 1e-4,
                          step: int = 10, gamma: float = 0.5) -> tuple[torch.optim.AdamW, Any]:
    """LDM's margin optimiser: AdamW(margins, lr, wd) and StepLR(step, gamma), stepped per epoch."""
    opt = torch.optim.AdamW(loss.margin_parameters(), lr=lr, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=gamma)


__all__ = ["NormSoftmaxLoss", "ProxyAnchorLoss", "PositiveProxyLoss", "DynamicMarginLoss",
           "make_margin_optimizer", "proxy_anchor_terms", "POSITIVE_PROXY_MODES"]
