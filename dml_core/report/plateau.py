"""Has training plateaued? The fair protocol's criterion on validation curves.

A configuration has plateaued at a budget of E epochs when the mean over seeds of the validation
R@1 it gains over the last third of training, ``R@1(E) − R@1(E − round(E/3))``, is at most
:data:`dml_core.methods.fair.PLATEAU_POINTS` (2 points). :mod:`dml_core.study.convergence` uses
it to choose the epoch budget from probe curves; :func:`plateau_table` applies it to the runs of
a profile (their ``metrics.csv``), so the report says whether its comparison is at convergence.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from dml_core.methods.fair import PLATEAU_POINTS

__all__ = ["METRIC", "last_third_start", "last_third_gain", "smallest_plateaued_budget",
           "plateau_table"]

#: The curve the criterion reads.
METRIC = "val/dense/R@1"


def last_third_start(epochs: int) -> int:
    """The epoch the last third of an ``epochs``-epoch run starts from: ``E − round(E/3)``
    (15 → 10, 12 → 8, 5 → 3)."""
    if epochs < 2:
        raise ValueError(f"a budget needs at least 2 epochs to have a last third, got {epochs}")
    return epochs - max(1, round(epochs / 3))


def last_third_gain(curve: dict[int, float], epochs: int) -> float:
    """Points of R@1 (×100) gained over the last third of ``epochs`` in ``curve`` ({epoch: R@1
    in [0, 1]}): from :func:`last_third_start`, or the last evaluated epoch before it when that
    one was not evaluated (a longer stretch: never a smaller gain for a rising curve), to
    ``epochs``. NaN when ``epochs`` or no earlier epoch was evaluated."""
    start = last_third_start(epochs)
    earlier = [e for e in curve if e <= start and not math.isnan(curve[e])]
    end = curve.get(epochs)
    if not earlier or end is None or math.isnan(end):
        return math.nan
    return 100.0 * (end - curve[max(earlier)])


def smallest_plateaued_budget(curves: dict[str, dict[int, dict[int, float]]], max_epochs: int,
                              min_epochs: int = 2) -> tuple[int | None, dict[int, dict[str, float]]]:
    """``curves[variant][seed] = {epoch: R@1}``. Returns the shortest budget E in
    [min_epochs, max_epochs] from which on every variant's mean (over seeds) last-third gain is at
    most :data:`PLATEAU_POINTS` at E **and at every longer budget up to max_epochs** (None if
    there is none), and the mean gains of every budget. Requiring the longer budgets too keeps a
    noisy curve that dips under the threshold once from choosing a budget its own later epochs
    contradict (the 2-seed probe of Dec 2026 chose 20 epochs where 5 seeds still gained 2.9)."""
    gains: dict[int, dict[str, float]] = {}
    for e in range(max(2, min_epochs), max_epochs + 1):
        gains[e] = {}
        for variant, by_seed in curves.items():
            values = [last_third_gain(c, e) for c in by_seed.values()]
            gains[e][variant] = sum(values) / len(values) if values else math.nan
    chosen = None
    for e in sorted(gains, reverse=True):  # walk back from the longest budget
        if not all(not math.isnan(g) and g <= PLATEAU_POINTS for g in gains[e].values()):
            break
        chosen = e
    return chosen, gains


def plateau_table(runs) -> "object":
    """The criterion on finished runs: ``runs`` a frame with ``run_dir``, ``config`` and
    ``seed`` (:func:`dml_core.report.runs.with_configs`). One row per configuration with
    validation curves: ``config`` (the runs table's key), its name (the run folder's, without
    ``_s<seed>``), seeds, epochs, the mean last-third gain (points) and ``plateaued``. Empty
    when no run has a validation curve."""
    import pandas as pd

    from dml_core.core.run_folder import RunFolder

    rows = []
    for _, run in runs.iterrows():
        folder = RunFolder(run["run_dir"])
        metrics = folder.read_metrics()
        curve = {int(r["epoch"]): float(r[METRIC]) for r in metrics
                 if isinstance(r.get(METRIC), float) and not math.isnan(r[METRIC])}
        if curve:  # epoch 0, before training (the summary's): a run validated only at its end
            untrained = ((folder.read_summary() or {}).get("untrained") or {}).get("metrics") or {}
            if isinstance(untrained.get(METRIC), (int, float)) and not math.isnan(untrained[METRIC]):
                curve.setdefault(0, float(untrained[METRIC]))  # gains all it learned: not flat
        epochs = max((int(r["epoch"]) for r in metrics), default=0)
        if epochs < 2 or not curve:
            continue
        rows.append({"configuration": re.sub(r"_s\d+$", "", Path(run["run_dir"]).name),
                     "config": run["config"], "seed": run["seed"], "epochs": epochs,
                     "gain": last_third_gain(curve, epochs)})
    if not rows:
        return pd.DataFrame(columns=["config", "configuration", "seeds", "epochs", "gain",
                                     "plateaued"])
    df = pd.DataFrame(rows)
    out = (df.groupby("config", sort=False)
           .agg(configuration=("configuration", "first"), seeds=("seed", "nunique"),
                epochs=("epochs", "max"), gain=("gain", "mean"))
           .reset_index())
    out["plateaued"] = out["gain"] <= PLATEAU_POINTS
    return out

