"""The report as a book: a static HTML site built from a profile's executed notebooks.

``python -m dml_core.report.book --profile demo`` (``make report`` runs it after the batch) writes
``runs/<profile>/report/index.html`` and prints its path. The notebooks are **not** executed again
(papermill did that in the batch): Sphinx + MyST-NB render the executed copies
(each run folder's executed notebook, :class:`dml_core.core.run_folder.RunFolder`) with the book
theme.

The book:

- **front page**: the headline table (one row per method × data set × backbone × setting,
  R@1 "reported | reproduced", with the 95 % interval once seeds exist), the findings written
  from the numbers (:mod:`.findings`), the comparisons that belong together side by side
  (:func:`.tables.side_by_side`), the key figures, and downloadable CSVs;
- **one chapter per notebook** in reading order (a notebook with several runs gets a chapter
  page listing them, each run its own page); a page per failed run with its error and the end of
  its log, each an escaped ``<pre>`` block;
- **the methods** (``docs/methods/*.md``) and a page with every number (:func:`.tables.details_table`);
- sidebar and full-text search (Sphinx's own, offline).

It reads offline: MathJax 3 (the SVG build, no web fonts) is copied from the pip package
``sphinx-mathjax-offline`` into the book; no script, style sheet or font is fetched from a CDN
(widgets' JavaScript is switched off). Progress-bar lines (tqdm, carriage returns) are removed
from the stderr outputs of the copies; any other stderr text (a warning) is kept, so that it shows
and the tests catch it.

Every free text (errors, logs, class and file names, recipe values, descriptions) reaches a
page through :mod:`.escape` only, so it shows as text and never acts.

The Sphinx sources are written to ``runs/<profile>/.book/`` (regenerated on every build).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import nbformat

from dml_core.core import paths
from dml_core.core.run_folder import RunFolder
from dml_core.core.run_folder import MALFORMED, read_status

from .escape import html_text, markdown_code, markdown_text, pre_block, raw_html

BOOK_DIR = "report"          # runs/<profile>/report/index.html
SOURCE_DIR = ".book"         # runs/<profile>/.book/{src,doctrees}
LOG_TAIL_LINES = 200
# figure file names (searched in the profile's run folders, 08_figures first) for the front page
KEY_FIGURES = (("seeds.png", "R@1 of every seed (dots) with the mean and its 95 % interval."),
               ("paired_differences.png", "Paired differences between methods, seed by seed, "
                                          "with their 95 % interval."),
               ("training_curves_*.png", "Training curves (test R@1 per epoch)."),
               ("recall_*.png", "Recall@K of every run."),
               ("dense_vs_binary.png", "Dense features against their binary (sign) codes."),
               ("momentum_seeds.png", "Moving proxies: R@1 against the momentum, over seeds."),
               ("momentum_sensitivity.png", "Moving proxies: R@1 against the momentum."),
               ("toy_embeddings.png", "The toy: the unit circle after training; arrows are "
                                      "the proxies."))
_PROGRESS_RE = re.compile(r"\d+%\||\|\s*\d+/\d+\s*\[|\d+/\d+ \[\d|it/s\]|s/it\]|batch/s\]")
MATHJAX_FILE = "tex-svg-full.js"


class BookError(RuntimeError):
    """The book cannot be built; the message says what is missing and how to fix it."""


@dataclass
class RunPage:
    id: str
    notebook: str            # stem, e.g. "02_asymptotic_proxy"
    description: str
    status: str              # done | failed | running | not run
    run_dir: Path
    error: str | None = None
    docname: str | None = None   # page of the book ("runs/<id>" or "failed/<id>")
    notebook_path: Path | None = None  # the committed notebook (its title names the chapter)


@dataclass
class Book:
    profile: str             # the profile's name (its folder under the runs root)
    profile_path: Path | None
    description: str
    profile_dir: Path
    out_dir: Path
    src_dir: Path
    runs: list[RunPage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def index_html(self) -> Path:
        return self.out_dir / "index.html"


# ------------------------------------------------------------------------------------------
# Notebook copies
def _is_progress_line(line: str) -> bool:
    return "\r" in line or bool(_PROGRESS_RE.search(line))


def clean_notebook(nb) -> tuple[object, int]:
    """Remove progress-bar noise from the stderr stream outputs of ``nb`` (in place).

    A line is progress when it holds a carriage return or looks like a tqdm bar
    (``45%|####``, ``| 3/8 [``, ``it/s]``). Other stderr lines are kept. Returns
    ``(nb, number of lines removed)``.
    """
    removed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines = out.get("text", "").splitlines(keepends=True)
                kept = [ln for ln in lines if not _is_progress_line(ln)]
                removed += len(lines) - len(kept)
                if not "".join(kept).strip():
                    continue
                out["text"] = "".join(kept)
            outputs.append(out)
        cell["outputs"] = outputs
    return nb, removed


def _link_methods(nb, pages: set[str]) -> None:
    """`docs/methods/X.md` in markdown cells becomes a link to the book's method page."""
    def repl(m):
        return f"[`docs/methods/{m.group(1)}.md`](../methods/{m.group(1)}.md)" \
            if m.group(1) in pages else m.group(0)

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = re.sub(r"`docs/methods/([\w.-]+)\.md`", repl, cell.source)


def notebook_title(path: Path) -> str:
    """The first markdown heading of a notebook (``# 01 · NormSoftmax ...`` -> the text)."""
    try:
        nb = nbformat.read(str(path), as_version=4)
    except (OSError, ValueError):
        return path.stem
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def _retitle(nb, title: str) -> None:
    """Replace the notebook's first ``# heading`` with ``title`` (several runs, one notebook)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.splitlines()
            for i, line in enumerate(lines):
                if line.startswith("# "):
                    lines[i] = f"# {title}"
                    cell.source = "\n".join(lines)
                    return
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}"))


# ------------------------------------------------------------------------------------------
# Collecting the runs
def _status(run_dir: Path) -> dict:
    return RunFolder(run_dir).read_status()


def collect_runs(prof, profile_dir: Path) -> list[RunPage]:
    """The runs of ``prof`` (:class:`dml_core.profiles.Profile`) in profile order, each with its
    status (:meth:`RunFolder.read_status`; a malformed status.json makes a failed run that
    says so)."""
    out = []
    for run in prof.runs:
        rdir = profile_dir / run.id
        st = read_status(rdir)
        status = st.get("status") or "not run"
        if status == MALFORMED:
            status = "failed"
        if status == "done" and not RunFolder(rdir).notebook.is_file():
            status = "not run"
        out.append(RunPage(id=run.id, notebook=run.notebook.stem, description=run.description,
                           status=status, run_dir=rdir, error=st.get("error"),
                           notebook_path=run.notebook))
    return out


def _key_figures(profile_dir: Path) -> list[tuple[Path, str]]:
    """(file, caption) of the front page's figures, 08_figures' folder searched first."""
    found = []
    roots = sorted(profile_dir.glob("08_figures*")) + [profile_dir]
    for pattern, caption in KEY_FIGURES:
        for root in roots:
            hits = sorted(p for p in root.rglob(pattern) if SOURCE_DIR not in p.parts
                          and BOOK_DIR not in p.relative_to(profile_dir).parts[:1])
            if hits:
                found.extend((h, caption) for h in hits[:3])
                break
    return found


# ------------------------------------------------------------------------------------------
# Pages
_CONF = '''# Generated by dml_core.report.book: do not edit (rebuilt on every build).
project = {title!r}
author = "dml_core"
copyright = "the dml_core authors"
extensions = ["myst_nb", "sphinx.ext.mathjax"]
html_theme = "sphinx_book_theme"
html_title = {title!r}
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None
html_theme_options = {{
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "launch_buttons": {{}},
    "navigation_with_keys": False,
}}
mathjax_path = "mathjax/{mathjax}"
mathjax3_config = {{"svg": {{"fontCache": "global"}}, "options": {{"enableMenu": False}}}}
nb_execution_mode = "off"
nb_output_stderr = "show"
nb_merge_streams = True
nb_ipywidgets_js = {{}}
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_dmath_double_inline = True  # $$...$$ inside a paragraph, as Jupyter renders it
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure",
                     "myst.xref_missing"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
'''

_CSS = """
.bd-page-width { max-width: 100%; }
.bd-main .bd-content .bd-article-container { max-width: 100%; }
.dml-table-wrap { overflow-x: auto; margin: 0 0 1.2em 0; }
table.dml-benchmark { border-collapse: collapse; font-size: 0.8em; }
table.dml-benchmark th, table.dml-benchmark td { border: 1px solid #d0d7de; padding: .25em .5em;
  white-space: nowrap; text-align: left; }
table.dml-benchmark td.wrap { white-space: normal; min-width: 24em; }
table.dml-benchmark th { background: #f6f8fa; white-space: normal; vertical-align: bottom; }
table.dml-benchmark caption { caption-side: top; text-align: left; font-weight: 600; }
.status-failed { color: #cf222e; font-weight: 600; }
"""


def _table_html(df, caption: str | None = None, wrap: Sequence[str] = ()) -> str:
    """An escaped HTML table in a horizontally scrolling box: every column, nothing cut."""
    cols = [str(c) for c in df.columns]
    out = ['<div class="dml-table-wrap"><table class="dml-benchmark">']
    if caption:
        out.append(f"<caption>{html_text(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html_text(c)}</th>" for c in cols)
               + "</tr></thead><tbody>")
    for _, row in df.iterrows():
        cells = []
        for c, v in zip(cols, row.values):
            text = "" if v is None or (isinstance(v, float) and v != v) else str(v)
            cls = ' class="wrap"' if c in wrap else ""
            cells.append(f"<td{cls}>{html_text(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _hardware(runs_df) -> str:
    if runs_df is None or not len(runs_df) or "hardware" not in runs_df:
        return "unknown"
    hw = sorted({str(h) for h in runs_df["hardware"].dropna()})
    return "; ".join(hw) or "unknown"


def _front_page(book: Book, runs_df, chapters: list[tuple[str, str]], failed: list[RunPage],
                figures: list[tuple[str, str]]) -> str:
    from . import tables
    from .findings import study_findings
    from .tables import expected_keys_from_profile

    counts = {s: sum(r.status == s for r in book.runs) for s in ("done", "failed", "not run")}
    other = len(book.runs) - sum(counts.values())
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["---\nhtml_theme.sidebar_secondary.remove: true\n---\n",  # room for the table
             f"# Proxy-based deep metric learning, reproduced: profile `{book.profile}`\n",
             f"{markdown_text(book.description)}\n",
             f"Built {now} from the executed notebooks of `runs/{book.profile}/`: "
             f"{counts['done']} run(s) done, {counts['failed']} failed, {counts['not run']} not run"
             + (f", {other} running" if other else "") + f". Hardware of the runs: "
             f"{markdown_text(_hardware(runs_df))}.\n"]

    lines.append("## Headline results\n")
    import yaml

    expected = []
    try:
        expected = expected_keys_from_profile(str(book.profile_path or book.profile))
    except (OSError, ValueError, yaml.YAMLError):  # the profile is gone or unreadable: no rows
        expected = []
    trained = runs_df[runs_df["method"] != "toy"] if len(runs_df) else runs_df  # toy: own line
    sel = "auto"
    sel_words = ("the epoch chosen on its validation split (classes carved from the training "
                 "classes) when it has one, else at its best epoch on the test set (the "
                 "authors' selection, optimistic): see the column *Epoch chosen on*")
    head = tables.compact_table(trained, profiles=[book.profile], expected=expected,
                                selection=sel)
    if len(head):
        shown = head.loc[:, [c for c in head.columns
                             if c not in ("Crop", "Setting") or (head[c] != "—").any()]]
        lines.append(raw_html(_table_html(shown)))
        lines.append(
            "Values in %. **reported** is the authors' number (their README; † = a column whose "
            "K is ambiguous, see the caveats in {doc}`tables`), **reproduced** is this profile's "
            f"run at {sel_words}, the mean over "
            "seeds, ± the half-width of its 95 % interval once two or more seeds exist. "
            "\"—\": no published number for this setting (e.g. the demo data). **untrained**: "
            "the same network before its first step (the baseline to beat: the pretrained trunk "
            "under a fresh head when the recipe is pretrained, as every demo recipe is, "
            "docs/DEMO.md). Every number of "
            "every run, with time, parameters, hardware and caveats: {doc}`tables` "
            "and {download}`details.csv <details.csv>`.\n")
        head.to_csv(book.src_dir / "headline.csv", index=False)
        lines.append("Download: {download}`headline.csv <headline.csv>`.\n")
    else:
        lines.append("No training run of this profile has finished yet.\n")

    lines.append("## What the runs show\n")
    lines.append("Written from the numbers of the run folders (`dml_core.report.findings`).\n")
    lines.append(study_findings(book.profile_dir, selection=sel) + "\n")
    lines.append(_seed_statistics(trained, tables.headline_selection(trained)))
    lines.append(_plateau_section(trained))

    sbs = [(k, t) for k, t in (("positive_proxy", "Positive proxy off / on"),
                               ("momentum", "Moving proxies: the momentum"),
                               ("loss", "Loss"))
           if len(tables.side_by_side(runs_df, k, profiles=[book.profile], selection=sel))]
    if sbs:
        lines.append("## Side by side\n")
        lines.append(f"Runs that differ in one setting only; R@1 (%) at {sel_words}, "
                     "mean ± 95 % half-width over seeds when there are several.\n")
        for key, title in sbs:
            lines.append(f"### {title}\n")
            lines.append(raw_html(_table_html(tables.side_by_side(
                runs_df, key, profiles=[book.profile], selection=sel))))

    if figures:
        lines.append("## Key figures\n")
        for rel, caption in figures:
            lines.append(f"```{{figure}} {rel}\n:width: 100%\n\n{caption}\n```\n")

    if failed:
        lines.append("## Failed runs\n")
        for r in failed:
            first = (r.error or "see its log").splitlines()[0]
            lines.append(f"- {{doc}}`{r.docname}`: {markdown_text(first)}")
        lines.append("")

    lines.append("```{toctree}\n:caption: Notebooks\n:maxdepth: 1\n\n"
                 + "\n".join(doc for doc, _t in chapters) + "\n```\n")
    methods = sorted((book.src_dir / "methods").glob("*.md"))
    if methods:
        lines.append("```{toctree}\n:caption: Methods\n:maxdepth: 1\n\n"
                     + "\n".join(f"methods/{p.stem}" for p in methods if p.stem != "index")
                     + "\n```\n")
    lines.append("```{toctree}\n:caption: Numbers\n:maxdepth: 1\n\ntables\n```\n")
    if failed:
        lines.append("```{toctree}\n:caption: Failed runs\n:maxdepth: 1\n\n"
                     + "\n".join(r.docname for r in failed) + "\n```\n")
    return "\n".join(lines)


def _plateau_section(runs_df) -> str:
    """Whether each configuration's validation curve has plateaued
    (:func:`dml_core.report.plateau.plateau_table`); "" when no run has a validation curve."""
    if runs_df is None or not len(runs_df):
        return ""
    from dml_core.methods.fair import PLATEAU_POINTS

    from .plateau import plateau_table
    from .runs import with_configs

    table = plateau_table(with_configs(runs_df))
    if not len(table):
        return ""
    shown = table.drop(columns=["config"]).assign(gain=table["gain"].map(lambda g: "—" if g != g else f"{g:+.1f}"),
                         plateaued=table["plateaued"].map({True: "yes", False: "no"}))
    shown = shown.rename(columns={"gain": "validation R@1 gained over the last third (points)"})
    from dml_core.methods.fair import plateau_verdict

    verdict = "Here: " + plateau_verdict(table, explain=True) + "."
    return "\n".join([
        "## Has training plateaued?\n",
        "The criterion of the fair protocol (docs/PROTOCOL.md): the mean over seeds of the "
        "validation R@1 gained over the last third of training, R@1(E) − R@1(E − round(E/3)) "
        f"(from the evaluated epoch at or before E − round(E/3)), is at most "
        f"{PLATEAU_POINTS:g} points. {verdict}\n",
        raw_html(_table_html(shown)), ""])


def _seed_statistics(runs_df, selection: str) -> str:
    """The means over seeds, intervals and paired comparisons (:func:`dml_core.report.stats.
    summarise`) when some configuration has two or more seeds; "" otherwise."""
    if runs_df is None or not len(runs_df):
        return ""
    try:
        from .runs import with_configs
        from .stats import summarise

        runs = with_configs(runs_df)
        if not (runs.groupby("config")["seed"].nunique() > 1).any():
            return ""
        res = summarise(runs, selection=selection)
    except Exception as exc:  # noqa: BLE001 - the rest of the page still builds
        return f"(The statistics over seeds could not be computed: {markdown_text(str(exc))})\n"
    from .stats import metric_name

    names = [metric_name(m) for m in res["metrics"]]
    out = ["## Seeds: means, intervals and paired differences\n",
           f"Test {' and '.join(names)} (%) at the `{selection}` epoch: mean [95 % t-interval] "
           "over seeds (P@1 equals R@1 here: one label per image). Paired by seed, A − B; "
           f"the {res['family']} paired tests are one family: a difference is called only when "
           "its Holm-adjusted p-value is at most 0.05, otherwise there is no detectable "
           "difference at that many seeds.\n"]
    head = res["headline"]
    if len(head):
        keep = ["label", "n", "seeds"] + [f"{n} (%)" for n in names if f"{n} (%)" in head]
        out.append(raw_html(_table_html(head[keep])))
    paired = res["paired"]
    if len(paired):
        out.extend(f"- {markdown_text(str(v))}" for v in paired["verdict"])
        out.append("")
    return "\n".join(out)


def _tables_page(book: Book, runs_df) -> str:
    from . import tables
    from .reported import reported_compact

    lines = ["---\nhtml_theme.sidebar_secondary.remove: true\n---\n", "# Every number\n",
             "One row per run of this profile: the reproduced R@1 (dense and binary) before "
             "training, at the best epoch on test, at the last epoch and, with a validation "
             "split, at the validation-selected epoch; MAP@R; cost; hardware; and, where the "
             "run has a published counterpart, the authors' parameters, hardware, source and "
             "caveats. Values in %. Download: {download}`details.csv <details.csv>`.\n"]
    det = tables.details_table(runs_df, profiles=[book.profile])
    det.to_csv(book.src_dir / "details.csv", index=False)
    if len(det):
        long_text = ["Source", "Caveats", "Hardware (authors)"]
        lines.append(raw_html(_table_html(det.drop(columns=long_text, errors="ignore"))))
        lines.append("The authors' hardware, sources and caveats of these rows are listed "
                     "under *Caveats and sources* below.\n")
    else:
        lines.append("No run yet.\n")
    lines.append("## The authors' numbers\n")
    lines.append("Every number the authors published that this study targets (R@1, %), with "
                 "its status: *reported* (a real result), *carry-over* (copied from another "
                 "method's README, never a target); Recall@K in %, in the order of the Ks "
                 "column. Download: "
                 "{download}`reported.csv <reported.csv>`.\n")
    try:
        rep = reported_compact()
        rep.to_csv(book.src_dir / "reported.csv", index=False)
        lines.append(raw_html(_table_html(rep.drop(columns=["Source", "Caveats", "Hardware"]))))
        lines.append("## Caveats and sources\n")
        from .reported import BACKBONE_NAMES, DATASET_NAMES, METHOD_NAMES, reported_entries

        groups: dict = {}
        for e in reported_entries():
            groups.setdefault((e.method, e.source, e.hardware), []).append(e)
        for (method, source, hw), entries in groups.items():
            cav = list(dict.fromkeys(c for e in entries for c in e.caveats))
            rows = ", ".join(dict.fromkeys(
                f"{DATASET_NAMES.get(e.dataset, e.dataset)} {BACKBONE_NAMES.get(e.backbone, e.backbone)}"
                for e in entries))
            lines.append(f"- **{markdown_text(METHOD_NAMES.get(method, method))}**, "
                         f"{markdown_text(source)}; hardware: {markdown_text(hw)}; rows: "
                         f"{markdown_text(rows)}."
                         + "".join(f"\n  - {markdown_text(c)}" for c in cav))
        lines.append("")
    except Exception as exc:  # noqa: BLE001 - the page still builds
        lines.append(f"(the authors' table could not be built: {exc})\n")
    return "\n".join(lines)


def _chapter_page(stem: str, title: str, pages: list[RunPage], runs_df) -> str:
    lines = [f"# {title}\n", f"This notebook ran {len(pages)} time(s) in this profile (one "
             "page per run below). Test R@1 of the pretrained network before fine-tuning "
             "(epoch 0) and at the epoch chosen on the validation classes (or, for a run "
             "without them, the best epoch on the test set, as the authors selected):\n"]
    import pandas as pd

    rows = []
    def pct(sel, col):
        v = sel[col].iloc[0] if len(sel) and col in sel else None
        return "—" if v is None or v != v else f"{100 * float(v):.1f}"

    for r in pages:
        sel = (runs_df[runs_df["run_id"] == r.id] if runs_df is not None and len(runs_df)
               else [])
        chosen = "val_sel/dense/R@1"
        if not len(sel) or chosen not in sel or sel[chosen].isna().all():
            chosen = "test_sel/dense/R@1"
        rows.append({"run": r.id, "setting": r.description, "status": r.status,
                     "R@1 pretrained (%)": pct(sel, "untrained/dense/R@1"),
                     "R@1 fine-tuned (%)": pct(sel, chosen)})
    lines.append(raw_html(_table_html(pd.DataFrame(rows))))
    done = [r for r in pages if r.status == "done"]
    for r in pages:
        if r.status == "failed":
            lines.append(f"- failed: {{doc}}`/{r.docname}`")
    lines.append("")
    if done:
        lines.append("```{toctree}\n:maxdepth: 1\n\n" + "\n".join(f"/{r.docname}" for r in done)
                     + "\n```\n")
    return "\n".join(lines)


def _failed_page(r: RunPage) -> str:
    """The page of a failed run: its error and the end of its log, each an escaped ``<pre>``
    block (:func:`.escape.pre_block`), never Markdown, so no text in them can act."""
    st = _status(r.run_dir)
    log = RunFolder(r.run_dir).log
    try:
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        tail = ["(no log)"]
    return "\n".join([
        f"# Failed: {markdown_text(r.id)}\n",
        f"Notebook {markdown_code(r.notebook + '.ipynb')}, {markdown_text(r.description)}. "
        f"Started {markdown_text(st.get('started_at') or '?')}, failed "
        f"{markdown_text(st.get('finished_at') or '?')}.\n",
        "**Error**\n", pre_block(r.error or "(no error recorded)"),
        f"**The last {len(tail)} lines of its log** "
        f"({markdown_code(f'runs/<profile>/{r.id}/{log.name}')})\n",
        pre_block("\n".join(tail)), ""])


# ------------------------------------------------------------------------------------------
def mathjax_dir() -> Path:
    from importlib import metadata

    try:
        dist = metadata.distribution("sphinx-mathjax-offline")
    except metadata.PackageNotFoundError as exc:
        raise BookError("the book needs the pip package sphinx-mathjax-offline (MathJax for "
                        "offline reading): run `make install` or `.venv/bin/pip install -e .`"
                        ) from exc
    path = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (path / MATHJAX_FILE).is_file():
        raise BookError(f"{path / MATHJAX_FILE} is missing: reinstall sphinx-mathjax-offline")
    return path


def _copy_mathjax(static: Path) -> None:
    src = mathjax_dir()
    dst = static / "mathjax"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / MATHJAX_FILE, dst / MATHJAX_FILE)
    for sub in ("input/tex/extensions", "ui", "a11y", "adaptors"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, dirs_exist_ok=True)


def write_sources(profile: str | os.PathLike, runs_root: str | os.PathLike | None = None) -> Book:
    """Write the Sphinx sources of the book to ``runs/<profile>/.book/src``; return the plan.

    ``profile``: a profile name (``profiles/<name>.yaml``) or the path of a profile file."""
    from dml_core.profiles import BatchError, load_profile

    from .runs import load_runs

    try:
        prof = load_profile(profile)
    except BatchError as exc:
        raise BookError(str(exc)) from exc
    profile = prof.name
    runs_root = Path(runs_root) if runs_root else paths.runs_root()
    profile_dir = (runs_root / profile).resolve()
    if not profile_dir.is_dir():
        raise BookError(f"no run folder {profile_dir}: run the study first "
                        f"(`python -m dml_core.batch --profile {profile}` or `make report`)")
    book = Book(profile=profile, profile_path=prof.path, description=prof.description,
                profile_dir=profile_dir, out_dir=profile_dir / BOOK_DIR,
                src_dir=profile_dir / SOURCE_DIR / "src")
    book.runs = collect_runs(prof, profile_dir)
    if not any(r.status in ("done", "failed") for r in book.runs):
        raise BookError(f"no run of profile {profile!r} has finished in {profile_dir}: run the "
                        f"batch first (`python -m dml_core.batch --profile {profile}`)")
    src = book.src_dir
    if src.exists():
        shutil.rmtree(src)
    (src / "_static").mkdir(parents=True)
    (src / "runs").mkdir()
    _copy_mathjax(src / "_static")
    (src / "_static" / "book.css").write_text(_CSS)
    runs_df = load_runs([profile_dir])

    methods_src = paths.REPO_ROOT / "docs" / "methods"
    if methods_src.is_dir():
        shutil.copytree(methods_src, src / "methods")
    methods_pages = {p.stem for p in (src / "methods").glob("*.md")}

    # one chapter per notebook, in reading order (the notebooks' numbers)
    by_nb: dict[str, list[RunPage]] = {}
    for r in book.runs:
        by_nb.setdefault(r.notebook, []).append(r)
    chapters: list[tuple[str, str]] = []
    failed: list[RunPage] = []
    for stem in sorted(by_nb):
        pages = by_nb[stem]
        title = notebook_title(pages[0].notebook_path or paths.NOTEBOOKS_DIR / f"{stem}.ipynb")
        for r in pages:
            if r.status == "done":
                nb = nbformat.read(str(RunFolder(r.run_dir).notebook), as_version=4)
                clean_notebook(nb)
                _link_methods(nb, methods_pages)
                if len(pages) > 1:
                    _retitle(nb, f"{r.id}: {markdown_text(r.description) or title}")
                r.docname = f"runs/{r.id}"
                nbformat.write(nb, str(src / f"{r.docname}.ipynb"))
            elif r.status == "failed":
                r.docname = f"failed/{r.id}"
                (src / "failed").mkdir(exist_ok=True)
                (src / f"{r.docname}.md").write_text(_failed_page(r))
                failed.append(r)
        if len(pages) == 1 and pages[0].status == "done":
            chapters.append((pages[0].docname, title))
        else:
            (src / "chapters").mkdir(exist_ok=True)
            (src / "chapters" / f"{stem}.md").write_text(
                _chapter_page(stem, title, pages, runs_df))
            chapters.append((f"chapters/{stem}", title))


    figures = []
    for i, (path, caption) in enumerate(_key_figures(profile_dir)):
        dst = src / "_static" / "figures" / f"{i:02d}_{path.name}"
        dst.parent.mkdir(exist_ok=True)
        shutil.copy2(path, dst)
        figures.append((f"_static/figures/{dst.name}", caption))

    (src / "tables.md").write_text(_tables_page(book, runs_df))
    (src / "index.md").write_text(_front_page(book, runs_df, chapters, failed, figures))
    title = f"dml_core report: {profile}"
    (src / "conf.py").write_text(_CONF.format(title=title, mathjax=MATHJAX_FILE))
    return book


def build_book(profile: str | os.PathLike, runs_root: str | os.PathLike | None = None,
               quiet: bool = True) -> Path:
    """Build the book of ``profile`` from ``runs_root/<profile>`` (default: the runs root).

    Returns the path of ``runs/<profile>/report/index.html``. Sphinx's warnings are written to
    ``report/build_warnings.txt`` (they do not stop the build). Raises :class:`BookError` when
    there is nothing to build or Sphinx fails.
    """
    book = write_sources(profile, runs_root)
    doctrees = book.profile_dir / SOURCE_DIR / "doctrees"
    for d in (doctrees, book.out_dir):
        if d.exists():
            shutil.rmtree(d)
    warn_file = book.profile_dir / SOURCE_DIR / "warnings.txt"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-d", str(doctrees),
           "-w", str(warn_file), str(book.src_dir), str(book.out_dir)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not book.index_html.is_file():
        raise BookError(f"Sphinx could not build the book of {book.profile!r} (exit "
                        f"{proc.returncode}):\n{proc.stderr[-4000:]}")
    warnings = warn_file.read_text() if warn_file.is_file() else ""
    (book.out_dir / "build_warnings.txt").write_text(warnings)
    if warnings.strip() and not quiet:
        print(f"book: {len(warnings.splitlines())} Sphinx warning line(s), see "
              f"{book.out_dir / 'build_warnings.txt'}", file=sys.stderr)
    return book.index_html


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dml_core.report.book",
        description="Build the report book (static HTML, offline) of a profile's executed "
                    "notebooks; print the path of its index.html.")
    p.add_argument("--profile", default="demo",
                   help="profile name or path of a profile file (default demo)")
    p.add_argument("--runs-root", help="root of the run folders (default $DML_RUNS_ROOT or runs/)")
    args = p.parse_args(argv)
    try:
        path = build_book(args.profile, args.runs_root, quiet=False)
    except BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
