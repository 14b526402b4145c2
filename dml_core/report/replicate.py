r"""Store a profile's per-seed values, and check that a fresh batch replicates them.

The numbers the README quotes come from ``results/<profile>/`` (tracked): ``per_seed.csv`` (one
row per variant × seed × metric: every value behind a mean, at full precision),
``summary.csv`` / ``headline.csv`` / ``paired.csv`` (means with 95% intervals of R@1 and MAP@R,
paired differences with Holm-adjusted p-values; :func:`dml_core.report.stats.summarise`),
``summary.md`` (the same as Markdown tables), ``plateau.csv`` (the plateau criterion of
:mod:`dml_core.report.plateau` per configuration), ``environment.json`` (the machine and library
versions that produced them) and ``metrics/<run id>.csv`` (every seeded run's per-epoch
``metrics.csv``: the curves behind the selected epochs and the plateau check).

    python -m dml_core.report.replicate --profile study --save   # runs/study -> results/study (make study)
    python -m dml_core.report.replicate --profile study          # fresh runs/study vs results/study

**The check** (:func:`compare`, :func:`paired_verdicts`, :func:`verdict_of`). A *number* is one
(variant, stored metric); the committed study and the fresh batch each give its per-seed values.

* **Same machine** (the fresh runs' CPU/GPU, the instruction set torch's CPU kernels use and the
  library versions equal ``environment.json``):
  training is deterministic, so every per-seed value must be identical, bit for bit. A number
  with any differing seed is **not replicated** (the code, the data or the environment changed).
* **Another machine** (or an unknown one): floating-point differences grow during training, so
  the seeds are compared as two samples. For every number, Welch's test of equal means and an
  equivalence test (two one-sided Welch tests, TOST) of a shift smaller than ``margin``
  (:data:`MARGIN`, 5 points). Both families (one test per number) are Holm-adjusted, so each
  kind of claim has a family-wise error of at most α = 0.05:

  - **not replicated**: the Holm-adjusted Welch p-value is at most α (a shift is detected);
  - **replicated**: else, when the Holm-adjusted equivalence p-value is at most α (the shift is
    within ± margin);
  - **inconclusive**: neither (too few seeds to tell; the table gives the shift the test would
    detect with 80% power).

* **Other pretrained weights** (``environment.json``'s ``pretrained``, the weights file the runs
  fine-tuned, differs from the fresh runs'): the result is **not comparable**, exit code 1, and
  the table is shown for information only: another experiment, whose numbers need not agree.
  The demo's stand-in trunk is built on each machine, on a numeric path pinned so that every
  x86-64 CPU builds the same file (:mod:`dml_core.models.standin`); other torch or MKL
  versions, or another architecture, can still build another one.

* **Paired verdicts**: the report's paired comparisons (:data:`dml_core.methods.fair.
  COMPARISONS` on R@1 and MAP@R, Holm-adjusted as the report does) are recomputed from each
  side's seeds. A verdict that *flips* (significant both times, opposite signs) is **not
  replicated**; one that is significant on one side only is **inconclusive**.

Exit code: 0 when nothing is "not replicated" (inconclusive numbers are listed), 1 when
something is not replicated, a configuration's recipe changed, or a committed number has no
fresh runs; 2 on bad input. The check's false-alarm rate (a study that replicates, run on
another machine, called "not replicated") is estimated by :func:`false_alarm_rate`, which
simulates pairs of studies from the committed per-seed values, and printed with the verdict.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from dml_core.core import io, paths

#: The metrics stored per seed (selection/feature/metric; fractions in [0, 1]).
METRICS = ("val_sel/dense/R@1", "val_sel/binary/R@1", "val_sel/dense/MAP@R",
           "last/dense/R@1", "untrained/dense/R@1")
#: The metrics of the report's paired verdicts (:data:`dml_core.report.stats.HEADLINE_METRICS`).
PAIRED_METRICS = ("val_sel/dense/R@1", "val_sel/dense/MAP@R")
KEY = ["variant", "metric"]
#: The equivalence margin of the check on another machine (fraction: 0.05 = 5 points).
MARGIN = 0.05
#: The family-wise error rate of each kind of claim.
ALPHA = 0.05
#: The false-alarm rate the check is designed to stay under.
FALSE_ALARM_GOAL = 0.05
#: What identifies a machine and its libraries (from each run's summary.json).
ENVIRONMENT_KEYS = ("device", "cpu", "cpu_isa", "gpu", "torch", "torchvision", "numpy", "python")
PRETRAINED_KEY = "pretrained"  # environment.json: the pretrained weights the runs fine-tuned


def results_dir(profile: str, root: Path | None = None) -> Path:
    """``results/<profile>`` (``profile`` must be a folder name: ValueError otherwise)."""
    return ((Path(root) if root is not None else paths.REPO_ROOT) / "results"
            / paths.check_name(profile, "profile name"))


def _profile_runs(profile: str, runs_root: Path | None = None) -> pd.DataFrame:
    from dml_core.report import load_runs
    from dml_core.report.runs import with_configs

    root = Path(runs_root) if runs_root is not None else paths.runs_root()
    runs = with_configs(load_runs(root, profiles=[paths.check_name(profile, "profile name")]))
    if not len(runs):
        return runs
    return runs[(runs["status"] == "complete") & runs["seed"].notna()
                & runs["run_id"].astype(str).str.fullmatch(r".*_s\d+")]


def per_seed_values(profile: str, runs_root: Path | None = None) -> pd.DataFrame:
    """Long table (variant, label, config, seed, metric, value) of the profile's complete
    seeded runs (run ids ``..._s<seed>``), from ``runs/<profile>/``."""
    runs = _profile_runs(profile, runs_root)
    if not len(runs):
        return pd.DataFrame(columns=["variant", "label", "config", "seed", "metric", "value"])
    rows = []
    for _, r in runs.iterrows():
        for m in METRICS:
            v = r.get(m)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                rows.append({"variant": r["variant"], "label": r["label"], "config": r["config"],
                             "seed": int(r["seed"]), "metric": m, "value": float(v)})
    out = pd.DataFrame(rows)
    return out.sort_values(["variant", "metric", "seed"]).reset_index(drop=True) if len(out) \
        else out


def environment(profile: str, runs_root: Path | None = None) -> dict:
    """The machine and library versions of the profile's seeded runs (from their summary.json):
    ``{key: value}`` for :data:`ENVIRONMENT_KEYS`, and ``pretrained``: the file of the
    pretrained weights they fine-tuned (its name carries the first digits of its SHA-256; None
    for runs from random weights); a key whose runs disagree reads "mixed"."""
    from dml_core.core.run_folder import RunFolder

    runs = _profile_runs(profile, runs_root)
    seen: dict[str, set] = {k: set() for k in (*ENVIRONMENT_KEYS, PRETRAINED_KEY)}
    for run_dir in runs.get("run_dir", pd.Series(dtype=object)):
        summary = RunFolder(run_dir).read_summary()
        if summary is None:
            continue
        hw, ver = summary.get("hardware") or {}, summary.get("versions") or {}
        for k in ENVIRONMENT_KEYS:
            seen[k].add(str(hw.get(k, ver.get(k))))
        weights = (summary.get("provenance") or {}).get("weights") or {}
        if weights.get("file"):
            seen[PRETRAINED_KEY].add(str(weights["file"]))
    return {k: (next(iter(v)) if len(v) == 1 else "mixed" if v else None)
            for k, v in seen.items()}


def other_pretrained(env_committed: dict | None, env_fresh: dict) -> str | None:
    """Why the fresh runs are another experiment than the committed ones, in words: they
    fine-tuned other pretrained weights (the demo's stand-in is built on each machine: the same
    file on every x86-64 CPU, but not across torch or MKL versions, ``docs/DEMO.md``); None
    when the committed record names no weights or both name the same."""
    committed = (env_committed or {}).get(PRETRAINED_KEY)
    fresh = env_fresh.get(PRETRAINED_KEY)
    if not committed or committed == fresh:
        return None
    return (f"the fresh runs fine-tuned other pretrained weights ({fresh}) than the committed "
            f"ones ({committed}): another experiment, whose numbers need not agree")


def _known(env: dict | None) -> bool:
    """Whether ``env`` identifies one machine and its libraries (device, CPU and torch known)."""
    return bool(env) and all(env.get(k) not in (None, "None", "mixed")
                             for k in ("device", "cpu", "torch"))


def save(profile: str, runs_root: Path | None = None, root: Path | None = None,
         readme: bool = False) -> list[str]:
    """Write results/<profile>/{per_seed.csv, summary.csv, headline.csv, paired.csv,
    summary.md, plateau.csv, environment.json, metrics/<run id>.csv}; with ``readme`` also the generated
    block of README.md (:func:`readme_block`). A metrics file of a run the profile no longer
    has is removed."""
    from dml_core.core.run_folder import RunFolder
    from dml_core.report.plateau import plateau_table
    from dml_core.report.stats import summarise

    values = per_seed_values(profile, runs_root)
    if not len(values):
        raise SystemExit(f"no complete seeded runs under runs/{profile}: run "
                         f"`python -m dml_core.batch --profile {profile}` first")
    out = results_dir(profile, root)
    runs = _profile_runs(profile, runs_root)
    stats = summarise(runs)
    plateau = plateau_labelled(plateau_table(runs), stats)
    files = {"per_seed.csv": values.to_csv(index=False),  # full precision: exact comparisons
             "summary.csv": stats["summary"].to_csv(index=False, float_format="%.6f"),
             "headline.csv": stats["headline"].to_csv(index=False, float_format="%.6f"),
             "paired.csv": stats["paired"].to_csv(index=False, float_format="%.6g"),
             "summary.md": summary_markdown(stats, profile, plateau),
             "plateau.csv": plateau.to_csv(index=False, float_format="%.3f"),
             "environment.json": json.dumps(environment(profile, runs_root), indent=1) + "\n"}
    for run_id, run_dir in zip(runs["run_id"], runs["run_dir"]):
        files[f"metrics/{paths.check_name(str(run_id), 'run id')}.csv"] = \
            RunFolder(run_dir).metrics.read_text()
    io.remove_temporaries(out)  # what a killed save left (a tracked folder: keep it clean)
    for stale in sorted((out / "metrics").glob("*.csv")):
        if f"metrics/{stale.name}" not in files:
            stale.unlink()
    for name, text in files.items():
        io.write_text(out / name, text)
    written = [str(out / n) for n in files]
    if readme:
        hw = runs["hardware"].dropna() if "hardware" in runs else pd.Series(dtype=object)
        col = "untrained/dense/R@1"
        untrained = runs.groupby("config")[col].mean().to_dict() if col in runs else {}
        block = readme_block(stats, profile, hw.iloc[0] if len(hw) else None,
                             untrained=untrained, plateau=plateau)
        readme_path = (Path(root) if root is not None else paths.REPO_ROOT) / "README.md"
        if update_readme(block, readme_path):
            written.append(str(readme_path))
        else:
            print(f"README.md has no {README_BEGIN} ... {README_END} block: not updated")
    return written


def _metric_names(stats: dict) -> list[str]:
    from dml_core.report.stats import metric_name

    return [metric_name(m) for m in stats.get("metrics", [stats["metric"]])]


def plateau_labelled(plateau: pd.DataFrame, stats: dict) -> pd.DataFrame:
    """:func:`dml_core.report.plateau.plateau_table` with each configuration's label."""
    labels = dict(zip(stats["summary"]["config"], stats["summary"]["label"]))
    out = plateau.copy()
    out.insert(0, "label", [labels.get(c, n) for c, n in zip(out["config"], out["configuration"])])
    return out


def plateau_lines(plateau: pd.DataFrame | None) -> list[str]:
    """Markdown: whether each configuration's validation curve has plateaued."""
    if plateau is None or not len(plateau):
        return []
    from dml_core.methods.fair import PLATEAU_POINTS, plateau_rows_markdown

    from dml_core.methods.fair import plateau_verdict

    return [f"Has training plateaued? Validation R@1 gained over the last third of training "
            f"(from epoch E − round(E/3) to E), mean over seeds; plateaued when at most "
            f"{PLATEAU_POINTS:g} points: {plateau_verdict(plateau)}.", "",
            *plateau_rows_markdown(plateau)]


def summary_markdown(stats: dict, profile: str, plateau: pd.DataFrame | None = None) -> str:
    """The headline (R@1, MAP@R with intervals), the paired comparisons and (given) the plateau
    table as Markdown (%)."""
    names = _metric_names(stats)
    h, p = stats["headline"], stats["paired"]
    order = stats["summary"].sort_values("mean", ascending=False)["config"].tolist()
    h = h.set_index("config").loc[order].reset_index() if len(h) else h
    lines = [f"# {profile}: test {', '.join(names)} at the validation-selected epoch, %\n",
             "Mean [95% t-interval] over seeds. P@1 equals R@1 (one label per image).\n",
             "| configuration | seeds | " + " | ".join(f"{n} [95% CI]" for n in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for _, r in h.iterrows():
        lines.append(f"| {r['label']} | {r['n']} | "
                     + " | ".join(str(r.get(f"{n} (%)", "—")) for n in names) + " |")
    lines += ["", f"Paired by seed (A − B); the {stats.get('family', len(p))} tests are "
              "Holm-adjusted together.", "",
              "| comparison (A − B) | metric | seeds | mean difference | 95% CI | p (paired t) | "
              "p (Holm) | verdict |", "|---|---|---|---|---|---|---|---|"]
    for _, r in p.iterrows():
        if not r.get("n"):
            lines.append(f"| {r['comparison']} | {r.get('metric', '')} | 0 | — | — | — | — | "
                         f"{r['verdict']} |")
            continue
        lines.append(f"| {r['comparison']} | {r.get('metric', '')} | {r['n']} | "
                     f"{100 * r['mean']:+.1f} | [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}] | "
                     f"{r['p_value']:.3g} | {r['p_holm']:.3g} | {r['verdict']} |")
    if plateau is not None and len(plateau):
        lines += [""] + plateau_lines(plateau)
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- study-results:begin"
README_END = "<!-- study-results:end -->"


#: The README quotes a number only when it comes from at least this many seeds.
README_MIN_SEEDS = 5


def readme_block(stats: dict, profile: str, hardware: str | None = None,
                 min_seeds: int | None = None, untrained: dict | None = None,
                 plateau: pd.DataFrame | None = None) -> str:
    """The README's generated results: R@1 and MAP@R with intervals, the paired verdicts
    (Holm-adjusted), for the configurations (comparisons) with at least ``min_seeds`` seeds
    (the others are named), and (given) whether each configuration's training plateaued."""
    min_seeds = README_MIN_SEEDS if min_seeds is None else min_seeds
    names = _metric_names(stats)
    s, p, h = stats["summary"], stats["paired"], stats["headline"]
    short = s[s["n"] < min_seeds]
    s = s[s["n"] >= min_seeds]
    p = p[p["n"] >= min_seeds] if len(p) else p
    head = h.set_index("config") if len(h) else h
    seeds = sorted({int(x) for v in s["seeds"] for x in str(v).split(",") if x != ""})
    lines = [f"{README_BEGIN} (generated by `make study` from results/{profile}/; "
             "edit dml_core/report/replicate.py, not this block) -->",
             f"Profile `{profile}`, seeds {', '.join(map(str, seeds))}"
             + (f", {hardware}" if hardware else "") + f". Test {' and '.join(names)} (%) on "
             "the 50 unseen numbers at the epoch chosen on the validation classes; mean and 95% "
             "t-interval over seeds (P@1 equals R@1: one label per image; `results/" + profile
             + "/per_seed.csv` holds every seed's value):", "",
             "| configuration | seeds | " + " | ".join(f"{n} [95% CI]" for n in names)
             + " | untrained R@1 (same seeds) |",
             "|---|---|" + "---|" * len(names) + "---|"]
    untrained = untrained or {}
    for _, r in s.sort_values("mean", ascending=False).iterrows():
        u = untrained.get(r["config"])
        cells = [str(head.loc[r["config"]].get(f"{n} (%)", "—")) if len(head) else "—"
                 for n in names]
        lines.append(f"| {r['label']} | {r['n']} | " + " | ".join(cells) + " | "
                     f"{'—' if u is None else f'{100 * u:.1f}'} |")
    if len(p):
        lines += ["", f"Paired by seed (A − B, points); the {stats.get('family', len(p))} "
                  "comparisons are Holm-adjusted together, and a direction is stated only when "
                  "the adjusted p-value is at most 0.05:", ""]
        lines += [f"- **{r['comparison']}** ({r.get('metric', names[0])}): {r['verdict']}."
                  for _, r in p.iterrows()]
    if len(short):
        lines += ["", f"Not quoted (fewer than {min_seeds} seeds in this batch): "
                  + ", ".join(f"{r['label']} ({r['n']})" for _, r in short.iterrows()) + "."]
    if plateau is not None and len(plateau):
        lines += [""] + plateau_lines(plateau)
    lines.append(README_END)
    return "\n".join(lines)


def update_readme(block: str, readme: Path | None = None) -> bool:
    """Replace the generated block of README.md (between the markers); False if absent."""
    path = Path(readme) if readme is not None else paths.REPO_ROOT / "README.md"
    text = path.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return False
    io.write_text(path, text[:start] + block + text[end + len(README_END):])
    return True


# ------------------------------------------------------------------------ the tests, vectorised
def _t_sf(t, df):
    from scipy import stats as sps

    return sps.t.sf(t, df)


def two_sample_tests(xc: np.ndarray, xf: np.ndarray, margin: float = MARGIN):
    """Welch's test and the equivalence test (TOST, ± ``margin``) of fresh − committed, for
    every column of ``xc`` (..., n_c, p) and ``xf`` (..., n_f, p); leading axes are batches
    (the simulation's studies). Returns ``(diff, p_diff, p_equiv, se, df)``, each (..., p).

    Welch: :math:`t = (\\bar x_f-\\bar x_c)/\\sqrt{s_f^2/n_f+s_c^2/n_c}` with the
    Welch–Satterthwaite df; TOST: :math:`\\max(P(T > (d+\\delta)/se), P(T < (d-\\delta)/se))`.
    Two samples without spread: p_diff = 1 and p_equiv = 0 when the means are equal, else
    p_diff = 0 and p_equiv = 0 or 1 by whether the shift is within the margin."""
    xc, xf = np.asarray(xc, float), np.asarray(xf, float)
    nc, nf = xc.shape[-2], xf.shape[-2]
    if nc < 2 or nf < 2:
        raise ValueError(f"each side needs at least 2 seeds, got {nc} and {nf}")
    d = xf.mean(-2) - xc.mean(-2)
    vc, vf = xc.var(-2, ddof=1) / nc, xf.var(-2, ddof=1) / nf
    se2 = vc + vf
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(se2)
        df = se2 ** 2 / (vc ** 2 / (nc - 1) + vf ** 2 / (nf - 1))
        p_diff = 2 * _t_sf(np.abs(d) / se, df)
        p_eq = np.maximum(_t_sf((d + margin) / se, df), _t_sf((margin - d) / se, df))
    flat = se2 == 0
    same = np.isclose(d, 0.0, rtol=0, atol=1e-12)
    p_diff = np.where(flat, np.where(same, 1.0, 0.0), p_diff)
    p_eq = np.where(flat, np.where(np.abs(d) < margin, 0.0, 1.0), p_eq)
    return d, p_diff, p_eq, se, df


def paired_tests(x: np.ndarray, pairs: Sequence[tuple[int, int]]):
    """Paired t-tests of column a − column b for every ``(a, b)`` in ``pairs`` over the seeds
    (axis -2) of ``x`` (..., n, p). Returns ``(mean, p)``, each (..., len(pairs)); as
    :func:`dml_core.report.stats.paired_difference` (sd 0: p = 1 if the mean is 0, else 0)."""
    x = np.asarray(x, float)
    a = np.array([i for i, _ in pairs], dtype=int)
    b = np.array([j for _, j in pairs], dtype=int)
    d = x[..., a] - x[..., b]
    n = d.shape[-2]
    mean, sd = d.mean(-2), d.std(-2, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * _t_sf(np.abs(mean) / (sd / math.sqrt(n)), n - 1)
    p = np.where(sd == 0, np.where(mean == 0, 1.0, 0.0), p)
    return mean, p


def _signs(mean: np.ndarray, p: np.ndarray, alpha: float) -> np.ndarray:
    """+1 / −1 where the Holm-adjusted p (along the last axis) is at most alpha, else 0."""
    from dml_core.report.stats import holm

    return np.where(holm(p) <= alpha, np.sign(mean), 0.0)


def _verdict_codes(p_diff, p_eq, alpha):
    """0 replicated, 1 inconclusive, 2 not replicated (Holm along the last axis)."""
    from dml_core.report.stats import holm

    shifted = holm(p_diff) <= alpha
    within = holm(p_eq) <= alpha
    return np.where(shifted, 2, np.where(within, 0, 1))


# ------------------------------------------------------------------------------- the check
def _pivot(values: pd.DataFrame, numbers: list[tuple[str, str]]) -> tuple[np.ndarray, list]:
    """(seeds × numbers) array of ``values`` for the given (variant, metric) columns (complete
    seeds only) and the seeds used."""
    wide = values.pivot_table(index="seed", columns=KEY, values="value", aggfunc="first")
    wide = wide.reindex(columns=pd.MultiIndex.from_tuples(numbers, names=KEY)).dropna()
    return wide.to_numpy(), wide.index.tolist()


def _check_unique(values: pd.DataFrame, what: str) -> None:
    """One value per (variant, metric, seed): a repeated seed is an error, never an overwrite."""
    from dml_core.report.stats import SeedMismatchError

    dup = values[values.duplicated(KEY + ["seed"], keep=False)]
    if len(dup):
        r = dup.iloc[0]
        raise SeedMismatchError(f"{what}: seed {r['seed']} of {r['variant']} {r['metric']} "
                                "appears more than once; one value per seed")


def compare(fresh: pd.DataFrame, committed: pd.DataFrame, same_machine: bool = False,
            margin: float = MARGIN, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per committed (variant, metric): both sides' seeds and means, the seeds whose
    values are identical / differ, whether the recipe is the committed one, the tests of the
    module docstring and ``status``: identical | replicated | inconclusive | not replicated |
    changed recipe | no fresh runs."""
    _check_unique(committed, "committed values")
    _check_unique(fresh, "fresh values")
    rows = []
    for (variant, metric), c in committed.groupby(KEY):
        f = fresh[(fresh["variant"] == variant) & (fresh["metric"] == metric)]
        same = c.merge(f, on="seed", suffixes=("_c", "_f"))
        differ = int((same["value_c"] != same["value_f"]).sum())
        rows.append({"variant": variant, "metric": metric, "n_committed": len(c),
                     "n_fresh": len(f), "mean_committed": c["value"].mean(),
                     "mean_fresh": f["value"].mean() if len(f) else math.nan,
                     "seeds_identical": len(same) - differ, "seeds_differing": differ,
                     "same_config": bool(len(f)) and set(f["config"]) == set(c["config"])})
    table = pd.DataFrame(rows)
    for col in ("diff", "p_diff", "p_equiv", "p_diff_holm", "p_equiv_holm", "detectable"):
        table[col] = math.nan
    testable = table.index[(table["n_committed"] >= 2) & (table["n_fresh"] >= 2)]
    if len(testable):
        from dml_core.report.stats import holm

        res = [two_sample_tests(
            committed.loc[(committed["variant"] == table.at[i, "variant"])
                          & (committed["metric"] == table.at[i, "metric"]), "value"]
            .to_numpy()[:, None],
            fresh.loc[(fresh["variant"] == table.at[i, "variant"])
                      & (fresh["metric"] == table.at[i, "metric"]), "value"]
            .to_numpy()[:, None], margin) for i in testable]
        d, pd_, pe, se, df = (np.array([r[k][0] for r in res]) for k in range(5))
        table.loc[testable, "diff"], table.loc[testable, "p_diff"] = d, pd_
        table.loc[testable, "p_equiv"] = pe
        table.loc[testable, "p_diff_holm"] = holm(pd_)
        table.loc[testable, "p_equiv_holm"] = holm(pe)
        table.loc[testable, "detectable"] = detectable_shift(se, df, len(testable), alpha)
    status = []
    for _, r in table.iterrows():
        if r["n_fresh"] == 0:
            status.append("no fresh runs")
        elif not r["same_config"]:
            status.append("changed recipe")
        elif r["seeds_differing"] == 0 and r["n_fresh"] == r["n_committed"] == \
                r["seeds_identical"]:
            status.append("identical")
        elif same_machine:
            status.append("not replicated")  # deterministic: any difference is a change
        elif math.isnan(r["p_diff_holm"]):
            status.append("inconclusive")
        elif r["p_diff_holm"] <= alpha:
            status.append("not replicated")
        elif r["p_equiv_holm"] <= alpha:
            status.append("replicated")
        else:
            status.append("inconclusive")
    table["status"] = status
    return table


def detectable_shift(se, df, m: int, alpha: float = ALPHA, power: float = 0.8):
    """The shift of one number that the check would detect with probability ``power`` (Welch's
    test at the first Holm step, α/m; a t approximation): :math:`(t_{1-\\alpha/2m} + t_{power})
    \\cdot se`."""
    from scipy import stats as sps

    se, df = np.asarray(se, float), np.asarray(df, float)
    df = np.where(np.isfinite(df), df, 1e6)
    return (sps.t.ppf(1 - alpha / (2 * max(m, 1)), df) + sps.t.ppf(power, df)) * se


def paired_verdicts(fresh: pd.DataFrame, committed: pd.DataFrame,
                    comparisons: Sequence[tuple[str, str, str]] | None = None,
                    metrics: Sequence[str] = PAIRED_METRICS, alpha: float = ALPHA
                    ) -> pd.DataFrame:
    """The report's paired verdicts (Holm-adjusted over the comparisons × metrics present on
    both sides) on each side: sign +1 (A beats B), −1 (B beats A) or 0 (no detectable
    difference), and ``status``: same | flipped (not replicated) | changed (inconclusive)."""
    if comparisons is None:  # the study's family (an ablation may alias its headline twin)
        from dml_core.methods.fair import comparisons_for_profiles

        comparisons = comparisons_for_profiles(("study",))
    family = [(label, a, b, m) for m in metrics for label, a, b in comparisons
              if all(((side["variant"] == v) & (side["metric"] == m)).any()
                     for side in (fresh, committed) for v in (a, b))]
    if not family:
        return pd.DataFrame(columns=["comparison", "metric", "committed", "fresh", "status"])
    signs = {}
    for name, side in (("committed", committed), ("fresh", fresh)):
        numbers = list(dict.fromkeys((v, m) for _, a, b, m in family for v in (a, b)))
        x, _ = _pivot(side, numbers)
        idx = {k: i for i, k in enumerate(numbers)}
        mean, p = paired_tests(x, [(idx[(a, m)], idx[(b, m)]) for _, a, b, m in family])
        signs[name] = _signs(mean, p, alpha)
    rows = []
    for k, (label, a, b, m) in enumerate(family):
        sc, sf = int(signs["committed"][k]), int(signs["fresh"][k])
        status = "same" if sc == sf else "flipped" if sc * sf < 0 else "changed"
        rows.append({"comparison": label, "metric": m, "a": a, "b": b, "committed": sc,
                     "fresh": sf, "status": status})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Verdict:
    """The check's overall answer: "identical", "replicated", "inconclusive" or "not
    replicated", with the reasons."""

    result: str
    reasons: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        return 1 if self.result == "not replicated" else 0


def verdict_of(numbers: pd.DataFrame, paired: pd.DataFrame) -> Verdict:
    """Combine the numbers' and the paired verdicts' statuses into one answer."""
    counts = numbers["status"].value_counts().to_dict()
    reasons = []
    bad = {k: counts.get(k, 0) for k in ("not replicated", "changed recipe", "no fresh runs")}
    flipped = int((paired["status"] == "flipped").sum()) if len(paired) else 0
    changed = int((paired["status"] == "changed").sum()) if len(paired) else 0
    for k, n in bad.items():
        if n:
            reasons.append(f"{n} number(s): {k}")
    if flipped:
        reasons.append(f"{flipped} paired verdict(s) flipped sign")
    if any(bad.values()) or flipped:
        return Verdict("not replicated", tuple(reasons))
    if counts.get("inconclusive", 0) or changed:
        if counts.get("inconclusive", 0):
            reasons.append(f"{counts['inconclusive']} number(s) inconclusive (neither a shift "
                           "nor equivalence within the margin shown at these seeds)")
        if changed:
            reasons.append(f"{changed} paired verdict(s) significant on one side only")
        return Verdict("inconclusive", tuple(reasons))
    if set(counts) == {"identical"}:
        return Verdict("identical", ("every per-seed value is identical",))
    return Verdict("replicated", (f"{counts.get('replicated', 0)} number(s) within the margin, "
                                  f"{counts.get('identical', 0)} identical",))


# -------------------------------------------------------------------- the false-alarm rate
def _committed_matrix(committed: pd.DataFrame) -> tuple[np.ndarray, list[tuple[str, str]]]:
    numbers = sorted({(v, m) for v, m in zip(committed["variant"], committed["metric"])})
    x, _ = _pivot(committed, numbers)
    return x, numbers


def simulate_checks(committed: pd.DataFrame, studies: int = 2000, scheme: str = "gaussian",
                    seed: int = 0, margin: float = MARGIN, alpha: float = ALPHA,
                    comparisons: Sequence[tuple[str, str, str]] | None = None,
                    n_seeds: int | None = None, shift: dict | None = None) -> dict:
    """Run the check of another machine on ``studies`` simulated pairs (committed, fresh) of
    studies that replicate: both drawn from the same truth, taken from the committed per-seed
    values (every number's mean, and the covariance between numbers across seeds, so the
    dependence between numbers and the pairing by seed are kept).

    ``scheme``: "gaussian" (a seed = mean + the residuals of the committed seeds weighted by
    independent N(0, 1) / sqrt(n − 1): exactly the committed covariance) or "resample" (a seed =
    mean + one committed seed's residual vector, drawn with replacement and scaled by
    sqrt(n / (n − 1)): the committed values' own, possibly non-normal, shape). ``shift``:
    ``{(variant, metric): delta}`` added to the fresh side (power, not false alarms).

    Returns ``{"false_alarm": rate of "not replicated", "numbers": rate of a number flagged,
    "flips": rate of a flipped paired verdict, "inconclusive": rate of an inconclusive answer,
    "replicated": rate of every number replicated, "studies", "scheme", "numbers_tested",
    "seeds"}``."""
    x, numbers = _committed_matrix(committed)
    n, p = x.shape
    if n < 2:
        raise ValueError("the committed values need at least 2 complete seeds to simulate")
    k = n_seeds or n
    mu = x.mean(0)
    resid = x - mu
    rng = np.random.default_rng(seed)

    def draw():
        if scheme == "gaussian":
            z = rng.standard_normal((studies, k, n))
            return mu + z @ resid / math.sqrt(n - 1)
        if scheme == "resample":
            pick = rng.integers(0, n, (studies, k))
            return mu + resid[pick] * math.sqrt(n / (n - 1))
        raise ValueError(f"scheme must be 'gaussian' or 'resample', got {scheme!r}")

    xc, xf = draw(), draw()
    if shift:
        idx = {key: i for i, key in enumerate(numbers)}
        for key, delta in shift.items():
            xf[..., idx[key]] += delta
    _d, p_diff, p_eq, _se, _df = two_sample_tests(xc, xf, margin)
    codes = _verdict_codes(p_diff, p_eq, alpha)
    number_alarm = (codes == 2).any(-1)
    if comparisons is None:  # the study's family (an ablation may alias its headline twin)
        from dml_core.methods.fair import comparisons_for_profiles

        comparisons = comparisons_for_profiles(("study",))
    idx = {key: i for i, key in enumerate(numbers)}
    pairs = [(idx[(a, m)], idx[(b, m)]) for m in PAIRED_METRICS for _, a, b in comparisons
             if (a, m) in idx and (b, m) in idx]
    flips = np.zeros(studies, dtype=bool)
    changed = np.zeros(studies, dtype=bool)
    if pairs:
        sc = _signs(*paired_tests(xc, pairs), alpha)
        sf = _signs(*paired_tests(xf, pairs), alpha)
        flips = (sc * sf < 0).any(-1)
        changed = ((sc != sf) & (sc * sf >= 0)).any(-1)
    alarm = number_alarm | flips
    inconclusive = ~alarm & ((codes == 1).any(-1) | changed)
    return {"false_alarm": float(alarm.mean()), "numbers": float(number_alarm.mean()),
            "flips": float(flips.mean()), "inconclusive": float(inconclusive.mean()),
            "replicated": float((~alarm & ~inconclusive).mean()),
            "share_replicated": float((codes == 0).mean()),
            "share_inconclusive": float((codes == 1).mean()), "studies": studies,
            "scheme": scheme, "numbers_tested": p, "paired_tests": len(pairs), "seeds": k}


def false_alarm_rate(committed: pd.DataFrame, studies: int = 2000, seed: int = 0,
                     **kw) -> dict:
    """:func:`simulate_checks` under both schemes; ``{"gaussian": {...}, "resample": {...},
    "worst": the higher false-alarm rate, "ci": its 95% Wilson interval}``."""
    out = {s: simulate_checks(committed, studies, s, seed, **kw)
           for s in ("gaussian", "resample")}
    worst = max(out["gaussian"]["false_alarm"], out["resample"]["false_alarm"])
    out["worst"] = worst
    out["ci"] = _wilson(worst, studies)
    return out


def _wilson(rate: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def false_alarm_sentence(fa: dict) -> str:
    g, r = fa["gaussian"], fa["resample"]
    lo, hi = fa["ci"]
    return (f"False-alarm rate of this check (a study that replicates, run on another machine, "
            f"called 'not replicated'), simulated from the committed per-seed values: "
            f"{100 * g['false_alarm']:.1f} % (Gaussian draws) and {100 * r['false_alarm']:.1f} "
            f"% (seeds resampled), {g['studies']} simulated pairs of {g['seeds']}-seed studies "
            f"each, {g['numbers_tested']} numbers and {g['paired_tests']} paired verdicts "
            f"(worst: 95% CI [{100 * lo:.1f}, {100 * hi:.1f}] %; goal ≤ "
            f"{100 * FALSE_ALARM_GOAL:.0f} %). On such a study the answer is 'replicated' "
            f"{100 * g['replicated']:.0f} % and 'inconclusive' {100 * g['inconclusive']:.0f} % "
            f"of the time; {100 * g['share_replicated']:.0f} % of its numbers are shown within "
            f"the margin, {100 * g['share_inconclusive']:.0f} % inconclusive (Gaussian). On the "
            f"same machine the check is exact: no false alarm.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dml_core.report.replicate",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="study")
    ap.add_argument("--save", action="store_true",
                    help="store runs/<profile>'s per-seed values and tables in results/<profile>/")
    ap.add_argument("--readme", action="store_true",
                    help="with --save: also rewrite README.md's generated results block")
    ap.add_argument("--runs-root", type=Path, default=None, help="default: $DML_RUNS_ROOT or runs/")
    ap.add_argument("--committed", type=Path, default=None,
                    help="the committed per_seed.csv (default results/<profile>/per_seed.csv)")
    ap.add_argument("--margin", type=float, default=MARGIN,
                    help=f"equivalence margin, a fraction (default {MARGIN}: 5 points)")
    ap.add_argument("--alpha", type=float, default=ALPHA)
    ap.add_argument("--studies", type=int, default=2000,
                    help="simulated pairs of studies for the false-alarm rate (0: skip)")
    a = ap.parse_args(argv)
    if not paths.is_valid_name(a.profile):
        ap.error(f"--profile {a.profile!r} must be a profile name: letters, digits, '_', '.', '-'")
    if a.save:
        for p in save(a.profile, a.runs_root, readme=a.readme):
            print("wrote", p)
        return 0
    committed_path = a.committed or results_dir(a.profile) / "per_seed.csv"
    if not committed_path.is_file():
        print(f"no committed values at {committed_path}; run with --save on the reference "
              "machine first", file=sys.stderr)
        return 2
    committed = pd.read_csv(committed_path)
    fresh = per_seed_values(a.profile, a.runs_root)
    if not len(fresh):
        print(f"no complete seeded runs of profile {a.profile!r} under "
              f"{a.runs_root or paths.runs_root()}; run `python -m dml_core.batch --profile "
              f"{a.profile}` first", file=sys.stderr)
        return 2
    env_path = committed_path.parent / "environment.json"
    env_c = json.loads(env_path.read_text()) if env_path.is_file() else None
    env_f = environment(a.profile, a.runs_root)
    same = _known(env_c) and all(env_c.get(k) == env_f.get(k) for k in ENVIRONMENT_KEYS)
    other_weights = other_pretrained(env_c, env_f)
    where = ("the same machine and library versions as the committed values: every per-seed "
             "value must be identical" if same else
             "another machine or library versions than the committed values" if env_c else
             "a machine not identified by the committed values' environment.json")
    if env_c and not same:
        diff = {k: (env_c.get(k), env_f.get(k)) for k in ENVIRONMENT_KEYS
                if env_c.get(k) != env_f.get(k)}
        where += f" ({'; '.join(f'{k}: {c} -> {f}' for k, (c, f) in diff.items())})"
    table = compare(fresh, committed, same_machine=same, margin=a.margin, alpha=a.alpha)
    from dml_core.methods.fair import comparisons_for_profiles

    family = comparisons_for_profiles((a.profile,))
    paired = paired_verdicts(fresh, committed, comparisons=family, alpha=a.alpha)
    with pd.option_context("display.width", 220, "display.max_rows", 500,
                           "display.float_format", "{:.4f}".format):
        cols = ["variant", "metric", "n_committed", "n_fresh", "mean_committed", "mean_fresh",
                "seeds_differing", "p_diff_holm", "p_equiv_holm", "detectable", "status"]
        print(table[cols].to_string(index=False))
        if len(paired):
            print()
            print(paired.to_string(index=False))
    v = verdict_of(table, paired)
    print(f"\nCompared on {where}.")
    if not same:
        print(f"Criterion: per number, Welch's test (shift) and two one-sided tests "
              f"(equivalence within ±{100 * a.margin:g} points), each family Holm-adjusted at "
              f"α = {a.alpha}; paired verdicts must not flip sign.")
    print(f"{len(table)} numbers: " + ", ".join(f"{n} {k}" for k, n in
                                               table["status"].value_counts().items()) + ".")
    for _, r in table[table["status"].isin(["not replicated", "changed recipe",
                                            "no fresh runs"])].iterrows():
        print(f"  {r['status'].upper()}: {r['variant']} {r['metric']}: committed "
              f"{100 * r['mean_committed']:.1f}, fresh {100 * r['mean_fresh']:.1f}"
              + (f" (Holm-adjusted p = {r['p_diff_holm']:.3g})"
                 if not math.isnan(r["p_diff_holm"]) else ""))
    for _, r in paired[paired["status"] == "flipped"].iterrows() if len(paired) else []:
        print(f"  FLIPPED: {r['comparison']} ({r['metric']})")
    if other_weights:  # said last, where the result is read: the numbers above are not a test
        print(f"RESULT: NOT COMPARABLE: {other_weights}. Replicate with the committed "
              "study's torch and MKL versions on an x86-64 CPU, whose data preparation builds "
              "the same weights (docs/DEMO.md).")
    else:
        print(f"RESULT: {v.result.upper()}"
              + (f": {'; '.join(v.reasons)}" if v.reasons else ""))
    if a.studies:
        print(false_alarm_sentence(false_alarm_rate(committed, a.studies, margin=a.margin,
                                                    alpha=a.alpha, comparisons=family)))
    return 1 if other_weights else v.exit_code


if __name__ == "__main__":
    sys.exit(main())
