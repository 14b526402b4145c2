r"""Means over seeds with 95% intervals, paired differences by seed, Welch's test for replication.

A seed changes the initialisation, the sampling order, the augmentation and the validation
classes; a number of the study is therefore a sample of size n (the seeds), and every number the
report shows is summarised as

* :func:`mean_ci`: mean :math:`\bar x` and the t-interval
  :math:`\bar x \pm t_{0.975,\,n-1}\, s/\sqrt n` (s: the sample standard deviation, ddof 1);
* :func:`paired_difference`: for two configurations run with the SAME seeds, the per-seed
  differences :math:`d_i = a_i - b_i` and :func:`mean_ci` of them, with the paired t-test's
  two-sided p-value. Pairing removes what a seed does to both runs (e.g. the validation classes
  it draws). Seeds that do not match are an error, never silently dropped;
* :func:`welch_test`: two independent samples (a fresh batch vs the committed per-seed values
  of another machine), :math:`t = (\bar a-\bar b)/\sqrt{s_a^2/n_a + s_b^2/n_b}` with the
  Welch–Satterthwaite degrees of freedom; used by ``python -m dml_core.report.replicate``.

* :func:`holm`: Holm's step-down adjustment of m p-values,
  :math:`\tilde p_{(i)} = \max_{j\le i}\min(1, (m-j+1)\,p_{(j)})` (p sorted ascending): the
  family-wise error of the claims made at :math:`\tilde p \le \alpha` is at most α, whatever
  the dependence between the tests.

The report tests a family: every paired comparison (:data:`dml_core.methods.fair.COMPARISONS`)
on every headline metric (R@1 and MAP@R). A claim "A beats B" is made only when the comparison's
Holm-adjusted p-value is at most 0.05 (:func:`verdict`); otherwise the report says there is no
detectable difference at n seeds. The 95% intervals shown are the per-comparison (unadjusted)
t-intervals.

:func:`summarise` turns the run table of :func:`dml_core.report.load_runs` (with the ``config``
and ``seed`` columns of :func:`dml_core.report.runs.with_configs`) into the tables the report
shows: per-configuration mean and interval (R@1 and MAP@R: :data:`HEADLINE_METRICS`), every
seed's value, and the paired comparisons with their Holm-adjusted p-values. A seed that appears
twice for one configuration is an error (:class:`SeedMismatchError`), never an overwrite.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["Interval", "Paired", "Welch", "mean_ci", "paired_difference", "welch_test",
           "holm", "verdict", "summarise", "per_seed_table", "SeedMismatchError",
           "DEFAULT_METRIC", "DEFAULT_SELECTION", "HEADLINE_METRICS", "ALPHA", "metric_name"]

#: What the study's tables report: test dense R@1 at the epoch chosen on the validation split.
DEFAULT_SELECTION = "val_sel"
DEFAULT_METRIC = "dense/R@1"
#: The headline metrics: R@1 and MAP@R. P@1 is not listed: with one label per image a hit at
#: rank 1 is both a recall and a precision, so P@1 equals R@1 here.
HEADLINE_METRICS = ("dense/R@1", "dense/MAP@R")
#: The family-wise error rate of the report's claims.
ALPHA = 0.05


def metric_name(metric: str) -> str:
    """``"val_sel/dense/MAP@R"`` or ``"dense/MAP@R"`` -> ``"MAP@R"`` (``binary R@1`` for binary)."""
    parts = metric.split("/")
    name = parts[-1]
    return f"binary {name}" if "binary" in parts else name


class SeedMismatchError(ValueError):
    """Paired values whose seeds differ (or repeat): pairing would compare unlike runs."""


def _t_quantile(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def _t_sf(t: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.sf(t, df))


@dataclass(frozen=True)
class Interval:
    """Mean of n values with its two-sided ``confidence`` t-interval [lo, hi] (nan for n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.lo > 0 or self.hi < 0)

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"43.2 ± 1.5"`` (mean ± half-width, scaled, e.g. fractions → %)."""
        if self.n < 2 or not math.isfinite(self.half_width):
            return f"{self.mean * scale:.{digits}f} (n = {self.n})"
        return f"{self.mean * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"

    def as_dict(self) -> dict:
        return asdict(self)


def _values(values: Iterable[float]) -> np.ndarray:
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values: a mean over seeds needs at least one run")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"non-finite values {x.tolist()}: a failed run cannot be averaged")
    return x


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean and t-interval over seeds. ``values``: one number per seed (n ≥ 1; n = 1 gives a nan
    interval: one seed has no spread to estimate)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = _values(values)
    n, mean = x.size, float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, math.nan, confidence)
    sd = float(x.std(ddof=1))
    half = _t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, confidence)


@dataclass(frozen=True)
class Paired:
    """A − B by seed: the interval of the mean difference, the paired t-test, the per-seed d."""

    diff: Interval
    p_value: float
    seeds: tuple
    differences: tuple

    def as_dict(self) -> dict:
        return {"mean": self.diff.mean, "lo": self.diff.lo, "hi": self.diff.hi, "n": self.diff.n,
                "sd": self.diff.sd, "p_value": self.p_value, "seeds": list(self.seeds)}


def _seed(s):
    return int(s) if isinstance(s, (int, np.integer)) else s


def _by_seed(values: Mapping | Sequence, name: str) -> dict:
    if isinstance(values, Mapping):
        return {_seed(k): v for k, v in values.items()}
    pairs = [(_seed(s), v) for s, v in values]
    seeds = [s for s, _ in pairs]
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise SeedMismatchError(f"{name} has seed(s) {dup} more than once; one value per seed")
    return dict(pairs)


def paired_difference(a: Mapping | Sequence, b: Mapping | Sequence,
                      confidence: float = 0.95) -> Paired:
    """``a`` − ``b`` paired by seed. ``a``, ``b``: ``{seed: value}`` or ``[(seed, value), ...]``
    with the SAME seeds (:class:`SeedMismatchError` otherwise, naming the unmatched ones)."""
    a, b = _by_seed(a, "a"), _by_seed(b, "b")
    only_a, only_b = sorted(set(a) - set(b), key=str), sorted(set(b) - set(a), key=str)
    if only_a or only_b:
        raise SeedMismatchError(
            f"paired comparison needs the same seeds on both sides; only in a: {only_a}, only "
            f"in b: {only_b}. Run the missing seeds (or compare unpaired with welch_test)")
    seeds = tuple(sorted(a, key=lambda s: (str(type(s)), s)))
    d = _values(a[s] - b[s] for s in seeds)
    diff = mean_ci(d, confidence)
    if diff.n < 2:
        p = math.nan
    elif diff.sd == 0:
        p = 1.0 if diff.mean == 0 else 0.0
    else:
        t = diff.mean / (diff.sd / math.sqrt(diff.n))
        p = 2 * _t_sf(abs(t), diff.n - 1)
    return Paired(diff, p, seeds, tuple(float(x) for x in d))


@dataclass(frozen=True)
class Welch:
    """Welch's unequal-variance t-test of mean(a) = mean(b)."""

    mean_a: float
    mean_b: float
    t: float
    df: float
    p_value: float
    n_a: int
    n_b: int


def welch_test(a: Iterable[float], b: Iterable[float]) -> Welch:
    """Two-sided Welch test (as ``scipy.stats.ttest_ind(a, b, equal_var=False)``). Both samples
    need n ≥ 2. Two samples without spread: p = 1 when the means are equal, else 0."""
    x, y = _values(a), _values(b)
    if x.size < 2 or y.size < 2:
        raise ValueError(f"Welch's test needs at least 2 values per side, got {x.size} and {y.size}")
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    ma, mb = float(x.mean()), float(y.mean())
    if va + vb == 0:
        same = math.isclose(ma, mb, rel_tol=0, abs_tol=1e-12)
        return Welch(ma, mb, 0.0 if same else math.inf, math.nan, 1.0 if same else 0.0,
                     x.size, y.size)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (x.size - 1) + vb ** 2 / (y.size - 1))
    return Welch(ma, mb, float(t), float(df), 2 * _t_sf(abs(t), df), x.size, y.size)


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values, in the input order, along the last axis (a 2-D array: one family
    per row). NaN entries (untestable) stay NaN and do not count in the family size m."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok].tolist()[:10]}")
    flat = p.reshape(-1, p.shape[-1])
    order = np.argsort(flat, axis=1, kind="mergesort")  # NaN sorts last
    ps = np.take_along_axis(flat, order, axis=1)
    m = (~np.isnan(flat)).sum(axis=1, keepdims=True)
    adjusted = np.minimum(1.0, (m - np.arange(flat.shape[1])[None, :]) * ps)
    adjusted = np.fmax.accumulate(adjusted, axis=1)
    adjusted[np.isnan(ps)] = np.nan
    out = np.empty_like(flat)
    np.put_along_axis(out, order, adjusted, axis=1)
    return out.reshape(p.shape)


def verdict(label_a: str, label_b: str, paired: Paired, scale: float = 100.0,
            unit: str = " points", p_adjusted: float | None = None, metric: str = "",
            alpha: float = ALPHA) -> str:
    """The sentence the report may write about A − B. With ``p_adjusted`` (Holm, over the
    report's family): a direction only when it is at most ``alpha``; without it: only when the
    95% interval excludes 0 (one comparison alone). Otherwise "no detectable difference at n
    seeds"."""
    d = paired.diff
    adj = "" if p_adjusted is None or math.isnan(p_adjusted) else \
        f", Holm-adjusted p = {p_adjusted:.3g}"
    ci = f"{d.mean * scale:+.1f}{unit}, 95% CI [{d.lo * scale:+.1f}, {d.hi * scale:+.1f}]" \
         f"{adj}, {d.n} seeds"
    where = f" in {metric}" if metric else ""
    claim = d.excludes_zero() if p_adjusted is None else \
        (d.n >= 2 and not math.isnan(p_adjusted) and p_adjusted <= alpha and d.mean != 0)
    if claim:
        better, worse = (label_a, label_b) if d.mean > 0 else (label_b, label_a)
        return f"{better} beats {worse}{where} ({ci})"
    return f"no detectable difference{where} between {label_a} and {label_b} at {d.n} seeds " \
           f"({ci})"


# ----------------------------------------------------------------------------- tables
def _column(selection: str, metric: str) -> str:
    return f"{selection}/{metric}"


def per_seed_table(runs, metric: str = DEFAULT_METRIC, selection: str = DEFAULT_SELECTION,
                   extra: Sequence[str] = ()) -> "pd.DataFrame":  # noqa: F821
    """One row per (config, seed): the complete runs' ``<selection>/<metric>`` value.

    ``runs`` needs the columns ``config``, ``label``, ``seed`` (:func:`dml_core.report.runs.
    with_configs`) and the metric column. Extra metric columns (same selection) can be added."""
    import pandas as pd

    col = _column(selection, metric)
    need = {"config", "label", "seed", col}
    missing = sorted(need - set(runs.columns))
    if missing:
        raise KeyError(f"runs table lacks {missing}; use dml_core.report.runs.with_configs(runs)"
                       f" and a selection/metric present in it (have: {sorted(runs.columns)[:40]})")
    ok = runs[(runs["status"] == "complete") & runs[col].notna()] if "status" in runs else runs
    keep = ["profile", "config", "label", "variant", "method", "dataset", "seed", col,
            *[_column(selection, m) for m in extra]]
    keep = [c for c in dict.fromkeys(keep) if c in ok.columns]
    out = ok[keep].rename(columns={col: "value"}).copy()
    out.insert(len(out.columns) - 1 - len(extra), "metric", col)
    return out.sort_values(["config", "seed"]).reset_index(drop=True) if len(out) else out


def _unique_seeds(g, what: str) -> list:
    """``[(seed, value), ...]`` of one configuration or variant; a repeated seed is an error."""
    pairs = list(zip(g["seed"], g["value"]))
    _by_seed(pairs, what)  # raises SeedMismatchError naming the repeated seeds
    return pairs


def summarise(runs, metric: str = DEFAULT_METRIC, selection: str = DEFAULT_SELECTION,
              comparisons: Sequence[tuple[str, str, str]] | None = None,
              confidence: float = 0.95, metrics: Sequence[str] | None = None,
              alpha: float = ALPHA) -> dict:
    """The report's statistics from a run table (one row per run folder).

    ``runs``: :func:`dml_core.report.load_runs` output passed through
    :func:`dml_core.report.runs.with_configs` (adds ``config``, ``label``, ``variant``, ``seed``).
    ``metric``: the primary metric (``summary``, ``per_seed``); ``metrics``: every metric of the
    headline table and of the paired comparisons (default: ``metric`` and the other
    :data:`HEADLINE_METRICS` present in ``runs``). ``comparisons``: ``(label, variant_a,
    variant_b)`` triples (default: :func:`dml_core.methods.fair.comparisons_for_profiles` of the
    runs' profiles, restricted to variants present). Returns::

        {"per_seed": DataFrame(config, label, variant, seed, metric, value),   # primary metric
         "summary": DataFrame(label, variant, n, mean, lo, hi, sd, seeds, "mean ± CI (%)"),
         "headline": DataFrame(label, variant, config, n, seeds, then per metric name M:
                               "M mean", "M lo", "M hi", "M (%)"),
         "paired": DataFrame(comparison, metric, a, b, n, mean, lo, hi, p_value, p_holm,
                             significant, excludes 0, verdict),
         "family": int (the number of tests Holm adjusts over), "metric", "metrics"}

    Values are fractions (multiply by 100 for %). A configuration with one seed has a nan
    interval; a seed repeated within a configuration or variant raises
    :class:`SeedMismatchError`; a comparison whose seeds differ is never reduced to the common
    seeds: its row carries the :class:`SeedMismatchError` message in ``verdict`` (n = 0). Every
    comparison × metric with a p-value is one test of the Holm family.
    """
    import pandas as pd

    metric_cols = [metric] + [m for m in (metrics if metrics is not None else HEADLINE_METRICS)
                              if m != metric]
    if metrics is None:
        metric_cols = [metric] + [m for m in metric_cols[1:]
                                  if _column(selection, m) in getattr(runs, "columns", ())]
    tables = {m: per_seed_table(runs, m, selection) for m in metric_cols}
    per_seed = tables[metric]
    rows, head = [], []
    for config, g in per_seed.groupby("config", sort=False):
        pairs = _unique_seeds(g, f"configuration {g['label'].iloc[0]!r}")
        iv = mean_ci([v for _, v in pairs], confidence)
        base = {"label": g["label"].iloc[0],
                "variant": g["variant"].iloc[0] if "variant" in g else None,
                "config": config, "n": iv.n,
                "seeds": ",".join(str(int(s)) for s in sorted(g["seed"]))}
        rows.append({**base, "mean": iv.mean, "lo": iv.lo, "hi": iv.hi, "sd": iv.sd,
                     "mean ± CI (%)": iv.format()})
        h = dict(base)
        for m in metric_cols:
            t = tables[m]
            vals = t.loc[t["config"] == config]
            name = metric_name(m)
            if not len(vals):
                h.update({f"{name} mean": math.nan, f"{name} lo": math.nan,
                          f"{name} hi": math.nan, f"{name} (%)": "—"})
                continue
            mi = mean_ci([v for _, v in _unique_seeds(vals, f"configuration {base['label']!r}")],
                         confidence)
            h.update({f"{name} mean": mi.mean, f"{name} lo": mi.lo, f"{name} hi": mi.hi,
                      f"{name} (%)": _pct_interval(mi)})
        head.append(h)
    summary, headline = pd.DataFrame(rows), pd.DataFrame(head)
    if comparisons is None:  # the family of the runs' setting (an ablation may alias its twin)
        from dml_core.methods.fair import comparisons_for_profiles

        profiles = set(runs["profile"].dropna()) if "profile" in getattr(runs, "columns", ()) \
            else set()
        comparisons = comparisons_for_profiles(profiles)
    prow = []
    for m in metric_cols:
        t = tables[m]
        by_variant = {v: g for v, g in t.groupby("variant")} if "variant" in t else {}
        for label, va, vb in comparisons:
            if va not in by_variant or vb not in by_variant:
                continue
            a = _unique_seeds(by_variant[va], f"variant {va!r}")
            b = _unique_seeds(by_variant[vb], f"variant {vb!r}")
            row = {"comparison": label, "metric": metric_name(m), "a": va, "b": vb}
            try:
                p = paired_difference(a, b, confidence)
            except SeedMismatchError as exc:
                prow.append({**row, "n": 0, "p_value": math.nan, "verdict": str(exc)})
                continue
            prow.append({**row, "n": p.diff.n, "mean": p.diff.mean, "lo": p.diff.lo,
                         "hi": p.diff.hi, "p_value": p.p_value,
                         "excludes 0": p.diff.excludes_zero(), "_paired": p,
                         "_labels": (by_variant[va]["label"].iloc[0],
                                     by_variant[vb]["label"].iloc[0])})
    adjusted = holm([r["p_value"] for r in prow]) if prow else np.array([])
    for r, q in zip(prow, adjusted):
        r["p_holm"] = q
        r["significant"] = bool(r.get("n", 0) >= 2 and not math.isnan(q) and q <= alpha)
        if "_paired" in r:
            r["verdict"] = verdict(*r.pop("_labels"), r.pop("_paired"), p_adjusted=q,
                                   metric=r["metric"], alpha=alpha)
    family = int(np.sum(~np.isnan(adjusted))) if len(adjusted) else 0
    return {"per_seed": per_seed, "summary": summary, "headline": headline,
            "paired": pd.DataFrame(prow), "family": family,
            "metric": _column(selection, metric),
            "metrics": [_column(selection, m) for m in metric_cols]}


def _pct_interval(iv: Interval) -> str:
    """``"43.2 [40.1, 46.3]"`` in %, or ``"43.2 (n = 1)"``."""
    if iv.n < 2 or not math.isfinite(iv.half_width):
        return f"{100 * iv.mean:.1f} (n = {iv.n})"
    return f"{100 * iv.mean:.1f} [{100 * iv.lo:.1f}, {100 * iv.hi:.1f}]"
