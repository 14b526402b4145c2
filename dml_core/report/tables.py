"""Benchmark tables built from run folders alone, with the authors' numbers beside them.

- :func:`benchmark_long`: one row per (table row, feature, K) with numeric columns in percent:
  ``reported_pct``, ``test_sel_pct`` (best epoch on test), ``last_pct``, ``val_sel_pct``. The
  reproduced columns come only from the run folders; a row without a run has ``run_status`` =
  ``"not run"`` and NaN reproduced values (the reported number is never copied over).
- :func:`benchmark_table`: the wide display table (strings, one decimal, "not run").
- :func:`to_markdown`, :func:`to_html`: renderers that need no ``tabulate``.
- :func:`benchmark_markdown`: one section per data set, for READMEs and notebooks.
"""
from __future__ import annotations

import json

import html
import math
import os
from typing import Iterable, Sequence

import pandas as pd

from dml_core.core.clock import fmt_time

from .reported import (BACKBONE_NAMES, DATASET_NAMES, ENTRIES, METHOD_NAMES, PROTOCOL_KS,
                       ReportedEntry, get_reported, parse_key, reported_entries, reported_keys)

NOT_RUN = "not run"
NOT_REPORTED = "not reported"
NA = "n/a"
_ROW_STATUSES_DEFAULT = ("reported", "carry_over")
_STATUS_MARK = {"carry_over": " (carry-over)", "placeholder": " (placeholder)",
                "reference": " (reference)"}


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _crop_label(crop) -> str:
    if crop is True:
        return "cropped"
    if crop is False:
        return "uncropped"
    return "—"


def expected_keys_from_profile(profile: str | os.PathLike | dict) -> list[str]:
    """Best-effort list of the ``reported`` keys a profile's runs aim at.

    Looks through every run's ``parameters`` for (a) strings equal to a known reported key,
    (b) dicts with a ``reported`` key, (c) dicts with ``method``/``dataset``/``backbone`` that
    :func:`dml_core.methods.recipes.get_recipe` turns into a recipe with a ``reported`` key.
    """
    from dml_core.core.io import read_yaml
    from dml_core.core.paths import PROFILES_DIR

    if isinstance(profile, dict):
        data = profile
    else:
        p = os.fspath(profile)
        if not p.endswith((".yaml", ".yml")) and os.sep not in p:
            p = os.fspath(PROFILES_DIR / f"{p}.yaml")
        data = read_yaml(p) or {}
    known = set(reported_keys())
    found: list[str] = []

    def add(k):
        if isinstance(k, str) and k in known and k not in found:
            found.append(k)

    def walk(obj):
        if isinstance(obj, str):
            add(obj)
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                walk(o)
        elif isinstance(obj, dict):
            if "reported" in obj:
                add(obj["reported"])
            if {"method", "dataset", "backbone"} <= set(obj):
                try:
                    from dml_core.methods.recipes import get_recipe

                    add(get_recipe(obj["method"], obj["dataset"], obj["backbone"],
                                   crop=bool(obj.get("crop", False))).get("reported"))
                except (ValueError, TypeError):  # RecipeError: no recipe (yet) for this row
                    pass
            for v in obj.values():
                walk(v)

    for run in data.get("runs", []) or []:
        walk(run.get("parameters", {}))
    return found


def _row_key(run: pd.Series) -> str:
    key = run.get("reported_key")
    if isinstance(key, str) and key:
        return key
    name = run.get("recipe_name")
    if isinstance(name, str) and name:
        return name
    parts = [str(run.get(c)) for c in ("method", "dataset", "backbone")]
    if run.get("crop") in (True, False):
        parts.append(_crop_label(run.get("crop")))
    return "/".join(parts)


def _k_note(entry: ReportedEntry | None, k: int) -> str:
    if entry is None:
        return ""
    for col, cands in entry.ambiguous_k.items():
        if k in cands:
            return f"reported column R@{col} may be " + " or ".join(f"R@{c}" for c in cands)
    return ""


def _entries_for(key: str, include: set[str]) -> list[ReportedEntry]:
    out = []
    for e in ENTRIES:
        if e.key == key and e.status in include:
            out.append(e)
    return out


def benchmark_long(runs_df: pd.DataFrame | None, *, dataset: str | None = None,
                   method: str | None = None, profiles: Iterable[str] | None = None,
                   expected: Iterable[str] | None = None, include_all_reported: bool = True,
                   statuses: Iterable[str] = _ROW_STATUSES_DEFAULT,
                   features: Sequence[str] = ("dense", "binary"),
                   ks: Sequence[int] | None = None) -> pd.DataFrame:
    """Long form: one row per (key, reported variant, run or "not run", feature, K).

    Rows: every run of ``runs_df`` (filtered by ``dataset``/``method``/``profiles``), and every key
    in ``expected`` (default: every reported entry when ``include_all_reported``) that has no run
    (in a given profile, when ``profiles`` is given) as a ``"not run"`` row. ``statuses`` chooses
    which reported entries appear (add ``"placeholder"`` / ``"reference"`` to see those too).
    Reproduced values are percentages computed from the run folder's fractions.
    """
    include = set(statuses)
    runs = runs_df.copy() if runs_df is not None else pd.DataFrame()
    if len(runs):
        if dataset is not None:
            runs = runs[runs["dataset"] == dataset]
        if method is not None:
            runs = runs[runs["method"] == method]
        if profiles is not None:
            runs = runs[runs["profile"].isin(list(profiles))]
    profiles = list(profiles) if profiles is not None else None

    if expected is None:
        expected = [e.key for e in reported_entries(statuses=include) if e.variant == ""] \
            if include_all_reported else []
    exp_keys = []
    for k in expected:
        info = parse_key(k)
        if (dataset is None or info["dataset"] == dataset) and \
                (method is None or info["method"] == method) and k not in exp_keys:
            exp_keys.append(k)

    # (key, run row or None, profile)
    items: list[tuple[str, pd.Series | None, str | None]] = []
    run_keys: dict[tuple[str, str | None], bool] = {}
    for _, run in runs.iterrows():
        key = _row_key(run)
        items.append((key, run, run.get("profile")))
        run_keys[(key, run.get("profile"))] = True
        run_keys[(key, None)] = True
    for key in exp_keys:
        for prof in (profiles or [None]):
            if (key, prof) not in run_keys:
                items.append((key, None, prof))

    rows = []
    for key, run, prof in items:
        info = parse_key(key)
        entries = _entries_for(key, include) or [None]
        for entry in entries:
            ds = (run.get("dataset") if run is not None else None) or info["dataset"]
            use_ks = list(ks) if ks is not None else list(PROTOCOL_KS.get(ds, (1,)))
            shown = []
            for feat in features:
                has_rep = entry is not None and feat in entry.recalls
                has_run = run is not None and any(
                    isinstance(c, str) and c.endswith(f"/{feat}/R@1") and not _isnan(run.get(c))
                    for c in run.index)
                if has_rep or has_run:
                    shown.append(feat)
            if not shown:  # nothing either side (e.g. failed run): still show one row
                shown = [features[0]]
            for feat in shown:
                for k in use_ks:
                    r = {"key": key, "variant": entry.variant if entry else "",
                         "method": (run.get("method") if run is not None else None) or info["method"],
                         "dataset": ds,
                         "backbone": (run.get("backbone") if run is not None else None)
                         or info["backbone"],
                         "crop": run.get("crop") if run is not None else info["crop"],
                         "feature": feat, "k": k,
                         "profile": prof, "run_id": run.get("run_id") if run is not None else None,
                         "run_status": run.get("status") if run is not None else NOT_RUN,
                         "reported_pct": entry.value(feat, k) if entry else None,
                         "reported_status": entry.status if entry else None,
                         "reported_k_note": _k_note(entry, k),
                         "reported_params": entry.params if entry else None,
                         "reported_flops": entry.flops if entry else None,
                         "reported_hardware": entry.hardware if entry else None,
                         "source": entry.source if entry else None,
                         "caveats": "; ".join(entry.caveats) if entry else ""}
                    for sel in ("test_sel", "last", "val_sel", "untrained"):
                        v = run.get(f"{sel}/{feat}/R@{k}") if run is not None else None
                        r[f"{sel}_pct"] = 100.0 * float(v) if not _isnan(v) else math.nan
                        r[f"{sel}_epoch"] = run.get(f"{sel}_epoch") if run is not None else None
                    for col in ("embedding_dim", "epochs", "epochs_completed", "num_parameters",
                                "macs", "train_time_s", "images_per_s", "hardware",
                                "max_steps_per_epoch", "selection"):
                        r[col] = run.get(col) if run is not None else None
                    rows.append(r)
    df = pd.DataFrame(rows)
    if len(df):
        df["reported_pct"] = pd.to_numeric(df["reported_pct"], errors="coerce")
    return df


def _fmt_pct(v) -> str:
    return NA if _isnan(v) else f"{v:.1f}"


def _duration(v) -> str:
    return NA if _isnan(v) else fmt_time(v)


def _fmt_count(v, unit: str = "M") -> str:
    if _isnan(v):
        return NA
    scale = {"M": 1e6, "G": 1e9}[unit]
    return f"{float(v) / scale:.2f}{unit}"


def benchmark_table(runs_df: pd.DataFrame | None, *, dataset: str | None = None,
                    method: str | None = None, profiles: Iterable[str] | None = None,
                    expected: Iterable[str] | None = None, include_all_reported: bool = True,
                    statuses: Iterable[str] = _ROW_STATUSES_DEFAULT,
                    features: Sequence[str] = ("dense", "binary"),
                    ks: Sequence[int] | None = None, show_validation: bool | None = None,
                    details: bool = True) -> pd.DataFrame:
    """The display table: one row per (method, data set, backbone, crop, feature, run).

    For each K: ``R@K reported`` beside ``R@K best-test`` (best epoch on the test set, as the
    seeds select), ``R@K last`` and, when any run has a validation split (or
    ``show_validation``), ``R@K val-sel``. Reproduced cells read "not run" when the row has no
    run, "n/a" when the run lacks the metric; reported cells read "not reported" when the authors
    gave no number. A dagger marks a reported value whose K is ambiguous (see caveats).
    When ``dataset`` is None only R@1 is shown (the K sets differ between data sets).
    """
    if ks is None and dataset is None:
        ks = (1,)
    long = benchmark_long(runs_df, dataset=dataset, method=method, profiles=profiles,
                          expected=expected, include_all_reported=include_all_reported,
                          statuses=statuses, features=features, ks=ks)
    if not len(long):
        return pd.DataFrame()
    if show_validation is None:
        show_validation = bool(long["val_sel_pct"].notna().any())
    group_cols = ["key", "variant", "profile", "run_id", "feature"]
    out_rows = []
    for _, g in long.groupby(group_cols, sort=False, dropna=False):
        first = g.iloc[0]
        not_run = first["run_status"] == NOT_RUN
        r = {"Method": METHOD_NAMES.get(first["method"], first["method"]),
             "Data set": DATASET_NAMES.get(first["dataset"], first["dataset"]),
             "Backbone": BACKBONE_NAMES.get(first["backbone"], first["backbone"]),
             "Crop": _crop_label(first["crop"]) if first["dataset"] in ("car", "cub", "demo")
             else "—",
             "Feature": first["feature"],
             "Profile": first["profile"] if isinstance(first["profile"], str) else "—",
             "Run": first["run_id"] if isinstance(first["run_id"], str) else "—",
             "Status": first["run_status"]}
        for _, kr in g.iterrows():
            k = int(kr["k"])
            rep = kr["reported_pct"]
            if _isnan(rep):
                rep_s = NOT_REPORTED
            else:
                rep_s = f"{rep:.1f}" + ("†" if kr["reported_k_note"] else "") + \
                    _STATUS_MARK.get(kr["reported_status"], "")
            r[f"R@{k} reported"] = rep_s
            for sel, label in (("untrained", "untrained"), ("test_sel", "best-test"), ("last", "last")) + \
                    ((("val_sel", "val-sel"),) if show_validation else ()):
                r[f"R@{k} {label}"] = NOT_RUN if not_run else _fmt_pct(kr[f"{sel}_pct"])
        if details:
            r["Epochs (best-test/last)"] = NOT_RUN if not_run else \
                f"{_fmt_epoch(first['test_sel_epoch'])}/{_fmt_epoch(first['last_epoch'])}"
            r["Params reported"] = first["reported_params"] or NOT_REPORTED
            r["Params run"] = NOT_RUN if not_run else _fmt_count(first["num_parameters"], "M")
            r["FLOPs reported"] = first["reported_flops"] or NOT_REPORTED
            r["MACs run"] = NOT_RUN if not_run else _fmt_count(first["macs"], "G")
            r["Train time"] = NOT_RUN if not_run else _duration(first["train_time_s"])
            r["img/s"] = NOT_RUN if not_run else (
                NA if _isnan(first["images_per_s"]) else f"{float(first['images_per_s']):.0f}")
            r["Hardware (run)"] = NOT_RUN if not_run else (first["hardware"] or NA)
            r["Hardware (authors)"] = first["reported_hardware"] or NOT_REPORTED
            r["Caveats"] = first["caveats"] or ""
            r["Source"] = first["source"] or ""
        out_rows.append(r)
    return pd.DataFrame(out_rows)


def _fmt_epoch(v) -> str:
    return "?" if _isnan(v) else str(int(v))


# ---------------------------------------------------------------------------------------------
# Renderers (pandas' to_markdown needs tabulate, which is not a dependency)
def _cell(v) -> str:
    if _isnan(v) if not isinstance(v, str) else False:
        return NA
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured markdown table of ``df`` (no extra dependency)."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for idx, row in df.iterrows():
        cells = ([idx] if index else []) + list(row.values)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_html(df: pd.DataFrame, index: bool = False, caption: str | None = None) -> str:
    """A plain HTML table (escaped) for notebooks and the batch index page."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    out = ['<table class="dml-benchmark">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) +
               "</tr></thead><tbody>")
    for idx, row in df.iterrows():
        cells = ([idx] if index else []) + list(row.values)
        out.append("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out) + "\n"


def benchmark_markdown(runs_df: pd.DataFrame | None, *, profiles: Iterable[str] | None = None,
                       datasets: Sequence[str] = ("car", "cub", "sop", "isc"),
                       details: bool = False, **kwargs) -> str:
    """One markdown section per data set with :func:`benchmark_table`, and the caveats listed."""
    parts = []
    prof = ", ".join(profiles) if profiles else "all profiles"
    for ds in datasets:
        t = benchmark_table(runs_df, dataset=ds, profiles=profiles, details=True, **kwargs)
        if not len(t):
            continue
        parts.append(f"### {DATASET_NAMES.get(ds, ds)} ({prof})\n")
        parts.append("Reported = the authors' README; untrained = the same network before training "
                     "(the baseline to beat); best-test = best epoch on the test set "
                     "(the authors' selection); last = last epoch. Values in %.\n")
        shown = t if details else t.drop(columns=["Caveats", "Source", "Epochs (best-test/last)",
                                                  "Params reported", "FLOPs reported"],
                                         errors="ignore")
        parts.append(to_markdown(shown))
        cav = t[["Method", "Backbone", "Crop", "Caveats"]].drop_duplicates()
        cav = cav[cav["Caveats"] != ""]
        if len(cav):
            parts.append("\nCaveats:\n")
            for _, c in cav.iterrows():
                crop = f" {c['Crop']}" if c["Crop"] != "—" else ""
                parts.append(f"- {c['Method']} {c['Backbone']}{crop}: {c['Caveats']}\n")
        parts.append("\n")
    return "".join(parts)


__all__ = ["NOT_RUN", "NOT_REPORTED", "benchmark_long", "benchmark_table", "benchmark_markdown",
           "expected_keys_from_profile", "to_markdown", "to_html", "get_reported"]


# ---------------------------------------------------------------------------------------------
# Compact tables for the report book: one row per (method, data set, backbone, crop, setting)
# Recipe keys that never name a setting: run identity, budgets shortened for a profile, seeds.
_NOT_A_SETTING = {"seed", "name", "base_name", "overrides", "shortened", "reported",
                  "base_reported", "epochs", "max_steps_per_epoch", "num_workers", "eval_every",
                  "eval_batch_size"}
HEADLINE_METRICS = (("dense", "R@1"), ("binary", "R@1"))


def _fmt_setting_value(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


def run_settings(runs_df: pd.DataFrame) -> pd.Series:
    """Per run (index of ``runs_df``): the recipe keys in which it differs from the other runs of
    its (profile, method, data set, backbone, crop), as ``"momentum = 0.1"``; ``""`` when none.
    Seeds and budget keys are not settings: runs differing only there are repeats of one setting.
    """
    out = pd.Series("", index=runs_df.index, dtype=object)
    if not len(runs_df) or "recipe" not in runs_df.columns:
        return out
    group = ["profile", "method", "dataset", "backbone", "crop"]
    keyed = runs_df[group].astype(str).agg("|".join, axis=1)
    for _, idx in keyed.groupby(keyed).groups.items():
        recipes = {i: (runs_df.at[i, "recipe"] if isinstance(runs_df.at[i, "recipe"], dict) else {})
                   for i in idx}
        keys = sorted({k for r in recipes.values() for k in r} - _NOT_A_SETTING)
        varying = [k for k in keys
                   if len({repr(r.get(k)) for r in recipes.values()}) > 1]
        for i, r in recipes.items():
            out[i] = ", ".join(f"{k} = {_fmt_setting_value(r.get(k))}" for k in varying)
    return out


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the ``confidence`` Student-t interval, n) of finite ``values``.

    The half-width is NaN for n < 2 (one seed: no interval). Computed by
    :func:`dml_core.report.stats.mean_ci` (a local t-interval only if that module is absent).
    """
    vals = [float(v) for v in values if not _isnan(v)]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, 0
    from .stats import mean_ci  # the one source of the statistics over seeds

    iv = mean_ci(vals, confidence)
    return float(iv.mean), float(iv.half_width) if n > 1 else math.nan, n


def _fmt_mean(mean: float, half: float, n: int) -> str:
    if n == 0 or _isnan(mean):
        return NA
    if n < 2 or _isnan(half):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {half:.1f}"


def _done(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"].isin(["complete", "done"])] if len(runs) else runs


def headline_selection(runs_df: pd.DataFrame | None) -> str:
    """``"val_sel"`` (the epoch chosen on a validation split) when any run has one, else
    ``"test_sel"`` (the best epoch on the test set, the authors' choice)."""
    if runs_df is not None and len(runs_df) and "val_sel/dense/R@1" in runs_df and \
            runs_df["val_sel/dense/R@1"].notna().any():
        return "val_sel"
    return "test_sel"


SELECTION_WHERE = {"val_sel": "validation", "test_sel": "test (best)", "last": "last epoch"}


def _headline_col(feature: str, metric: str) -> str:
    """``"R@1 (reported | reproduced)"``, ``"binary R@1 (reported | reproduced)"``."""
    return f"{'' if feature == 'dense' else feature + ' '}{metric} (reported | reproduced)"


def selected_values(runs: pd.DataFrame, metric: str = "dense/R@1",
                    selection: str = "auto") -> tuple[pd.Series, str]:
    """(values, where chosen) of ``metric`` for the runs of one row. ``selection`` "auto": the
    epoch chosen on the validation split when every run has one, else the best epoch on test
    (the authors' choice); or a fixed ``"val_sel"`` / ``"test_sel"`` / ``"last"``."""
    if selection == "auto":
        col = f"val_sel/{metric}"
        selection = "val_sel" if len(runs) and col in runs and runs[col].notna().all() \
            else "test_sel"
    col = f"{selection}/{metric}"
    vals = runs[col] if col in runs else pd.Series([math.nan] * len(runs), index=runs.index)
    return vals, SELECTION_WHERE.get(selection, selection)


def compact_table(runs_df: pd.DataFrame | None, *, profiles: Iterable[str] | None = None,
                  expected: Iterable[str] | None = None, selection: str = "auto",
                  metrics: Sequence[tuple[str, str]] = HEADLINE_METRICS) -> pd.DataFrame:
    """The headline table: one row per (method, data set, backbone, crop, setting).

    Columns: Method, Data set, Backbone, Crop, Setting, Seeds, Epoch chosen on, then per
    (feature, metric) ``"R@1 (reported | reproduced)"``, ``"binary R@1 (reported | reproduced)"``
    (percent; reproduced = mean over the seeds at the epoch of ``selection``, see
    :func:`selected_values`, with ± the half-width of its 95 % interval once two or more seeds
    exist),
    ``untrained R@1`` (the network before training) and ``last-epoch R@1``. Authors' rows in
    ``expected`` (reported keys) that have no run read "not run" on the reproduced side. A failed
    run's row reads its status. No authors' number is ever put in a reproduced cell.
    """
    runs = runs_df.copy() if runs_df is not None and len(runs_df) else pd.DataFrame(
        columns=["profile", "method", "dataset", "backbone", "crop", "status", "recipe"])
    if profiles is not None and len(runs):
        runs = runs[runs["profile"].isin(list(profiles))]
    runs = runs[runs["method"].notna()] if len(runs) else runs
    runs = runs.assign(_setting=run_settings(runs)) if len(runs) else runs.assign(_setting="")
    rows = []
    seen_keys: set[str] = set()
    order = ["method", "dataset", "backbone", "crop", "_setting"]
    if len(runs):
        grouped = runs.assign(_crop=runs["crop"].astype(str)).groupby(
            ["method", "dataset", "backbone", "_crop", "_setting"], sort=False, dropna=False)
        for _, g in grouped:
            first = g.iloc[0]
            key = first.get("reported_key") if isinstance(first.get("reported_key"), str) else None
            if key:
                seen_keys.add(key)
            entry = get_reported(key) if key else None
            done = _done(g)
            r = {"Method": METHOD_NAMES.get(first["method"], first["method"]),
                 "Data set": DATASET_NAMES.get(first["dataset"], first["dataset"]),
                 "Backbone": BACKBONE_NAMES.get(first["backbone"], first["backbone"]),
                 "Crop": _crop_label(first["crop"]) if first["dataset"] in ("car", "cub") else "—",
                 "Setting": first["_setting"] or "—",
                 "Seeds": str(len(done)) if len(done) == len(g) else f"{len(done)} of {len(g)}",
                 "Epoch chosen on": selected_values(done, "dense/R@1", selection)[1]
                 if len(done) else "—"}
            for feat, met in metrics:
                rep = entry.value(feat, int(met.split("@")[1])) if entry and met.startswith("R@") \
                    else None
                rep_s = "—" if rep is None else f"{rep:.1f}" + _STATUS_MARK.get(entry.status, "")
                if len(done):
                    rep_run = _fmt_mean(*mean_interval(
                        [100 * float(v) for v in selected_values(done, f"{feat}/{met}",
                                                                 selection)[0]]))
                else:
                    rep_run = str(g["status"].iloc[0])
                r[_headline_col(feat, met)] = f"{rep_s} | {rep_run}"
            for sel, label in (("untrained", "untrained R@1"), ("last", "last-epoch R@1")):
                col = f"{sel}/dense/R@1"
                r[label] = _fmt_mean(*mean_interval(
                    [100 * float(v) for v in done[col]])) if len(done) and col in done else NA
            rows.append(r)
    for key in expected or []:
        if key in seen_keys:
            continue
        entry = get_reported(key)
        info = parse_key(key)
        r = {"Method": METHOD_NAMES.get(info["method"], info["method"]),
             "Data set": DATASET_NAMES.get(info["dataset"], info["dataset"]),
             "Backbone": BACKBONE_NAMES.get(info["backbone"], info["backbone"]),
             "Crop": _crop_label(info["crop"]) if info["dataset"] in ("car", "cub") else "—",
             "Setting": "—", "Seeds": "0", "Epoch chosen on": "—"}
        for feat, met in metrics:
            rep = entry.value(feat, int(met.split("@")[1])) if entry else None
            rep_s = "—" if rep is None else f"{rep:.1f}" + _STATUS_MARK.get(entry.status, "")
            r[_headline_col(feat, met)] = f"{rep_s} | {NOT_RUN}"
        r["untrained R@1"] = r["last-epoch R@1"] = NOT_RUN
        rows.append(r)
    return pd.DataFrame(rows)


def details_table(runs_df: pd.DataFrame | None, *, profiles: Iterable[str] | None = None,
                  selection: str = "test_sel") -> pd.DataFrame:
    """One row per run: every number behind the headline table, and how it was produced
    (epochs, parameters, MACs, time, throughput, hardware; the authors' hardware, source and
    caveats). Percentages with one decimal; written as ``details.csv`` beside the book."""
    if runs_df is None or not len(runs_df):
        return pd.DataFrame()
    runs = runs_df[runs_df["method"].notna()]
    if profiles is not None:
        runs = runs[runs["profile"].isin(list(profiles))]
    settings = run_settings(runs)
    rows = []
    for i, run in runs.iterrows():
        key = run.get("reported_key") if isinstance(run.get("reported_key"), str) else None
        entry = get_reported(key) if key else None
        recipe = run.get("recipe") if isinstance(run.get("recipe"), dict) else {}
        r = {"Run": run["run_id"], "Profile": run["profile"], "Status": run["status"],
             "Method": METHOD_NAMES.get(run["method"], run["method"]),
             "Data set": DATASET_NAMES.get(run["dataset"], run["dataset"]),
             "Backbone": BACKBONE_NAMES.get(run["backbone"], run["backbone"]),
             "Crop": _crop_label(run["crop"]) if run["dataset"] in ("car", "cub") else "—",
             "Setting": settings[i] or "—", "Seed": recipe.get("seed", NA),
             "Epochs (best-test/last)": f"{_fmt_epoch(run.get('test_sel_epoch'))}/"
                                        f"{_fmt_epoch(run.get('last_epoch'))}"}
        for sel, label in (("untrained", "untrained"), (selection, "best-test"), ("last", "last"),
                           ("val_sel", "val-sel")):
            for feat in ("dense", "binary"):
                v = run.get(f"{sel}/{feat}/R@1")
                r[f"R@1 {feat} {label}"] = _fmt_pct(100 * float(v) if not _isnan(v) else v)
        v = run.get(f"{selection}/dense/MAP@R")
        r["MAP@R best-test"] = _fmt_pct(100 * float(v) if not _isnan(v) else v)
        r.update({"Params run": _fmt_count(run.get("num_parameters"), "M"),
                  "MACs run": _fmt_count(run.get("macs"), "G"),
                  "Train time": _duration(run.get("train_time_s")),
                  "img/s": NA if _isnan(run.get("images_per_s")) else
                  f"{float(run.get('images_per_s')):.0f}",
                  "Hardware (run)": run.get("hardware") or NA,
                  "Reported key": key or "—",
                  "Params reported": (entry.params if entry else None) or "—",
                  "Hardware (authors)": entry.hardware if entry else "—",
                  "Source": entry.source if entry else "—",
                  "Caveats": "; ".join(entry.caveats) if entry else ""})
        rows.append(r)
    return pd.DataFrame(rows)


def side_by_side(runs_df: pd.DataFrame | None, vary: str, *, selection: str = "auto",
                 metric: str = "dense/R@1", profiles: Iterable[str] | None = None) -> pd.DataFrame:
    """Runs that differ only in the recipe key ``vary`` (e.g. ``"positive_proxy"``,
    ``"momentum"``; every other key equal, seed and name aside), side by side: one row per group
    of such runs (method, data set, backbone, crop and the other keys), one column per
    value of ``vary`` (mean over seeds ± 95 % half-width, percent). Empty when no group has two
    values. For the positive proxy off/on and the momentum sweep."""
    if runs_df is None or not len(runs_df) or "recipe" not in runs_df.columns:
        return pd.DataFrame()
    runs = _done(runs_df[runs_df["method"].notna()])
    if profiles is not None:
        runs = runs[runs["profile"].isin(list(profiles))]
    if not len(runs):
        return pd.DataFrame()
    values = runs["recipe"].map(lambda r: r.get(vary) if isinstance(r, dict) else None)
    # every other recipe key equal (seed and name aside): a reproduction run and a fair run of
    # one method differ in far more than ``vary`` and are not shown side by side
    others = runs["recipe"].map(lambda r: json.dumps(
        {k: v for k, v in r.items() if k not in (vary, "seed", "name")}, sort_keys=True,
        default=str) if isinstance(r, dict) else "")
    runs = runs.assign(_v=values.map(_fmt_setting_value), _crop=runs["crop"].astype(str),
                       _others=others)
    runs = runs[values.notna()]
    rows = []
    for (m, ds, bb, _c, _o), g in runs.groupby(["method", "dataset", "backbone", "_crop",
                                                "_others"], sort=False):
        if g["_v"].nunique() < 2:
            continue
        r = {"Method": METHOD_NAMES.get(m, m), "Data set": DATASET_NAMES.get(ds, ds),
             "Backbone": BACKBONE_NAMES.get(bb, bb)}

        def order(v):
            try:
                return (0, float(v), "")
            except ValueError:
                return (1, 0.0, v)

        for v in sorted(g["_v"].unique(), key=order):
            vals, where = selected_values(g[g["_v"] == v], metric, selection)
            r[f"{vary} = {v}"] = _fmt_mean(*mean_interval([100 * float(x) for x in vals]))
        r["Epoch chosen on"] = where
        rows.append(r)
    return pd.DataFrame(rows)


__all__ += ["compact_table", "details_table", "side_by_side", "run_settings", "mean_interval",
            "headline_selection", "selected_values", "HEADLINE_METRICS"]
