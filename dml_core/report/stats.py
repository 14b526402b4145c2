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

A claim "A beats B" / "X helps" is made only when the paired interval excludes 0
(:func:`verdict`); otherwise the report says there is no detectable difference at n seeds.

:func:`summarise` turns the run table of :func:`dml_core.report.load_runs` (with the ``config``
and ``seed`` columns of :func:`dml_core.report.runs.with_configs`) into the tables the report
shows: per-configuration mean and interval, every seed's value, and the paired comparisons.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["Interval", "Paired", "Welch", "mean_ci", "paired_difference", "welch_test",
           "verdict", "summarise", "per_seed_table", "SeedMismatchError", "DEFAULT_METRIC",
           "DEFAULT_SELECTION"]

#: What the study's tables report: test dense R@1 at the epoch chosen on the validation split.
DEFAULT_SELECTION = "val_sel"
DEFAULT_METRIC = "dense/R@1"


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


def verdict(label_a: str, label_b: str, paired: Paired, scale: float = 100.0,
            unit: str = " points") -> str:
    """The sentence the report may write about A − B: a direction only when the interval
    excludes 0, else "no detectable difference at n seeds"."""
    d = paired.diff
    ci = f"{d.mean * scale:+.1f}{unit}, 95% CI [{d.lo * scale:+.1f}, {d.hi * scale:+.1f}], " \
         f"{d.n} seeds"
    if d.excludes_zero():
        better, worse = (label_a, label_b) if d.mean > 0 else (label_b, label_a)
        return f"{better} beats {worse} ({ci})"
    return f"no detectable difference between {label_a} and {label_b} at {d.n} seeds ({ci})"


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


def summarise(runs, metric: str = DEFAULT_METRIC, selection: str = DEFAULT_SELECTION,
              comparisons: Sequence[tuple[str, str, str]] | None = None,
              confidence: float = 0.95) -> dict:
    """The report's statistics from a run table (one row per run folder).

    ``runs``: :func:`dml_core.report.load_runs` output passed through
    :func:`dml_core.report.runs.with_configs` (adds ``config``, ``label``, ``variant``, ``seed``).
    ``comparisons``: ``(label, variant_a, variant_b)`` triples (default
    :data:`dml_core.methods.fair.COMPARISONS`, restricted to variants present). Returns::

        {"per_seed": DataFrame(config, label, variant, seed, metric, value),
         "summary": DataFrame(label, variant, n, mean, lo, hi, sd, seeds, "mean ± CI (%)"),
         "paired": DataFrame(comparison, a, b, n, mean, lo, hi, p_value, verdict),
         "metric": "<selection>/<metric>"}

    Values are fractions (multiply by 100 for %). A configuration with one seed has a nan
    interval; a comparison whose seeds differ is never reduced to the common seeds: its row
    carries the :class:`SeedMismatchError` message in ``verdict`` (n = 0).
    """
    import pandas as pd

    per_seed = per_seed_table(runs, metric, selection)
    rows = []
    for config, g in per_seed.groupby("config", sort=False):
        iv = mean_ci(g["value"], confidence)
        rows.append({"label": g["label"].iloc[0],
                     "variant": g["variant"].iloc[0] if "variant" in g else None,
                     "config": config, "n": iv.n, "mean": iv.mean, "lo": iv.lo, "hi": iv.hi,
                     "sd": iv.sd, "seeds": ",".join(str(int(s)) for s in sorted(g["seed"])),
                     "mean ± CI (%)": iv.format()})
    summary = pd.DataFrame(rows)
    if comparisons is None:
        from dml_core.methods.fair import COMPARISONS as comparisons  # noqa: N811
    prow = []
    by_variant = {v: g for v, g in per_seed.groupby("variant")} if "variant" in per_seed else {}
    for label, va, vb in comparisons:
        if va not in by_variant or vb not in by_variant:
            continue
        a = dict(zip(by_variant[va]["seed"], by_variant[va]["value"]))
        b = dict(zip(by_variant[vb]["seed"], by_variant[vb]["value"]))
        try:
            p = paired_difference(a, b, confidence)
        except SeedMismatchError as exc:
            prow.append({"comparison": label, "a": va, "b": vb, "n": 0, "verdict": str(exc)})
            continue
        la, lb = by_variant[va]["label"].iloc[0], by_variant[vb]["label"].iloc[0]
        prow.append({"comparison": label, "a": va, "b": vb, "n": p.diff.n, "mean": p.diff.mean,
                     "lo": p.diff.lo, "hi": p.diff.hi, "p_value": p.p_value,
                     "excludes 0": p.diff.excludes_zero(), "verdict": verdict(la, lb, p)})
    return {"per_seed": per_seed, "summary": summary, "paired": pd.DataFrame(prow),
            "metric": _column(selection, metric)}
