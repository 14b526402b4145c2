"""Read run folders (their summary and metrics) into one pandas DataFrame.

A run folder is any folder under ``runs/<profile>/`` holding a summary
(:func:`dml_core.core.run_folder.find_runs`; the schema of docs/ARCHITECTURE.md). Nested folders are allowed (a notebook may train several runs below its own
``runs/<profile>/<id>/``); the run id is the path relative to the profile folder.

Metric columns (fractions in [0, 1], as in the run folders) come in three selections:

- ``test_sel/<feature>/<metric>``: the epoch with the best **test** dense R@1 (what the original repositories report);
- ``last/<feature>/<metric>``: the last evaluated epoch;
- ``val_sel/<feature>/<metric>``: the epoch with the best **validation** dense R@1 (only when the
  run has a validation split), its test metrics.

They are taken from the per-epoch metrics when present, else from the summary's ``best``/``last``
(``best`` counts as ``test_sel`` or ``val_sel`` according to ``selection``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from dml_core.core import paths
from dml_core.core.run_folder import RunFolder, find_runs

SELECTIONS = ("test_sel", "last", "val_sel", "untrained")
SELECTION_LABELS = {"test_sel": "best epoch on test", "last": "last epoch",
                    "val_sel": "validation-selected", "untrained": "untrained network (epoch 0)"}
SELECT_METRIC = "dense/R@1"


def _metrics_frame(run: RunFolder) -> pd.DataFrame | None:
    """The run's per-epoch metrics (:meth:`RunFolder.read_metrics`) as a DataFrame; None when
    it has none."""
    rows = run.read_metrics()
    return pd.DataFrame(rows) if rows else None


def _epoch_metrics(row: pd.Series, prefix: str) -> dict[str, float]:
    """``test/dense/R@1`` -> ``dense/R@1`` for the columns starting with ``prefix/``."""
    out = {}
    for col, v in row.items():
        if isinstance(col, str) and col.startswith(prefix + "/"):
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isnan(v):
                out[col[len(prefix) + 1:]] = v
    return out


def _pick(df: pd.DataFrame, col: str) -> pd.Series | None:
    if col not in df.columns:
        return None
    s = pd.to_numeric(df[col], errors="coerce")
    if s.notna().sum() == 0:
        return None
    return df.loc[s.idxmax()]  # first epoch reaching the maximum


def _selections(summary: dict, metrics: pd.DataFrame | None) -> dict[str, tuple[int | None, dict]]:
    """selection name -> (epoch, {feature/metric: value on test})."""
    out: dict[str, tuple[int | None, dict]] = {}
    if metrics is not None:
        evaluated = metrics
        test_cols = [c for c in metrics.columns if str(c).startswith("test/")]
        if test_cols:
            evaluated = metrics[metrics[test_cols].notna().any(axis=1)]
        if len(evaluated):
            last = evaluated.iloc[-1]
            out["last"] = (int(last["epoch"]) if "epoch" in last else None,
                           _epoch_metrics(last, "test"))
            row = _pick(evaluated, "test/" + SELECT_METRIC)
            if row is not None:
                out["test_sel"] = (int(row["epoch"]) if "epoch" in row else None,
                                   _epoch_metrics(row, "test"))
            row = _pick(evaluated, "val/" + SELECT_METRIC)
            if row is not None:
                out["val_sel"] = (int(row["epoch"]) if "epoch" in row else None,
                                  _epoch_metrics(row, "test"))
    # fall back on the summary
    def strip(m: dict) -> dict:
        return {k[5:]: v for k, v in (m or {}).items()
                if isinstance(k, str) and k.startswith("test/") and isinstance(v, (int, float))}

    best, last = summary.get("best") or {}, summary.get("last") or {}
    sel = "val_sel" if summary.get("selection") == "validation" else "test_sel"
    if sel not in out and best.get("metrics"):
        out[sel] = (best.get("epoch"), strip(best["metrics"]))
    if "last" not in out and last.get("metrics"):
        out["last"] = (last.get("epoch"), strip(last["metrics"]))
    untrained = summary.get("untrained") or {}
    if untrained.get("metrics"):
        out["untrained"] = (0, strip(untrained["metrics"]))
    return out


def _hardware_str(hw: dict | None) -> str:
    if not hw:
        return "unknown"
    gpu = hw.get("gpu")
    if gpu:
        return str(gpu)
    cpu, dev = hw.get("cpu"), hw.get("device")
    return ", ".join(str(x) for x in (dev, cpu) if x) or "unknown"


def _macs(summary: dict) -> float | None:
    for key in ("macs", "num_macs", "MACs"):
        if isinstance(summary.get(key), (int, float)):
            return float(summary[key])
    cx = summary.get("complexity")
    if isinstance(cx, dict) and isinstance(cx.get("macs"), (int, float)):
        return float(cx["macs"])
    return None


def read_run(run_dir: str | os.PathLike, profile: str | None = None,
             run_id: str | None = None) -> dict:
    """One run folder -> one flat dict (a row of :func:`load_runs`)."""
    run = RunFolder(run_dir)
    summary = run.read_summary()
    row: dict = {"profile": profile, "run_id": run_id or run.root.name, "run_dir": str(run.root)}
    if summary is None:
        row.update(status="unreadable", recipe={})
        return row
    recipe = summary.get("recipe") or run.read_config() or {}  # a broken config loses columns
    metrics = _metrics_frame(run)
    hw = summary.get("hardware") or {}
    row.update({
        "status": summary.get("status", "unknown"),
        "recipe_name": recipe.get("name"),
        "method": recipe.get("method"),
        "dataset": recipe.get("dataset"),
        "backbone": recipe.get("backbone"),
        "crop": recipe.get("crop"),
        "embedding_dim": recipe.get("embedding_dim"),
        "momentum": recipe.get("momentum"),
        "reported_key": recipe.get("reported"),
        "epochs": recipe.get("epochs"),
        "max_steps_per_epoch": recipe.get("max_steps_per_epoch"),
        "seed": recipe.get("seed"),
        "protocol": summary.get("protocol"),
        "selection": summary.get("selection"),
        "epochs_completed": summary.get("epochs_completed"),
        "train_time_s": summary.get("train_time_s"),
        "images_per_s": summary.get("images_per_s"),
        "num_parameters": summary.get("num_parameters"),
        "macs": _macs(summary),
        "hardware": _hardware_str(hw),
        "gpu": hw.get("gpu"),
        "cpu": hw.get("cpu"),
        "device": hw.get("device"),
        "git_commit": summary.get("git_commit"),
        "error": summary.get("error"),
        "has_metrics_csv": metrics is not None,
        "has_features": run.best_features.is_file(),
        "recipe": recipe,
    })
    for sel, (epoch, vals) in _selections(summary, metrics).items():
        row[f"{sel}_epoch"] = epoch
        for k, v in vals.items():
            row[f"{sel}/{k}"] = v
    return row


def load_runs(source: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
              profiles: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per run folder that has a summary.

    ``source`` is either the runs root (default :func:`dml_core.core.paths.runs_root`; its sub-folders
    are profiles, restricted to ``profiles`` when given) or a list of profile folders (the
    profile name is the folder name). Failed, running and unreadable runs are kept; their
    ``status`` column says so. Metrics are fractions in [0, 1]; see the module docstring.
    """
    if isinstance(source, (list, tuple)):
        profile_dirs = [Path(p) for p in source]
        if profiles is not None:
            wanted = set(profiles)
            profile_dirs = [p for p in profile_dirs if p.name in wanted]
    else:
        root = Path(source) if source is not None else paths.runs_root()
        if profiles is not None:
            profile_dirs = [root / p for p in profiles]
        else:
            profile_dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    rows = []
    for pdir in profile_dirs:
        for run in find_runs(pdir):
            rows.append(read_run(run.root, profile=pdir.name,
                                 run_id=run.root.relative_to(pdir).as_posix()))
    base = ["profile", "run_id", "status", "method", "dataset", "backbone", "crop",
            "embedding_dim", "reported_key", "recipe_name", "run_dir"]
    df = pd.DataFrame(rows)
    for col in base:
        if col not in df.columns:
            df[col] = pd.Series(dtype=object)
    return df[base + [c for c in df.columns if c not in base]].reset_index(drop=True)


def load_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """A run's per-epoch metrics, one row per epoch (empty DataFrame when it has none)."""
    df = _metrics_frame(RunFolder(run_dir))
    return df if df is not None else pd.DataFrame()


# ----------------------------------------------------------------- configurations across seeds
#: Recipe keys that do not define a configuration: the seed varies within one; the others are
#: names, records of overrides, or settings that cannot change a result (``cache``: the cached
#: input pipeline is bit-identical to the PIL path).
NON_CONFIG_KEYS = frozenset({"seed", "name", "overrides", "base_name", "base_reported",
                             "shortened", "num_workers", "eval_batch_size", "reported", "cache"})
_SEEDED_ID = re.compile(r"(?P<stem>.+)_s(?P<seed>\d+)")  # fullmatch: no "$"


def config_key(recipe: dict) -> str:
    """A short hash of the recipe without :data:`NON_CONFIG_KEYS`: runs that differ only by
    their seed share it."""
    try:  # a renamed recipe key must not split one configuration in two
        from dml_core.methods.recipes import KEY_ALIASES
    except ImportError:
        KEY_ALIASES = {}  # noqa: N806
    core = {KEY_ALIASES.get(k, k): v for k, v in (recipe or {}).items()
            if k not in NON_CONFIG_KEYS}
    text = json.dumps(core, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def with_configs(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (:func:`load_runs`) plus the columns that group seeds of one configuration:

    * ``config``: :func:`config_key` of the run's recipe (same recipe but the seed → same key);
    * ``variant``: the run id without its ``_s<seed>`` suffix (and without the ``fair_``
      prefix of the fair protocol's runs, e.g. ``fair_pp_on_s3`` → ``pp_on``), else the run id;
    * ``label``: the fair protocol's label of the variant, "<method>, published recipe" for a
      reproduction run (``paper_<method>``), else the variant;
    * ``seed``: the recipe's seed (int).

    Two runs with the same variant but different configs (a recipe changed between batches)
    keep separate ``config`` values, so they are never averaged together.
    """
    out = runs.copy()
    if not len(out):
        for c in ("config", "variant", "label", "seed"):
            out[c] = pd.Series(dtype=object)
        return out
    from dml_core.methods.fair import VARIANTS
    from dml_core.methods.registry import SPECS

    labels = {k: v.label for k, v in VARIANTS.items()}
    # the reproduction runs (fair.reproduction_runs: paper_<method>_s<seed>)
    labels.update({f"paper_{k}": f"{spec.label}, published recipe" for k, spec in SPECS.items()})
    recipes = out["recipe"] if "recipe" in out else pd.Series([{}] * len(out), index=out.index)
    out["config"] = [config_key(r if isinstance(r, dict) else {}) for r in recipes]
    variants = []
    for rid in out["run_id"].astype(str):
        m = _SEEDED_ID.fullmatch(rid.split("/")[0])
        stem = m.group("stem") if m else rid
        variants.append(stem[len("fair_"):] if stem.startswith("fair_") else stem)
    out["variant"] = variants
    out["label"] = [labels.get(v, v) for v in variants]
    seeds = [r.get("seed") if isinstance(r, dict) else None for r in recipes]
    out["seed"] = pd.array([int(s) if s is not None else None for s in seeds], dtype="Int64")
    return out
