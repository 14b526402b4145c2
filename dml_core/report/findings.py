"""What a run shows, written from its numbers (never by hand).

- :func:`run_findings`: a run folder (or a folder of run folders, e.g. the toy's) -> markdown
  sentences: R@1 before and after training, the selected and last epochs, how much of the dense
  R@1 the binary codes keep, MAP@R, time and hardware. The last cell of each method notebook.
- :func:`study_findings`: a profile folder -> the bullet list of the report's front page:
  one line per training run, then the comparisons that belong together (a recipe key varied
  with everything else fixed, e.g. the positive proxy off/on, the momentum sweep) with their
  difference, and whether seeds allow a claim.
- :func:`show_findings`: :func:`run_findings` as a notebook display (IPython Markdown).

Free text in them (names, errors, recipe values, hardware) is escaped (:mod:`.escape`).
Values are percentages with one decimal. A claim that one setting beats another is made only
when at least two seeds per side exist and the Holm-adjusted p-value of the paired difference
(over the comparisons the page makes) is at most 0.05.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from dml_core.core.clock import fmt_time
from dml_core.core.run_folder import MALFORMED, RunFolder, find_runs

from .escape import markdown_code, markdown_text
from .reported import DATASET_NAMES, METHOD_NAMES
from .runs import load_runs, read_run
from .tables import mean_interval, run_settings, selected_values


def _pct(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return 100.0 * v


def _f(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.1f}"


def _run_sentences(row: dict | pd.Series, label: str | None = None,
                   selection: str | None = None) -> str:
    """The findings of one run (a row of :func:`load_runs`) at ``selection`` (default: the
    validation-selected epoch when the run has one, else the best epoch on test)."""
    get = row.get
    who = markdown_text(label or f"{METHOD_NAMES.get(get('method'), get('method'))} on "
                               f"{DATASET_NAMES.get(get('dataset'), get('dataset'))}")
    status = get("status")
    if status not in ("complete", "done"):
        err = get("error")
        return (f"**{who}** did not finish (status {markdown_text(status)})"
                + (f": {markdown_text(err)}" if err else "") + ".")
    sel = selection or ("val_sel" if not math.isnan(_pct(get("val_sel/dense/R@1")))
                        else "test_sel")
    u, b, last = (_pct(get(f"{s}/dense/R@1")) for s in ("untrained", sel, "last"))
    where = "best on test" if sel == "test_sel" else "chosen on the validation split"
    def _ep(v):
        try:
            return int(v)
        except (TypeError, ValueError):
            return "?"

    epoch, last_epoch = _ep(get(f"{sel}_epoch")), _ep(get("last_epoch"))
    recipe = get("recipe") if isinstance(get("recipe"), dict) else {}
    # epoch 0: a pretrained trunk (the demo's stand-in, ImageNet) under a fresh head, or random
    start, net = (("pretrained, before fine-tuning", "pretrained network's")
                  if recipe.get("pretrained") else ("untrained", "untrained network's"))
    parts = []
    if math.isnan(u):
        parts.append(f"**{who}**: R@1 {_f(b)} at epoch {epoch}")
    else:
        delta = b - u
        verb = ("rose" if delta >= 1.0 else "fell" if delta <= -1.0 else "stayed")
        if verb == "stayed":
            parts.append(f"**{who}**: R@1 stayed at the {net} level "
                         f"({_f(u)} before training, {_f(b)} at best, epoch {epoch})")
        else:
            parts.append(f"**{who}**: R@1 {verb} from {_f(u)} ({start}) to {_f(b)} "
                         f"(epoch {epoch}, {where})")
    if not math.isnan(last) and last_epoch is not None and last_epoch != epoch:
        parts.append(f"{_f(last)} at the last epoch ({last_epoch})")
    elif last_epoch == epoch and (get("epochs_completed") or 0) > 1:
        parts.append("the best epoch is the last: still rising")
    text = "; ".join(parts) + "."
    bin_r1 = _pct(get(f"{sel}/binary/R@1"))
    if not math.isnan(bin_r1) and b > 0:
        keep = 100.0 * bin_r1 / b
        text += f" Binary codes keep {keep:.0f} % of it ({_f(bin_r1)})"
        text += (": the sign codes lose most of it (sign binarisation needs zero-centred "
                 "features)." if keep < 25 else ".")
    mapr = _pct(get(f"{sel}/dense/MAP@R"))
    if not math.isnan(mapr):
        text += f" MAP@R {_f(mapr)}."
    t, ips = get("train_time_s"), get("images_per_s")
    if t is not None and not (isinstance(t, float) and math.isnan(t)):
        text += f" Training took {fmt_time(t)}"
        if ips is not None and not (isinstance(ips, float) and math.isnan(ips)):
            text += f" ({float(ips):.0f} images/s)"
        hw = get("hardware")
        text += f" on {markdown_text(hw)}." if hw else "."
    return text


def run_findings(run_dir: str | os.PathLike) -> str:
    """Markdown: what the run in ``run_dir`` shows (one paragraph per run folder below it)."""
    run = RunFolder(run_dir)
    if run.summary.is_file():
        rows = [(read_run(run.root), None)]
    else:
        found = find_runs(run.root)
        if not found:
            st = run.read_status()
            if st.get("status") in ("failed", MALFORMED):
                return f"This run failed: {markdown_text(st.get('error') or 'see its log')}."
            return (f"No finished run in {markdown_code(run.root.name)} (no training summary): "
                    "nothing to report yet.")
        rows = [(read_run(r.root), r.root.relative_to(run.root).as_posix()) for r in found]
    out = []
    for row, sub in rows:
        label = None
        if sub:
            label = f"{sub} ({METHOD_NAMES.get(row.get('method'), row.get('method'))})"
        out.append(_run_sentences(row, label))
    if len(rows) == 1:
        r = rows[0][0]
        n_img = ((run.read_summary() or {}).get("data") or {}).get("test_images")
        if n_img:
            out.append(f"Test split: {n_img} images of classes unseen in training; one seed "
                       f"(seed {r.get('recipe', {}).get('seed', '?')}): differences of a few "
                       "points are within run-to-run noise.")
    return "\n\n".join(out)


def show_findings(run_dir: str | os.PathLike):
    """:func:`run_findings` as an IPython Markdown display (the last cell of a notebook)."""
    from IPython.display import Markdown

    return Markdown(run_findings(run_dir))


def _paired(g: pd.DataFrame, key: str, va: str, vb: str, col: str):
    """The best two values of ``key`` paired by seed (:func:`dml_core.report.stats.
    paired_difference`), or the reason they cannot be paired (a seed missing on one side or
    repeated: an error, never an overwrite)."""
    from .stats import SeedMismatchError, paired_difference

    def by_seed(v):
        sub = g[g["_setting"] == f"{key} = {v}"]
        return [(int(r.get("seed", 0)) if isinstance(r, dict) else i, float(x))
                for i, (r, x) in enumerate(zip(sub["recipe"], sub[col]))]

    try:
        return paired_difference(by_seed(va), by_seed(vb))
    except (SeedMismatchError, ValueError) as exc:
        return f"Not paired by seed ({exc}): no ranking is claimed"


def comparison_findings(runs: pd.DataFrame, selection: str = "auto") -> list[str]:
    """One sentence per group of runs that differ in exactly one recipe key. The paired
    comparisons of all groups are one family: a direction is claimed only when its
    Holm-adjusted p-value is at most 0.05 (:func:`dml_core.report.stats.holm`)."""
    from .stats import holm, verdict

    out: list[str] = []
    if not len(runs):
        return out
    runs = runs[runs["status"].isin(["complete", "done"]) & runs["method"].notna()]
    runs = runs.assign(_setting=run_settings(runs), _crop=runs["crop"].astype(str))
    pending = []  # (line, paired or reason, labels)
    for (m, ds, bb, _c), g in runs.groupby(["method", "dataset", "backbone", "_crop"],
                                           sort=False):
        settings = [s for s in g["_setting"].unique() if s]
        keys = {s.split(" = ")[0] for s in settings if ", " not in s}
        if len(settings) < 2 or len(keys) != 1:
            continue
        vals, _where = selected_values(g, "dense/R@1", selection)
        g = g.assign(_value=vals)
        col = "_value"
        key = keys.pop()
        stats = []
        for s in settings:
            mean, half, n = mean_interval([_pct(v) for v in g.loc[g["_setting"] == s, col]])
            stats.append((s.split(" = ", 1)[1], mean, half, n))
        stats.sort(key=lambda t: -t[1] if not math.isnan(t[1]) else math.inf)
        vals = ", ".join(f"{markdown_text(v)}: {_f(mu)}" for v, mu, _h, _n in stats)
        name = markdown_text(f"{METHOD_NAMES.get(m, m)}, {key}")
        line = f"**{name}** ({markdown_text(DATASET_NAMES.get(ds, ds))}): R@1 {vals}."
        if min(n for *_x, n in stats) < 2:
            pending.append((line + " One seed per setting: no ranking is claimed.", None, None))
        else:
            pending.append((line, _paired(g, key, stats[0][0], stats[1][0], col),
                            (f"{key} = {stats[0][0]}", f"{key} = {stats[1][0]}")))
    tests = [p for _, p, _ in pending if p is not None and not isinstance(p, str)]
    adjusted = iter(holm([p.p_value for p in tests]) if tests else [])
    for line, p, labels in pending:
        if p is None:
            out.append(line)
        elif isinstance(p, str):
            out.append(f"{line} {markdown_text(p)}.")
        else:
            out.append(f"{line} {markdown_text(verdict(*labels, p, p_adjusted=next(adjusted)))}.")
    return out


def study_findings(profile_dir: str | os.PathLike, selection: str = "auto") -> str:
    """Markdown bullet list for the report's front page, computed from ``profile_dir``'s runs."""
    profile_dir = Path(profile_dir)
    runs = load_runs([profile_dir])
    if not len(runs):
        return "- No run of this profile has finished yet."
    runs = runs[runs["method"].notna()]
    lines = []
    done = runs[runs["status"].isin(["complete", "done"])]
    failed = runs[~runs["status"].isin(["complete", "done"])]
    for _, r in done.iterrows():
        if r["method"] == "toy":
            continue
        lines.append(f"- {markdown_code(r['run_id'])}: " + _run_sentences(
            r, selection=None if selection == "auto" else selection).split(": ", 1)[-1])
    toy = done[done["method"] == "toy"]
    if len(toy):
        parts = [f"{markdown_text(Path(r['run_id']).name)} "
                 f"{_f(_pct(selected_values(pd.DataFrame([r]), 'dense/R@1', selection)[0].iloc[0]))}"
                 f" (untrained {_f(_pct(r.get('untrained/dense/R@1')))})"
                 for _, r in toy.iterrows()]
        lines.append("- The toy (2-D embedding, unseen classes), R@1: " + "; ".join(parts) + ".")
    for c in comparison_findings(runs, selection):
        lines.append(f"- {c}")
    trained = done[done["method"] != "toy"]
    if len(trained):
        sel = "test_sel" if selection == "auto" else selection
        b = trained[f"{sel}/dense/R@1"].astype(float) * 100 \
            if f"{sel}/dense/R@1" in trained else pd.Series(dtype=float)
        bb = trained.get(f"{sel}/binary/R@1")
        if bb is not None and len(b):
            keep = (100 * bb.astype(float) * 100 / b).dropna()
            if len(keep):
                lines.append(f"- Binary codes keep {keep.min():.0f}–{keep.max():.0f} % of the "
                             f"dense R@1 across the {len(keep)} training runs.")
    for _, r in failed.iterrows():
        lines.append(f"- {markdown_code(r['run_id'])} did not finish (status "
                     f"{markdown_text(r['status'])}).")
    return "\n".join(lines)


__all__ = ["run_findings", "show_findings", "study_findings", "comparison_findings"]
