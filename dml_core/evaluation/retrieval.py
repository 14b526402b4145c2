"""Exact retrieval metrics (Recall@K, MAP@R, R-precision) without an N×N matrix.

Similarity is the inner product of the given vectors (pass L2-normalised features for cosine, or
``normalize=True``; :func:`binarize` codes give ``D - 2·Hamming``, an exact proxy for Hamming).
Queries are processed in chunks of rows: ``S = Q_chunk @ Gᵀ`` (chunk × Ng, float32) is the only
large buffer, and its size follows ``memory_budget_mb``. Every number of a query comes from that one
chunk, so all comparisons are between identical float values.

Definitions (MLRC, "A Metric Learning Reality Check"), for a query q of class y:

- positives: gallery items of class y, except q itself in self-retrieval (excluded by INDEX);
  R = their number. A query with R = 0 counts as a miss in Recall@K and is left out of MAP@R and
  R-precision (if every query has R = 0 these return NaN).
- Recall@K: 1 if the best positive has rank ≤ K. The rank is computed without sorting:
  ``rank = 1 + #negatives scoring above the best positive``.
- MAP@R = 1/R Σ_{i≤R} P(i)·rel(i); R-precision = #positives in the top R / R.

Ties (equal scores) follow ``ties``: ``"pessimistic"`` (default) ranks negatives before positives
of equal score (so a collapsed embedding scores 0, not 1); ``"optimistic"`` ranks positives first.
Positives tied with each other need no rule. The result never depends on the order a sort picks.
K larger than the gallery is allowed (no clamp needed): R@K is then the fraction of queries that
have a positive at all.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

DEFAULT_MEMORY_BUDGET_MB = 256
NO_POSITIVE = torch.iinfo(torch.int64).max
TIES = ("pessimistic", "optimistic")
# bytes of chunk working memory per similarity entry: S (float32) + one float32 scratch row set
_BYTES_PER_ENTRY = 8


# ----------------------------------------------------------------------------------- inputs
def _as_features(x, name: str, device=None) -> torch.Tensor:
    """Array-like (N, D) → float32 tensor (on ``device`` if given, else where it already is)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (N, D), got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(x.shape)}; "
                         "reshape with x.reshape(len(x), -1) if it is a batch of maps")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); evaluation needs at least one item and one dimension")
    if not (x.is_floating_point() or x.dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if device is not None:
        x = x.to(device)
    x = x.detach().to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or inf in {bad} row(s); the model diverged or the "
                         "features were not computed — fix the features before evaluating")
    return x.contiguous()


def _as_labels(y, n: int, name: str, device) -> torch.Tensor:
    """Integer labels of any dtype → int64 tensor (n,) on ``device``."""
    if isinstance(y, torch.Tensor):
        t = y.detach()
    else:
        a = np.asarray(y)
        if a.dtype == object:
            raise TypeError(f"{name} must be integers, got object array")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {t.dtype}; map class names to ints first")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(t.shape)}")
    if t.numel() != n:
        raise ValueError(f"{name} has {t.numel()} entries but the features have {n} rows; they must match")
    return t.to(device=device, dtype=torch.int64)


def _check_ks(ks) -> list[int]:
    if isinstance(ks, (int, np.integer)):
        ks = [ks]
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of integers ≥ 1, got {ks}")
    return ks


@dataclass
class RetrievalStats:
    """Per-query results of one pass: ``first_rank`` (Nq,) int64 rank of the best positive
    (``NO_POSITIVE`` = int64 max when the query has none), ``num_relevant`` R (Nq,),
    and, when MAP@R was asked for, ``ap_at_r`` and ``precision_at_r`` (Nq,) float64 (NaN for R = 0)."""
    first_rank: torch.Tensor
    num_relevant: torch.Tensor
    ap_at_r: torch.Tensor | None
    precision_at_r: torch.Tensor | None
    gallery_size: int

    def recall(self, ks: Iterable[int]) -> dict[int, float]:
        return {int(k): float((self.first_rank <= k).double().mean()) for k in ks}

    def _mean_valid(self, v: torch.Tensor) -> float:
        valid = self.num_relevant > 0
        return float(v[valid].mean()) if bool(valid.any()) else math.nan

    def map_at_r(self) -> float:
        return self._mean_valid(self.ap_at_r)

    def r_precision(self) -> float:
        return self._mean_valid(self.precision_at_r)


# ----------------------------------------------------------------------------------- kernel
def _class_members(gl: torch.Tensor):
    """Gallery grouped by class: (classes sorted, start of each class in ``order``, counts, order)."""
    order = torch.argsort(gl, stable=True)
    classes, counts = torch.unique_consecutive(gl[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return classes, starts, counts, order


def retrieval_stats(query, query_labels, gallery=None, gallery_labels=None, *, need_map: bool = True,
                    chunk_size: int | None = None, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                    ties: str = "pessimistic", normalize: bool = False) -> RetrievalStats:
    """One exact pass over all queries; see the module docstring for the definitions.

    query (Nq, D), query_labels (Nq,); gallery (Ng, D) and gallery_labels (Ng,), or None for
    self-retrieval (gallery = query, each query excluded by index). Tensors stay on their device.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    self_mode = gallery is None
    if self_mode != (gallery_labels is None):
        raise ValueError("pass both gallery and gallery_labels (query vs gallery) or neither (self-retrieval)")
    device = query.device if isinstance(query, torch.Tensor) else torch.device("cpu")
    q = _as_features(query, "query", device)
    ql = _as_labels(query_labels, q.shape[0], "query_labels", device)
    if self_mode:
        g, gl = q, ql
    else:
        g = _as_features(gallery, "gallery", device)
        gl = _as_labels(gallery_labels, g.shape[0], "gallery_labels", device)
        if g.shape[1] != q.shape[1]:
            raise ValueError(f"query has dimension {q.shape[1]} but gallery has {g.shape[1]}; they must match")
    if normalize:
        q = torch.nn.functional.normalize(q, dim=1)
        g = q if self_mode else torch.nn.functional.normalize(g, dim=1)
    nq, ng = q.shape[0], g.shape[0]
    if self_mode and nq < 2:
        raise ValueError("self-retrieval needs at least 2 items (each query is excluded from its own gallery)")

    # positives of every query: padded (Nq, maxc) gallery indices into the class groups
    classes, starts, counts, order = _class_members(gl)
    cid = torch.searchsorted(classes, ql).clamp_(max=len(classes) - 1)
    present = classes[cid] == ql
    qcount = torch.where(present, counts[cid], torch.zeros_like(cid))
    num_rel = qcount - (1 if self_mode else 0) * present.long()
    n_cand = ng - 1 if self_mode else ng
    r_max = int(num_rel.max()) if nq else 0
    maxc = int(counts.max())

    if chunk_size is None:
        chunk_size = int(memory_budget_mb * 2**20 // (_BYTES_PER_ENTRY * ng + 64 * (maxc + r_max)))
        if chunk_size < 1:
            raise ValueError(f"memory_budget_mb={memory_budget_mb} is too small for one query row of "
                             f"{ng} gallery items; raise it to at least {_BYTES_PER_ENTRY * ng / 2**20:.1f}")
    chunk_size = max(1, min(int(chunk_size), nq))

    first_rank = torch.empty(nq, dtype=torch.int64, device=device)
    ap = torch.full((nq,), math.nan, dtype=torch.float64, device=device) if need_map else None
    prec = torch.full((nq,), math.nan, dtype=torch.float64, device=device) if need_map else None
    buf = torch.empty(chunk_size, ng, dtype=torch.float32, device=device)
    ar = torch.arange(maxc, device=device)
    gT = g.t()
    prev_precision = torch.get_float32_matmul_precision()
    if device.type == "cuda":
        torch.set_float32_matmul_precision("highest")  # TF32 would perturb rankings
    try:
        for s in range(0, nq, chunk_size):
            e = min(s + chunk_size, nq)
            c = e - s
            S = buf[:c]
            torch.mm(q[s:e], gT, out=S)
            rows = torch.arange(c, device=device)
            if self_mode:
                S[rows, rows + s] = -math.inf  # exclude the query by its index
            # positive scores, gathered from S itself (same float values as everywhere below)
            slot = starts[cid[s:e], None] + ar[None, :]
            valid = (ar[None, :] < qcount[s:e, None]) & present[s:e, None]
            pidx = order[slot.clamp_(max=ng - 1)]
            if self_mode:
                valid &= pidx != (rows + s)[:, None]
            pos = torch.where(valid, S.gather(1, pidx), torch.tensor(-math.inf, device=device))
            pos, _ = torch.sort(pos, dim=1, descending=True)  # (c, maxc), -inf padded
            best = pos[:, 0]
            has_pos = num_rel[s:e] > 0
            if need_map:
                _map_chunk(S, pos, gl, ql[s:e], num_rel[s:e], r_max, n_cand, ties, ap, prec, s)
            # Recall: rank of the best positive by counting (in place: S becomes 0/1)
            if ties == "pessimistic":
                S.ge_(best[:, None])
                n_above = S.sum(1).long() - (pos == best[:, None]).sum(1)  # positives tied with best
            else:
                S.gt_(best[:, None])
                n_above = S.sum(1).long()
            first_rank[s:e] = torch.where(has_pos, n_above + 1, torch.full_like(n_above, NO_POSITIVE))
    finally:
        torch.set_float32_matmul_precision(prev_precision)
    return RetrievalStats(first_rank.cpu(), num_rel.cpu(), None if ap is None else ap.cpu(),
                          None if prec is None else prec.cpu(), ng)


def _map_chunk(S, pos, gl, qlc, rc, r_max, n_cand, ties, ap, prec, s):
    """MAP@R and R-precision for one chunk from the top-(R_max+1) list (ties exact, see module)."""
    c, dev = S.shape[0], S.device
    if r_max == 0:
        return
    k = min(r_max + 1, n_cand)
    vals, idx = torch.topk(S, k, dim=1)
    if k < r_max + 1:  # pad: fewer candidates than R_max + 1
        pad = r_max + 1 - k
        vals = torch.cat([vals, vals.new_full((c, pad), -math.inf)], 1)
        idx = torch.cat([idx, idx.new_zeros((c, pad))], 1)
    is_neg = (gl[idx] != qlc[:, None]) & torch.isfinite(vals)
    neg_sorted, _ = torch.sort(torch.where(is_neg, vals, torch.tensor(-math.inf, device=dev)), dim=1)
    ps = pos[:, :r_max].contiguous()  # only positives j ≤ R can be in the top R
    ncol = r_max + 1
    right = ties == "optimistic"  # optimistic: count negatives > s; pessimistic: ≥ s
    n_neg = ncol - torch.searchsorted(neg_sorted, ps, right=right)
    rr = torch.arange(c, device=dev)
    rq = rc.clamp(min=1)
    t = vals[rr, rq - 1]  # R-th largest score
    if ties == "pessimistic":
        # Negatives tied at t may lie outside the list when the (R+1)-th value also equals t.
        fix = (rc > 0) & (vals[rr, rq] == t) & (ps == t[:, None]).any(1)
        if bool(fix.any()):
            fr = fix.nonzero().squeeze(1)
            sub = S.index_select(0, fr)
            tf = t[fr]
            e_neg = sub.eq_(tf[:, None]).sum(1).long() - (pos[fr] == tf[:, None]).sum(1)
            n_gt = ncol - torch.searchsorted(neg_sorted[fr], ps[fr], right=True)
            at_t = ps[fr] == tf[:, None]
            n_neg[fr] = torch.where(at_t, n_gt + e_neg[:, None], n_neg[fr])
    j = torch.arange(1, r_max + 1, device=dev)[None, :]
    rank = j + n_neg
    hit = (j <= rc[:, None]) & (rank <= rc[:, None]) & torch.isfinite(ps)
    rd = rc.double().clamp(min=1)
    ap_c = (hit * (j.double() / rank.double())).sum(1) / rd
    pr_c = hit.sum(1).double() / rd
    nan = torch.tensor(math.nan, dtype=torch.float64, device=dev)
    ap[s:s + c] = torch.where(rc > 0, ap_c, nan)
    prec[s:s + c] = torch.where(rc > 0, pr_c, nan)


# ----------------------------------------------------------------------------------- public
def _warn_large_k(ks, stats: RetrievalStats, self_mode: bool):
    n = stats.gallery_size - (1 if self_mode else 0)
    big = [k for k in ks if k > n]
    if big:
        warnings.warn(f"K={big} > the {n} retrievable gallery items: R@K then only counts whether a "
                      "query has any positive", stacklevel=3)


def recall_at_k(query, query_labels, ks: Sequence[int], gallery=None, gallery_labels=None,
                chunk_size: int | None = None, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                ties: str = "pessimistic", normalize: bool = False) -> dict[int, float]:
    """Recall@K for each K in ``ks`` as fractions in [0, 1] ({K: value}, in the order given).

    query (Nq, D) and query_labels (Nq,) as torch tensors (any device) or numpy arrays; labels of any
    integer dtype. ``gallery=None``: self-retrieval, each query searches all other items (excluded by
    index). Similarity = inner product (``normalize=True`` L2-normalises first). A query without a
    positive is a miss. Ties: see module docstring. Peak extra memory ≈ ``memory_budget_mb``
    unless ``chunk_size`` (query rows per chunk) is given.
    """
    ks = _check_ks(ks)
    st = retrieval_stats(query, query_labels, gallery, gallery_labels, need_map=False, chunk_size=chunk_size,
                         memory_budget_mb=memory_budget_mb, ties=ties, normalize=normalize)
    _warn_large_k(ks, st, gallery is None)
    return st.recall(ks)


def map_at_r(query, query_labels, gallery=None, gallery_labels=None, chunk_size: int | None = None,
             memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, ties: str = "pessimistic",
             normalize: bool = False) -> float:
    """MAP@R = mean over queries with R > 0 of 1/R Σ_{i≤R} P(i)·rel(i) (MLRC). Arguments as
    :func:`recall_at_k`; queries without a positive are left out (NaN if none has one)."""
    return retrieval_stats(query, query_labels, gallery, gallery_labels, chunk_size=chunk_size,
                           memory_budget_mb=memory_budget_mb, ties=ties, normalize=normalize).map_at_r()


def r_precision(query, query_labels, gallery=None, gallery_labels=None, chunk_size: int | None = None,
                memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, ties: str = "pessimistic",
                normalize: bool = False) -> float:
    """R-precision = mean over queries with R > 0 of (#positives in the top R) / R. Arguments as
    :func:`recall_at_k`."""
    return retrieval_stats(query, query_labels, gallery, gallery_labels, chunk_size=chunk_size,
                           memory_budget_mb=memory_budget_mb, ties=ties, normalize=normalize).r_precision()


def binarize(features):
    """Sign codes in {-1, +1} (float32, same device; numpy in → torch out), the seeds' binary features.

    ``+1 where x > 0, else -1``: a 0 maps to -1, exactly like the official ``(e > 0)`` bit
    convention. (torch.sign would give 0, a third value that breaks ``q·g = D - 2·Hamming``.)
    With ±1 codes the inner product ranks exactly by Hamming distance.
    """
    x = _as_features(features, "features")
    return torch.where(x > 0, 1.0, -1.0).to(torch.float32)
