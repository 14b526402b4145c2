"""Store a profile's per-seed values, and check that a fresh batch replicates them.

The numbers the README quotes come from ``results/<profile>/`` (tracked): ``per_seed.csv`` (one
row per variant × seed × metric: every value behind a mean), ``summary.csv`` /
``paired.csv`` (means with 95% intervals, paired differences; :func:`dml_core.report.stats.
summarise`) and ``summary.md`` (the same as Markdown tables).

    python -m dml_core.report.replicate --profile study --save     # runs/study -> results/study (make study)
    python -m dml_core.report.replicate --profile study            # fresh runs/study vs results/study

The check compares, for every (variant, metric), the fresh batch's per-seed values with the
committed ones by Welch's test (:func:`dml_core.report.stats.welch_test`) and lists every number
that does not replicate (p < ``--alpha``, default 0.05; with many numbers a few false alarms are
expected: 5% of them). It also lists seeds whose value differs at all (same seed, same machine
and library versions should give identical values: a difference there means the code or the
environment changed) and configurations whose recipe differs from the committed one. Exit code 0
when everything replicates, 1 otherwise, 2 on bad input (no runs, no committed values).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from dml_core.core import io, paths

#: The metrics stored per seed (selection/feature/metric; fractions in [0, 1]).
METRICS = ("val_sel/dense/R@1", "val_sel/binary/R@1", "val_sel/dense/MAP@R",
           "last/dense/R@1", "untrained/dense/R@1")
KEY = ["variant", "metric"]


def results_dir(profile: str, root: Path | None = None) -> Path:
    """``results/<profile>`` (``profile`` must be a folder name: ValueError otherwise)."""
    return ((Path(root) if root is not None else paths.REPO_ROOT) / "results"
            / paths.check_name(profile, "profile name"))


def per_seed_values(profile: str, runs_root: Path | None = None) -> pd.DataFrame:
    """Long table (variant, label, config, seed, metric, value) of the profile's complete
    seeded runs (run ids ``..._s<seed>``), from ``runs/<profile>/``."""
    from dml_core.report import load_runs
    from dml_core.report.runs import with_configs

    root = Path(runs_root) if runs_root is not None else paths.runs_root()
    runs = with_configs(load_runs(root, profiles=[paths.check_name(profile, "profile name")]))
    if not len(runs):
        return pd.DataFrame(columns=["variant", "label", "config", "seed", "metric", "value"])
    runs = runs[(runs["status"] == "complete") & runs["seed"].notna()
                & runs["run_id"].astype(str).str.fullmatch(r".*_s\d+")]
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


def save(profile: str, runs_root: Path | None = None, root: Path | None = None,
         readme: bool = False) -> list[str]:
    """Write results/<profile>/{per_seed.csv, summary.csv, paired.csv, summary.md}; with
    ``readme`` also the generated block of README.md (:func:`readme_block`)."""
    from dml_core.report import load_runs
    from dml_core.report.runs import with_configs
    from dml_core.report.stats import summarise

    values = per_seed_values(profile, runs_root)
    if not len(values):
        raise SystemExit(f"no complete seeded runs under runs/{profile}: run "
                         f"`python -m dml_core.batch --profile {profile}` first")
    out = results_dir(profile, root)
    runs = with_configs(load_runs(Path(runs_root) if runs_root else paths.runs_root(),
                                  profiles=[profile]))
    stats = summarise(runs[runs["run_id"].astype(str).str.fullmatch(r".*_s\d+")])
    files = {"per_seed.csv": values.to_csv(index=False, float_format="%.6f"),
             "summary.csv": stats["summary"].to_csv(index=False, float_format="%.6f"),
             "paired.csv": stats["paired"].to_csv(index=False, float_format="%.6f"),
             "summary.md": summary_markdown(stats, profile)}
    io.remove_temporaries(out)  # what a killed save left (a tracked folder: keep it clean)
    for name, text in files.items():
        io.write_text(out / name, text)
    written = [str(out / n) for n in files]
    if readme:
        hw = runs["hardware"].dropna() if "hardware" in runs else pd.Series(dtype=object)
        col = "untrained/dense/R@1"
        done = runs[(runs["status"] == "complete")] if "status" in runs else runs
        untrained = done.groupby("config")[col].mean().to_dict() if col in done else {}
        block = readme_block(stats, profile, hw.iloc[0] if len(hw) else None,
                             untrained=untrained)
        readme_path = (Path(root) if root is not None else paths.REPO_ROOT) / "README.md"
        if update_readme(block, readme_path):
            written.append(str(readme_path))
        else:
            print(f"README.md has no {README_BEGIN} ... {README_END} block: not updated")
    return written


def summary_markdown(stats: dict, profile: str) -> str:
    """The summary and the paired comparisons as Markdown (values in %)."""
    s, p = stats["summary"], stats["paired"]
    lines = [f"# {profile}: {stats['metric']} (test, at the validation-selected epoch), %\n",
             "| configuration | seeds | mean | 95% CI |", "|---|---|---|---|"]
    for _, r in s.sort_values("mean", ascending=False).iterrows():
        ci = "—" if r["n"] < 2 else f"[{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]"
        lines.append(f"| {r['label']} | {r['n']} | {100 * r['mean']:.1f} | {ci} |")
    lines += ["", "| comparison (A − B) | seeds | mean difference | 95% CI | p (paired t) | "
              "verdict |", "|---|---|---|---|---|---|"]
    for _, r in p.iterrows():
        if not r.get("n"):
            lines.append(f"| {r['comparison']} | 0 | — | — | — | {r['verdict']} |")
            continue
        lines.append(f"| {r['comparison']} | {r['n']} | {100 * r['mean']:+.1f} | "
                     f"[{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}] | {r['p_value']:.3f} | "
                     f"{r['verdict']} |")
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- study-results:begin"
README_END = "<!-- study-results:end -->"


#: The README quotes a number only when it comes from at least this many seeds.
README_MIN_SEEDS = 5


def readme_block(stats: dict, profile: str, hardware: str | None = None,
                 min_seeds: int | None = None, untrained: dict | None = None) -> str:
    """The README's generated results: means with intervals and the paired verdicts, for the
    configurations (comparisons) with at least ``min_seeds`` seeds; the others are named."""
    min_seeds = README_MIN_SEEDS if min_seeds is None else min_seeds
    s, p = stats["summary"], stats["paired"]
    short = s[s["n"] < min_seeds]
    s = s[s["n"] >= min_seeds]
    p = p[p["n"] >= min_seeds] if len(p) else p
    seeds = sorted({int(x) for v in s["seeds"] for x in str(v).split(",") if x != ""})
    lines = [f"{README_BEGIN} (generated by `make study` from results/{profile}/; "
             "edit dml_core/report/replicate.py, not this block) -->",
             f"Profile `{profile}`, seeds {', '.join(map(str, seeds))}"
             + (f", {hardware}" if hardware else "") + ". Test R@1 (%) on the 50 unseen "
             "numbers at the epoch chosen on the validation classes; mean and 95% t-interval "
             "over seeds (`results/" + profile + "/per_seed.csv` holds every seed's value):", "",
             "| configuration | seeds | mean R@1 | 95% CI | untrained R@1 (same seeds) |",
             "|---|---|---|---|---|"]
    untrained = untrained or {}
    for _, r in s.sort_values("mean", ascending=False).iterrows():
        ci = "—" if r["n"] < 2 else f"[{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]"
        u = untrained.get(r["config"])
        lines.append(f"| {r['label']} | {r['n']} | {100 * r['mean']:.1f} | {ci} | "
                     f"{'—' if u is None else f'{100 * u:.1f}'} |")
    if len(p):
        lines += ["", "Paired by seed (A − B, points of R@1):", ""]
        lines += [f"- **{r['comparison']}**: {r['verdict']}." for _, r in p.iterrows()]
    if len(short):
        lines += ["", f"Not quoted (fewer than {min_seeds} seeds in this batch): "
                  + ", ".join(f"{r['label']} ({r['n']})" for _, r in short.iterrows()) + "."]
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


def compare(fresh: pd.DataFrame, committed: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (variant, metric) present on both sides: means, Welch's p, whether it
    replicates (p ≥ alpha), how many shared seeds gave a different value, and whether the
    configuration (recipe) is the committed one."""
    from dml_core.report.stats import welch_test

    rows = []
    for (variant, metric), c in committed.groupby(KEY):
        f = fresh[(fresh["variant"] == variant) & (fresh["metric"] == metric)]
        row = {"variant": variant, "metric": metric, "n_committed": len(c), "n_fresh": len(f),
               "mean_committed": c["value"].mean(), "mean_fresh": f["value"].mean()
               if len(f) else math.nan}
        if len(f) < 2 or len(c) < 2:
            row.update(p_value=math.nan, replicates=None,
                       note="fewer than 2 seeds on one side: not testable")
        else:
            w = welch_test(f["value"], c["value"])
            row.update(p_value=w.p_value, replicates=bool(w.p_value >= alpha), note="")
        same = c.merge(f, on="seed", suffixes=("_c", "_f"))
        row["seeds_differing"] = int((same["value_c"] - same["value_f"]).abs().gt(1e-6).sum())
        row["same_config"] = bool(len(f)) and set(f["config"]) == set(c["config"])
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dml_core.report.replicate", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--profile", default="study")
    ap.add_argument("--save", action="store_true",
                    help="store runs/<profile>'s per-seed values and tables in results/<profile>/")
    ap.add_argument("--readme", action="store_true",
                    help="with --save: also rewrite README.md's generated results block")
    ap.add_argument("--runs-root", type=Path, default=None, help="default: $DML_RUNS_ROOT or runs/")
    ap.add_argument("--committed", type=Path, default=None,
                    help="the committed per_seed.csv (default results/<profile>/per_seed.csv)")
    ap.add_argument("--alpha", type=float, default=0.05)
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
    table = compare(fresh, committed, a.alpha)
    with pd.option_context("display.width", 200, "display.max_rows", 500,
                           "display.float_format", "{:.4f}".format):
        print(table.to_string(index=False))
    bad = table[table["replicates"] == False]  # noqa: E712
    missing = table[table["n_fresh"] == 0]
    print(f"\n{len(table)} numbers compared (Welch's test, alpha {a.alpha}); "
          f"{len(bad)} do not replicate, {len(missing)} have no fresh runs.")
    for _, r in bad.iterrows():
        print(f"  NOT REPLICATED: {r['variant']} {r['metric']}: committed "
              f"{100 * r['mean_committed']:.1f}, fresh {100 * r['mean_fresh']:.1f} "
              f"(p = {r['p_value']:.3g})")
    changed = table[(table["n_fresh"] > 0) & ~table["same_config"].astype(bool)]
    for _, r in changed.drop_duplicates("variant").iterrows():
        print(f"  changed recipe: {r['variant']} (not the committed configuration)")
    return 1 if len(bad) or len(missing) else 0


if __name__ == "__main__":
    sys.exit(main())
