"""Exact retrieval metrics (Recall@K, MAP@R, R-precision) without an N×N matrix.

Similarity is the inner product of the given vectors (pass L2-normalised features for cosine, or
``normalize=True``; :func:`binarize` codes give ``D - 2·Hamming``, an exact proxy for Hamming).

Definitions (MLRC, "A Metric Learning Reality Check"), for a query q of class y:

- positives: gallery items of class y, except q itself in self-retrieval (excluded by INDEX);
  R = their number. A query with R = 0 counts as a miss in Recall@K and is left out of MAP@R and
  R-precision (if every query has R = 0 these return NaN).
- Recall@K: 1 if the best positive has rank ≤ K, computed without sorting from
  ``n_above`` = #negatives scoring strictly above the best positive score b, ``tied_neg`` =
  #negatives scoring exactly b and ``tied_pos`` = #positives scoring exactly b (≥ 1).
- MAP@R = 1/R Σ_{i≤R} P(i)·rel(i); R-precision = #positives in the top R / R.

Ties (equal scores; very common for binary codes, whose scores are integers) follow ``ties``:

- ``"expected"`` (default): **ties are broken uniformly at random in expectation** — every metric
  is the exact expectation over a uniformly random order of the tied items (no sampling).
  Recall@K: with X = #tied negatives placed before the first tied positive,
  P(X ≥ j) = Π_{i<j} (t_neg − i)/(t_neg + t_pos − i), and P(hit@K) = 1 − P(X ≥ K − n_above)
  (0 if n_above ≥ K). MAP@R and R-precision: a tie group with t_pos positives among T items,
  A items above it (b of them positive), puts a positive at its u-th place with probability
  t_pos/T, and E[rel(u)·#positives up to u] = t_pos/T·(b + 1 + (u−1)(t_pos−1)/(T−1)); summing
  over the places u ≤ R − A gives a closed form with harmonic numbers (see ``_map_from_state``).
- ``"pessimistic"``: negatives before positives of equal score (a collapsed embedding scores 0).
- ``"optimistic"``: positives first.

Positives tied with each other need no rule. The result never depends on the order a sort or a
BLAS kernel picks: every similarity of a query is computed once and all its comparisons use that
one float value. K larger than the gallery is allowed (no clamp needed): R@K is then the fraction
of queries that have a positive (or, under "expected", the mean hit probability).

Engines (same numbers, chosen by ``method``):

- ``"symmetric"`` (self-retrieval on CPU, the default there): items are sorted by class and cut
  into blocks that never split a class; block pairs (I, J ≥ I) of ``S = X Xᵀ`` are computed ONCE
  (BLAS through numpy, blocks of ~``sqrt(memory_budget_mb/28)`` rows) and serve the rows of I
  (row-wise) and of J (column-wise). Blocks are visited from the last block row to the first and
  each block row starts with its diagonal block, which holds all positives of its rows, so the best
  positive b and the positive list of every row are known before any of its negatives is counted.
  Per row it keeps the counts above/at b and, for MAP@R, the top negatives: a threshold θ (starting
  at the worst positive, raised to the R-th best negative), the negatives above θ (< R of them)
  and the number of negatives exactly at θ — enough for the exact tie rules.
- ``"rows"`` (query vs gallery, any device, and self-retrieval on GPU): chunks of query rows
  against the whole gallery, ``S = Q_chunk @ Gᵀ`` (chunk × Ng) as the one large buffer, sized by
  ``memory_budget_mb``; the same per-row state from a top-(R_max+1) list.
"""
from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

DEFAULT_MEMORY_BUDGET_MB = 256
NO_POSITIVE = torch.iinfo(torch.int64).max
TIES = ("expected", "pessimistic", "optimistic")
DEFAULT_TIES = "expected"
# rows engine: bytes of chunk working memory per similarity entry: S (float32) + bool temporaries
_BYTES_PER_ENTRY = 8
# symmetric engine: per block entry: S (4) + mask (1) + worst-case candidates (2×int64 + float32)
_BYTES_PER_BLOCK_ENTRY = 28


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
        if a.dtype == object or a.dtype.kind in "USV":
            raise TypeError(f"{name} must be integers, got {'strings' if a.dtype.kind in 'USV' else 'objects'}"
                            f" (dtype {a.dtype}); map class names to ints first, e.g. "
                            "np.unique(names, return_inverse=True)[1]")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {t.dtype}; map class names to ints first")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(t.shape)}")
    if t.numel() != n:
        raise ValueError(f"{name} has {t.numel()} entries but the features have {n} rows; they must match")
    return t.to(device=device, dtype=torch.int64)


def _check_ks(ks) -> list[int]:
    """``ks`` as a list of ints ≥ 1; a string ("12" is not [1, 2]), a fraction (1.9 is not 1)
    or a bool is a TypeError/ValueError that says what is expected."""
    if isinstance(ks, (str, bytes)):
        raise TypeError(f"ks must be a list of integers ≥ 1 such as [1, 2, 4, 8], got the string {ks!r}")
    if isinstance(ks, (int, float, np.integer, np.floating)):
        ks = [ks]
    out = []
    for k in ks:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.integer, np.floating)) \
                or (isinstance(k, (float, np.floating)) and not float(k).is_integer()):
            raise ValueError(f"ks must be integers ≥ 1, got {k!r} in {list(ks)!r}")
        out.append(int(k))
    if not out or any(k < 1 for k in out):
        raise ValueError(f"ks must be a non-empty list of integers ≥ 1, got {out}")
    return out


def _warn_no_positives(ql: torch.Tensor, gl: torch.Tensor, self_mode: bool) -> None:
    """Warn when no query has a positive (every class a singleton, or no query class in the
    gallery): R@K is then 0 and MAP@R NaN by definition, which says nothing about the model."""
    if self_mode:
        _, counts = torch.unique(ql, return_counts=True)
        none = bool((counts < 2).all())
        what = "every class of the evaluation set has a single item"
    else:
        none = not bool(torch.isin(ql, gl).any())
        what = "no query label occurs in the gallery"
    if none:
        warnings.warn(f"no query has a positive ({what}): R@K is 0 and MAP@R / RP are NaN; check "
                      "the labels and the split (retrieval needs ≥ 2 items per class)", stacklevel=3)


@dataclass
class RetrievalStats:
    """Per-query results of one pass (all (Nq,) tensors on the CPU):

    ``n_above`` #negatives strictly above the best positive score b, ``tied_neg`` #negatives scoring
    exactly b, ``tied_pos`` #positives scoring exactly b (≥ 1; all three are 0 when R = 0),
    ``num_relevant`` R, and, when MAP@R was asked for, ``ap_at_r`` and ``precision_at_r`` float64
    (NaN for R = 0) under the tie rule ``ties``."""
    n_above: torch.Tensor
    tied_neg: torch.Tensor
    tied_pos: torch.Tensor
    num_relevant: torch.Tensor
    ap_at_r: torch.Tensor | None
    precision_at_r: torch.Tensor | None
    gallery_size: int
    ties: str = DEFAULT_TIES

    @property
    def first_rank(self) -> torch.Tensor:
        """Rank of the best positive (``NO_POSITIVE`` when R = 0) under "pessimistic"/"optimistic";
        under "expected" there is no single rank: use :meth:`hit_probability`."""
        if self.ties == "expected":
            raise ValueError('ties="expected" has no single rank; use hit_probability(k)')
        r = self.n_above + 1 + (self.tied_neg if self.ties == "pessimistic" else 0)
        return torch.where(self.num_relevant > 0, r, torch.full_like(r, NO_POSITIVE))

    def hit_probability(self, k: int) -> torch.Tensor:
        """Per query P(best positive ranks ≤ k) under the tie rule (0/1 for the deterministic ones)."""
        has = self.num_relevant > 0
        if self.ties != "expected":
            return ((self.first_rank <= k) & has).double()
        j = k - self.n_above            # tied negatives that may still precede the first positive
        tn, tp = self.tied_neg.double(), self.tied_pos.double()
        p = torch.where(j > 0, 1.0, 0.0).double()  # j ≤ 0: miss; j > t_neg: sure hit
        act = ((j > 0) & (j <= self.tied_neg) & has).nonzero().squeeze(1)
        if act.numel():
            ja, tna, tpa = j[act], tn[act], tp[act]
            q = torch.ones(len(act), dtype=torch.float64)  # P(X ≥ j) = Π_{i<j} (t_neg−i)/(t_neg+t_pos−i)
            for i in range(int(ja.max())):
                live = i < ja
                q = torch.where(live, q * (tna - i) / (tna + tpa - i), q)
            p[act] = 1.0 - q
        return torch.where(has, p, torch.zeros_like(p))

    def recall(self, ks: Iterable[int]) -> dict[int, float]:
        return {int(k): float(self.hit_probability(int(k)).mean()) for k in ks}

    def _mean_valid(self, v: torch.Tensor) -> float:
        valid = self.num_relevant > 0
        return float(v[valid].mean()) if bool(valid.any()) else math.nan

    def map_at_r(self) -> float:
        return self._mean_valid(self.ap_at_r)

    def r_precision(self) -> float:
        return self._mean_valid(self.precision_at_r)


# ----------------------------------------------------------------------------------- MAP@R
_HARMONIC = torch.zeros(1, dtype=torch.float64)


def _harmonic(n: int) -> torch.Tensor:
    """H[m] = Σ_{k≤m} 1/k for m = 0..n (float64, cached)."""
    global _HARMONIC
    if len(_HARMONIC) <= n:
        _HARMONIC = torch.cat([torch.zeros(1, dtype=torch.float64),
                               torch.cumsum(1.0 / torch.arange(1, 2 * n + 2, dtype=torch.float64), 0)])
    return _HARMONIC


def _map_from_state(pos, num_rel, theta, top_neg, n_at_theta, ties):
    """AP@R and precision@R per query (float64, NaN for R = 0) from the per-query MAP state.

    pos (n, Rm) positive scores sorted descending (−inf padded, Rm ≥ R_max); theta (n,) a score
    ≥ the worst positive such that every negative scoring above it is in top_neg (n, Rm)
    (descending, −inf padded) and n_at_theta (n,) negatives score exactly theta; if theta is above
    the worst positive, at least R negatives score ≥ theta. So for a positive p: p > theta → the
    negatives above/at p are counted in top_neg; p == theta → |top_neg| above, n_at_theta at;
    p < theta → ≥ R negatives above, it is outside the top R.
    """
    n, rm = pos.shape
    dev = pos.device
    R = num_rel.to(dev)
    if rm == 0 or n == 0:
        return torch.full((n,), math.nan, dtype=torch.float64), torch.full((n,), math.nan, dtype=torch.float64)
    big = rm + 1  # "at least R negatives above"
    neg_asc = torch.flip(top_neg, [1]).contiguous()
    n_top = torch.isfinite(top_neg).sum(1, keepdim=True)
    gt_top = rm - torch.searchsorted(neg_asc, pos.contiguous(), right=True)
    eq_top = torch.searchsorted(neg_asc, pos.contiguous(), right=True) - torch.searchsorted(neg_asc, pos.contiguous())
    th = theta[:, None]
    g = torch.where(pos > th, gt_top, torch.where(pos == th, n_top.expand_as(gt_top), torch.full_like(gt_top, big)))
    e = torch.where(pos > th, eq_top, torch.where(pos == th, n_at_theta[:, None].expand_as(eq_top),
                                                  torch.zeros_like(eq_top)))
    j = torch.arange(1, rm + 1, device=dev)[None, :]
    valid = (j <= R[:, None]) & torch.isfinite(pos)
    Rc = R[:, None]
    if ties in ("pessimistic", "optimistic"):
        rank = j + g + (e if ties == "pessimistic" else 0)
        hit = valid & (rank <= Rc)
        ap_sum = (hit * (j.double() / rank.double())).sum(1)
        pr_sum = hit.sum(1).double()
    else:  # expected: sum over tie groups of positives (leader = first positive of its group)
        pos_asc = torch.flip(pos, [1]).contiguous()
        t_pos = torch.searchsorted(pos_asc, pos.contiguous(), right=True) - torch.searchsorted(pos_asc, pos.contiguous())
        prev = torch.cat([torch.full_like(pos[:, :1], math.inf), pos[:, :-1]], 1)
        lead = valid & (pos != prev)
        b = (j - 1).expand_as(g)                     # positives above the group
        A = torch.clamp(b + g, max=big)              # items above the group
        T = t_pos + e
        U = torch.clamp(torch.minimum(Rc - A, T), min=0)
        U = torch.where(lead, U, torch.zeros_like(U))
        H = _harmonic(big + 1).to(dev)
        Ai = torch.clamp(A, max=big)
        dH = H[torch.clamp(Ai + U, max=len(H) - 1)] - H[Ai]
        tp, Td = t_pos.double(), T.double().clamp(min=1)
        beta = torch.where(T > 1, (tp - 1) / (Td - 1).clamp(min=1), torch.zeros_like(tp))
        contrib = tp / Td * ((b + 1).double() * dH + beta * (U.double() - (Ai + 1).double() * dH))
        ap_sum = torch.where(lead & (U > 0), contrib, torch.zeros_like(contrib)).sum(1)
        pr_sum = torch.where(lead, U.double() * tp / Td, torch.zeros_like(contrib)).sum(1)
    rd = R.double().clamp(min=1)
    nan = torch.tensor(math.nan, dtype=torch.float64, device=dev)
    return (torch.where(R > 0, ap_sum / rd, nan).cpu(), torch.where(R > 0, pr_sum / rd, nan).cpu())


# ----------------------------------------------------------------------------------- kernels
def _class_members(gl: torch.Tensor):
    """Gallery grouped by class: (classes sorted, start of each class in ``order``, counts, order)."""
    order = torch.argsort(gl, stable=True)
    classes, counts = torch.unique_consecutive(gl[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return classes, starts, counts, order


def retrieval_stats(query, query_labels, gallery=None, gallery_labels=None, *, need_map: bool = True,
                    chunk_size: int | None = None, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                    ties: str = DEFAULT_TIES, normalize: bool = False, method: str = "auto") -> RetrievalStats:
    """One exact pass over all queries; see the module docstring for the definitions and engines.

    query (Nq, D), query_labels (Nq,); gallery (Ng, D) and gallery_labels (Ng,), or None for
    self-retrieval (gallery = query, each query excluded by index). Tensors stay on their device.
    ``method``: "auto" (symmetric for self-retrieval on CPU, else rows), "symmetric" or "rows";
    ``chunk_size`` is the rows per chunk (rows) or the target block size (symmetric).
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if method not in ("auto", "symmetric", "rows"):
        raise ValueError(f"method must be 'auto', 'symmetric' or 'rows', got {method!r}")
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
    _warn_no_positives(ql, gl, self_mode)
    if chunk_size is None and memory_budget_mb * 2**20 < _BYTES_PER_ENTRY * ng:
        raise ValueError(f"memory_budget_mb={memory_budget_mb} is too small for one query row of "
                         f"{ng} gallery items; raise it to at least {_BYTES_PER_ENTRY * ng / 2**20:.1f}")
    if method == "symmetric" and not (self_mode and device.type == "cpu"):
        raise ValueError("method='symmetric' needs self-retrieval on CPU tensors")
    if method in ("auto", "symmetric") and self_mode and device.type == "cpu":
        st = _symmetric_cpu(q, ql, need_map, chunk_size, memory_budget_mb, ties)
        if st is not None:
            return st
    return _rows(q, ql, g, gl, self_mode, need_map, chunk_size, memory_budget_mb, ties)


def _rows(q, ql, g, gl, self_mode, need_map, chunk_size, memory_budget_mb, ties) -> RetrievalStats:
    """Row-chunk engine: every number of a query comes from its row of one ``Q_chunk @ Gᵀ``."""
    device = q.device
    nq, ng = q.shape[0], g.shape[0]
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

    n_above = torch.zeros(nq, dtype=torch.int64, device=device)
    tied_neg = torch.zeros_like(n_above)
    tied_pos = torch.zeros_like(n_above)
    rm = max(r_max, 1)
    pos_all = torch.full((nq, rm), -math.inf, device=device) if need_map else None
    theta = torch.full((nq,), math.inf, device=device) if need_map else None
    top_neg = torch.full((nq, rm), -math.inf, device=device) if need_map else None
    n_theta = torch.zeros(nq, dtype=torch.int64, device=device) if need_map else None
    buf = torch.empty(chunk_size, ng, dtype=torch.float32, device=device)
    ar = torch.arange(maxc, device=device)
    gT = g.t()
    inf = torch.tensor(math.inf, device=device)
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
            pos = torch.where(valid, S.gather(1, pidx), -inf)
            pos, _ = torch.sort(pos, dim=1, descending=True)  # (c, maxc), -inf padded
            rc = num_rel[s:e]
            has = rc > 0
            best = torch.where(has, pos[:, 0], inf)  # no positive: count nothing
            tp = torch.where(has, (pos == best[:, None]).sum(1), torch.zeros_like(rc))
            n_ge = (S >= best[:, None]).sum(1)
            n_gt = (S > best[:, None]).sum(1)
            n_above[s:e], tied_neg[s:e], tied_pos[s:e] = n_gt, n_ge - n_gt - tp, tp
            if need_map and r_max > 0:
                # negatives only: positives to -inf, then the top-(R_max+1) list
                pr, pc = valid.nonzero(as_tuple=True)
                S[pr, pidx[pr, pc]] = -math.inf
                k = min(r_max + 1, n_cand)
                vals = torch.topk(S, k, dim=1).values
                if k < r_max + 1:
                    vals = torch.cat([vals, vals.new_full((c, r_max + 1 - k), -math.inf)], 1)
                rq = rc.clamp(min=1) - 1
                p_worst = pos[rows, rq]
                th = torch.where(has, torch.maximum(p_worst, vals[rows, rq]), inf)
                cnt = (vals == th[:, None]).sum(1)
                # ties at theta may continue past the list: count them in the row
                more = has & (vals[:, -1] == th) & (k < n_cand)
                if bool(more.any()):
                    fr = more.nonzero().squeeze(1)
                    cnt[fr] = (S.index_select(0, fr) == th[fr, None]).sum(1)
                pos_all[s:e] = pos[:, :rm] if maxc >= rm else torch.cat(
                    [pos, pos.new_full((c, rm - maxc), -math.inf)], 1)
                theta[s:e] = th
                top_neg[s:e] = torch.where(vals[:, :rm] > th[:, None], vals[:, :rm], -inf)
                n_theta[s:e] = torch.where(has, cnt, torch.zeros_like(cnt))
    finally:
        torch.set_float32_matmul_precision(prev_precision)
    ap = prec = None
    if need_map:
        ap, prec = _map_from_state(pos_all, num_rel, theta, top_neg, n_theta, ties)
    return RetrievalStats(n_above.cpu(), tied_neg.cpu(), tied_pos.cpu(), num_rel.cpu(), ap, prec, ng, ties)


class _MapState:
    """Per-row MAP state of the symmetric engine (numpy, rows in class-sorted order)."""

    def __init__(self, n: int, rm: int, num_rel: np.ndarray):
        self.rm = rm
        self.R = num_rel
        self.theta = np.full(n, np.inf, np.float32)
        self.top = np.full((n, rm), -np.inf, np.float32)
        self.at = np.zeros(n, np.int64)

    def add(self, r: np.ndarray, v: np.ndarray):
        """Merge candidate negatives (row r, score v ≥ theta[r])."""
        th = self.theta[r]
        eq = v == th
        if eq.any():
            self.at += np.bincount(r[eq], minlength=len(self.at))
            keep = ~eq
            r, v = r[keep], v[keep]
        if not r.size:
            return
        o = np.argsort(r, kind="stable")
        r, v = r[o], v[o]
        rows, first, cnt = np.unique(r, return_index=True, return_counts=True)
        k = int(cnt.max())
        M = np.full((len(rows), k), -np.inf, np.float32)
        M[np.repeat(np.arange(len(rows)), cnt), np.arange(len(r)) - np.repeat(first, cnt)] = v
        W = np.concatenate([self.top[rows], M], 1)
        W = -np.sort(-W, axis=1)
        wR = W[np.arange(len(rows)), self.R[rows] - 1]  # R-th best negative above theta
        up = np.isfinite(wR)  # ≥ R negatives above theta: raise it to the R-th
        newth = np.where(up, wR, self.theta[rows])
        self.at[rows[up]] = (W[up] == wR[up, None]).sum(1)
        self.theta[rows] = newth
        self.top[rows] = np.where(W[:, :self.rm] > newth[:, None], W[:, :self.rm], -np.inf)


def _symmetric_cpu(q, ql, need_map, block, memory_budget_mb, ties) -> RetrievalStats | None:
    """Self-retrieval on CPU from the upper block triangle of X Xᵀ (see module docstring).

    Returns None when one class is too large for a block within the memory budget (rows engine)."""
    x = q.numpy()
    y = ql.numpy()
    n = len(y)
    order = np.argsort(y, kind="stable")
    ys = y[order]
    xs = np.ascontiguousarray(x[order])
    cls_start = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
    cls_count = np.diff(np.r_[cls_start, n])
    if block is None:
        block = int(math.sqrt(memory_budget_mb * 2**20 / _BYTES_PER_BLOCK_ENTRY))
    block = max(1, int(block))
    # blocks: whole classes, cut once a block reaches `block` items
    cuts, size = [0], 0
    for st, ct in zip(cls_start, cls_count):
        if size >= block:
            cuts.append(int(st))
            size = 0
        size += int(ct)
    cuts.append(n)
    bmax = max(b - a for a, b in zip(cuts[:-1], cuts[1:]))
    if bmax * bmax * _BYTES_PER_BLOCK_ENTRY > 4 * memory_budget_mb * 2**20 and bmax > block:
        return None  # a huge class: the rows engine bounds memory better
    num_rel = np.repeat(cls_count - 1, cls_count)  # R in sorted order
    r_max = int(num_rel.max())
    rm = max(r_max, 1)
    n_gt = np.zeros(n, np.int64)
    n_ge = np.zeros(n, np.int64)
    t_pos = np.zeros(n, np.int64)
    best = np.full(n, np.inf, np.float32)
    pos_all = np.full((n, rm), -np.inf, np.float32)
    state = _MapState(n, rm, num_rel) if need_map and r_max > 0 else None
    buf = np.empty(bmax * bmax, np.float32)
    masks = [np.empty(bmax * bmax, np.bool_) for _ in range(2)]

    def count(S, sl, axis, mask):
        """Rows `sl` are S's rows (axis=1) or columns (axis=0); S holds negatives only. Returns the
        MAP candidates (row, score) and leaves merging them to the caller (one thread)."""
        shape = (-1, 1) if axis == 1 else (1, -1)
        m = mask[:S.size].reshape(S.shape)
        u = m.view(np.uint8)
        b = best[sl].reshape(shape)
        np.greater(S, b, out=m)
        n_gt[sl] += u.sum(axis=axis, dtype=np.int32)
        np.greater_equal(S, b, out=m)
        n_ge[sl] += u.sum(axis=axis, dtype=np.int32)
        if state is None:
            return None
        np.greater_equal(S, state.theta[sl].reshape(shape), out=m)
        f = np.flatnonzero(m)  # far cheaper than a 2-D nonzero
        if not f.size:
            return None
        ii, jj = np.divmod(f, S.shape[1])
        return (ii if axis == 1 else jj) + sl.start, S.reshape(-1)[f]

    def merge(c):
        if c is not None:
            state.add(*c)

    nb = len(cuts) - 1
    with ThreadPoolExecutor(max_workers=2) as pool:  # numpy releases the GIL in these loops
        for I in reversed(range(nb)):
            a, b_ = cuts[I], cuts[I + 1]
            sl = slice(a, b_)
            XI = xs[sl]
            m = b_ - a
            S = buf[:m * m].reshape(m, m)
            np.matmul(XI, XI.T, out=S)
            same = ys[sl, None] == ys[None, sl]
            P = np.where(same, S, np.float32(-np.inf))
            np.fill_diagonal(P, -np.inf)
            P = -np.sort(-P, axis=1)[:, :rm]
            pos_all[sl, :P.shape[1]] = P
            R = num_rel[sl]
            has = R > 0
            best[sl] = np.where(has, P[:, 0], np.inf)
            t_pos[sl] = np.where(has, (P == best[sl, None]).sum(1), 0)
            if state is not None:
                state.theta[sl] = np.where(has, P[np.arange(m), np.maximum(R, 1) - 1], np.inf)
            S[same] = -np.inf  # negatives only (the query itself is "same" too)
            merge(count(S, sl, 1, masks[0]))
            for J in range(I + 1, nb):
                c, d = cuts[J], cuts[J + 1]
                S = buf[:m * (d - c)].reshape(m, d - c)
                np.matmul(XI, xs[c:d].T, out=S)
                fut = pool.submit(count, S, slice(c, d), 0, masks[1])
                merge(count(S, sl, 1, masks[0]))
                merge(fut.result())

    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)  # sorted position of each original item
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a[inv]))  # noqa: E731
    ap = prec = None
    if need_map:
        if state is None:
            ap = prec = torch.full((n,), math.nan, dtype=torch.float64)
        else:
            ap, prec = _map_from_state(t(pos_all), t(num_rel), t(state.theta), t(state.top), t(state.at), ties)
    return RetrievalStats(t(n_gt), t(n_ge - n_gt), t(t_pos), t(num_rel), ap, prec, n, ties)


# ----------------------------------------------------------------------------------- public
def _warn_large_k(ks, stats: RetrievalStats, self_mode: bool):
    n = stats.gallery_size - (1 if self_mode else 0)
    big = [k for k in ks if k > n]
    if big:
        warnings.warn(f"K={big} > the {n} retrievable gallery items: R@K then only counts whether a "
                      "query has any positive", stacklevel=3)


def recall_at_k(query, query_labels, ks: Sequence[int], gallery=None, gallery_labels=None,
                chunk_size: int | None = None, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                ties: str = DEFAULT_TIES, normalize: bool = False, method: str = "auto") -> dict[int, float]:
    """Recall@K for each K in ``ks`` as fractions in [0, 1] ({K: value}, in the order given).

    query (Nq, D) and query_labels (Nq,) as torch tensors (any device) or numpy arrays; labels of any
    integer dtype. ``gallery=None``: self-retrieval, each query searches all other items (excluded by
    index). Similarity = inner product (``normalize=True`` L2-normalises first). A query without a
    positive is a miss. Ties: ``"expected"`` (default, ties broken uniformly at random in
    expectation), ``"pessimistic"`` or ``"optimistic"``; see the module docstring. Peak extra memory
    ≈ ``memory_budget_mb`` unless ``chunk_size`` is given. ``method``: see :func:`retrieval_stats`.
    """
    ks = _check_ks(ks)
    st = retrieval_stats(query, query_labels, gallery, gallery_labels, need_map=False, chunk_size=chunk_size,
                         memory_budget_mb=memory_budget_mb, ties=ties, normalize=normalize, method=method)
    _warn_large_k(ks, st, gallery is None)
    return st.recall(ks)


def map_at_r(query, query_labels, gallery=None, gallery_labels=None, chunk_size: int | None = None,
             memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, ties: str = DEFAULT_TIES,
             normalize: bool = False, method: str = "auto") -> float:
    """MAP@R = mean over queries with R > 0 of 1/R Σ_{i≤R} P(i)·rel(i) (MLRC). Arguments as
    :func:`recall_at_k`; queries without a positive are left out (NaN if none has one)."""
    return retrieval_stats(query, query_labels, gallery, gallery_labels, chunk_size=chunk_size,
                           memory_budget_mb=memory_budget_mb, ties=ties, normalize=normalize,
                           method=method).map_at_r()


def r_precision(query, query_labels, gallery=None, gallery_labels=None, chunk_size: int | None = None,
                memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, ties: str = DEFAULT_TIES,
                normalize: bool = False, method: str = "auto") -> float:
    """R-precision = mean over queries with R > 0 of (#positives in the top R) / R. Arguments as
    :func:`recall_at_k`."""
    return retrieval_stats(query, query_labels, gallery, gallery_labels, chunk_size=chunk_size,
                           memory_budget_mb=memory_budget_mb, ties=ties, normalize=normalize,
                           method=method).r_precision()


def binarize(features):
    """Sign codes in {-1, +1} (float32, same device; numpy in → torch out), the original code's binary features.

    ``+1 where x > 0, else -1``: a 0 maps to -1, exactly like the official ``(e > 0)`` bit
    convention. (torch.sign would give 0, a third value that breaks ``q·g = D - 2·Hamming``.)
    With ±1 codes the inner product ranks exactly by Hamming distance.
    """
    x = _as_features(features, "features")
    return torch.where(x > 0, 1.0, -1.0).to(torch.float32)
