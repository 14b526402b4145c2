"""The report book (dml_core.report.book), its compact tables and its findings.

Two books are built: a tiny one from a hand-made profile with one finished and one failed run
(fast; checks the page structure, the failed-run page, progress-noise removal and offline
assets), and the book of the session's smoke batch (fixture ``smoke`` in conftest.py), which must
have a page per notebook, the headline table, no CDN asset and no warning or error output.
"""
from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from dml_core.core import paths
from dml_core.report import book as bk
from dml_core.report.findings import comparison_findings, run_findings
from dml_core.report.tables import compact_table, mean_interval, run_settings, side_by_side


# ------------------------------------------------------------------------------ helpers
class _Assets(HTMLParser):
    """Collects the URLs a page loads: <script src>, <link href>, <img src>, <source src>."""

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.urls.append((tag, a["src"]))
        elif tag == "link" and a.get("href") and a.get("rel") not in ("canonical",):
            self.urls.append((tag, a["href"]))
        elif tag in ("img", "source", "iframe") and a.get("src"):
            self.urls.append((tag, a["src"]))


def remote_assets(out_dir: Path) -> list[str]:
    """Every http(s) URL loaded by a page (script, link, image) or by a style sheet (url(),
    @import: fonts included) of the built book."""
    bad = []
    for page in out_dir.rglob("*.html"):
        p = _Assets()
        p.feed(page.read_text(errors="replace"))
        bad += [f"{page.name}: <{t}> {u}" for t, u in p.urls if re.match(r"(https?:)?//", u)]
    for css in out_dir.rglob("*.css"):
        text = css.read_text(errors="replace")
        for m in re.finditer(r"(?:url\(\s*['\"]?|@import\s+['\"])((?:https?:)?//[^'\")\s]+)", text):
            bad.append(f"{css.name}: {m.group(1)}")
    return bad


def warning_outputs(page: Path) -> list[str]:
    """Outputs of a rendered notebook page that are stderr, an error, or text naming a warning."""
    text = page.read_text(errors="replace")
    found = []
    for cls in ("output stderr", "output traceback", "output error"):
        if f'class="{cls}' in text:
            found.append(f"{page.name}: an '{cls}' block")
    for block in re.findall(r'<div class="cell_output.*?</div>\s*</div>', text, flags=re.S):
        plain = re.sub(r"<[^>]+>", "", block)
        m = re.search(r"\w*(Warning|Error)\b[^\n]{0,120}", plain)
        if m:
            found.append(f"{page.name}: {m.group(0)}")
    return found


def _write_run(run_dir: Path, r1: tuple[float, float, float], *, method="normsoftmax",
               dataset="demo", seed=0, extra=None, status="complete"):
    """A minimal finished run folder: summary.json with untrained / best / last metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe = {"name": f"{method}/{dataset}/resnet18", "method": method, "dataset": dataset,
              "backbone": "resnet18", "crop": False, "seed": seed, "reported": None,
              **(extra or {})}

    def m(v, b=None):
        return {"test/dense/R@1": v, "test/binary/R@1": v * 0.8 if b is None else b,
                "test/dense/MAP@R": v / 3}

    summary = {"status": status, "recipe": recipe, "selection": "test", "epochs_completed": 3,
               "train_time_s": 12.0, "images_per_s": 100.0, "num_parameters": 1e6,
               "hardware": {"device": "cpu", "cpu": "test CPU"},
               "data": {"test_images": 100},
               "untrained": {"epoch": 0, "metrics": m(r1[0])},
               "best": {"epoch": 2, "metrics": m(r1[1])},
               "last": {"epoch": 3, "metrics": m(r1[2])}}
    (run_dir / "summary.json").write_text(json.dumps(summary))


# ------------------------------------------------------------------------------ unit tests
def test_clean_notebook_drops_progress_keeps_warnings():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr",
                               text="epoch 1:  40%|####      | 2/5 [00:01<00:02,  1.9batch/s]\n"),
        nbformat.v4.new_output("stream", name="stderr",
                               text="features: 100%|##########| 3/3 [00:00<00:00]\n"
                                    "UserWarning: something real\n"),
        nbformat.v4.new_output("stream", name="stdout", text="done\n")]
    nb.cells = [cell]
    nb, removed = bk.clean_notebook(nb)
    assert removed == 2
    texts = [(o.get("name"), o.get("text")) for o in nb.cells[0].outputs]
    assert texts == [("stderr", "UserWarning: something real\n"), ("stdout", "done\n")]


def test_mean_interval_t_interval():
    mean, half, n = mean_interval([50.0, 52.0, 54.0])
    assert n == 3 and mean == pytest.approx(52.0)
    assert half == pytest.approx(4.303 * 2.0 / math.sqrt(3), rel=1e-3)  # t(0.975, 2) = 4.303
    assert math.isnan(mean_interval([50.0])[1])


def test_compact_table_rows_settings_seeds_and_reported(tmp_path):
    from dml_core.report import load_runs

    prof = tmp_path / "p"
    for s, v in ((0, 0.50), (1, 0.52), (2, 0.54)):
        _write_run(prof / f"ap_m0.1_s{s}", (0.1, v, v), method="asymptotic_proxy", seed=s,
                   extra={"momentum": 0.1})
    _write_run(prof / "ap_m0.5", (0.1, 0.20, 0.20), method="asymptotic_proxy",
               extra={"momentum": 0.5})
    runs = load_runs([prof])
    settings = dict(zip(runs["run_id"], run_settings(runs)))
    assert settings["ap_m0.5"] == "momentum = 0.5" and settings["ap_m0.1_s1"] == "momentum = 0.1"
    t = compact_table(runs, expected=["asymptotic_proxy/cub/resnet50"])
    assert len(t) == 3, t  # two settings + one authors' row without a run
    col = "R@1 (reported | reproduced)"
    row = t[t["Setting"] == "momentum = 0.1"].iloc[0]
    assert row["Seeds"] == "3" and row[col] == "— | 52.0 ± 5.0"
    assert row["Epoch chosen on"] == "test (best)", "no validation split: the best test epoch"
    unrun = t[t["Data set"] == "CUB200-2011"].iloc[0]
    assert unrun[col] == "70.0 | not run", "the authors' number beside 'not run', never copied"
    sbs = side_by_side(runs, "momentum")
    assert list(sbs.columns[-3:]) == ["momentum = 0.1", "momentum = 0.5", "Epoch chosen on"]
    assert sbs.iloc[0]["momentum = 0.5"] == "20.0"


def test_findings_written_from_the_numbers(tmp_path):
    _write_run(tmp_path / "r", (0.097, 0.567, 0.55))
    text = run_findings(tmp_path / "r")
    assert "rose from 9.7 (untrained) to 56.7" in text
    assert "Binary codes keep 80 % of it (45.4)" in text
    assert "55.0 at the last epoch (3)" in text


def test_comparison_claims_only_with_paired_seeds(tmp_path):
    from dml_core.report import load_runs

    prof = tmp_path / "p"
    for s, (off, on) in enumerate(((0.30, 0.40), (0.31, 0.42), (0.29, 0.41))):
        _write_run(prof / f"pp_off_s{s}", (0.1, off, off), method="positive_proxy", seed=s,
                   extra={"positive_proxy": False})
        _write_run(prof / f"pp_on_s{s}", (0.1, on, on), method="positive_proxy", seed=s,
                   extra={"positive_proxy": True})
    lines = [_unescaped(x) for x in comparison_findings(load_runs([prof]))]
    assert len(lines) == 1 and "positive_proxy = on beats positive_proxy = off" in lines[0], lines
    one_seed = comparison_findings(load_runs([prof]).query("run_id.str.endswith('s0')"))
    assert "no ranking is claimed" in one_seed[0]


def _unescaped(markdown: str) -> str:
    """Markdown text without its backslash escapes (free text in findings is escaped)."""
    return re.sub(r"\\(.)", r"\1", markdown)


# ------------------------------------------------------------------------------ a tiny book
@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory):
    """A profile with a finished run (an executed-looking notebook with a formula, a progress
    bar on stderr and an image) and a failed run with its log."""
    root = tmp_path_factory.mktemp("book")
    profile = root / "tiny.yaml"
    profile.write_text(
        "name: tiny\ndescription: A tiny profile for the book test.\nruns:\n"
        "  - id: 00_prepare_data\n    notebook: 00_prepare_data.ipynb\n"
        "    parameters: {datasets: [demo]}\n    description: prepare\n"
        "  - id: 01_normsoftmax\n    notebook: 01_normsoftmax.ipynb\n"
        "    description: NormSoftmax\n")
    runs = root / "runs" / "tiny"
    done = runs / "00_prepare_data"
    done.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print('hi')")
    code.outputs = [nbformat.v4.new_output("stream", name="stderr",
                                           text="checking images: 100%|#####| 9/9 [00:00]\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="prepared\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# 00 · Prepare\n\n$$\\mathcal L = \\sum_i x_i$$"),
                code]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, str(done / "notebook.ipynb"))
    (done / "status.json").write_text(json.dumps({"status": "done"}))
    failed = runs / "01_normsoftmax"
    failed.mkdir()
    (failed / "status.json").write_text(json.dumps(
        {"status": "failed", "error": "RuntimeError: boom (in cell [4])",
         "started_at": "2026-01-01T00:00:00", "finished_at": "2026-01-01T00:00:05"}))
    (failed / "log.txt").write_text("line 1\nTraceback ...\nRuntimeError: boom\n")
    index = bk.build_book(profile, root / "runs")
    return {"index": index, "out": index.parent}


def test_tiny_book_pages_and_offline_assets(tiny_book):
    out = tiny_book["out"]
    assert tiny_book["index"] == out / "index.html" and out.name == "report"
    assert (out / "runs" / "00_prepare_data.html").is_file()
    failed = (out / "failed" / "01_normsoftmax.html").read_text()
    assert "RuntimeError: boom" in failed and "line 1" in failed
    assert (out / "search.html").is_file() and (out / "searchindex.js").is_file()
    page = (out / "runs" / "00_prepare_data.html").read_text()
    assert "100%|" not in page and "prepared" in page, "progress bars are removed, output kept"
    assert 'src="../_static/mathjax/tex-svg-full.js' in page
    assert (out / "_static" / "mathjax" / "tex-svg-full.js").stat().st_size > 500_000
    assert remote_assets(out) == []
    front = (out / "index.html").read_text()
    assert "Failed runs" in front and "01_normsoftmax" in front


def test_book_cli_errors_say_what_to_do(tmp_path, capsys):
    assert bk.main(["--profile", "smoke", "--runs-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run the study first" in err and "--profile smoke" in err


# ------------------------------------------------------------------------------ the smoke book
@pytest.fixture(scope="module")
def smoke_book(smoke):
    index = bk.build_book("smoke", smoke["root"] / "runs")
    return {"index": index, "out": index.parent, "profile_dir": smoke["profile_dir"]}


def test_smoke_book_has_a_page_per_notebook(smoke_book):
    from dml_core.batch import load_profile

    out = smoke_book["out"]
    for run in load_profile("smoke").runs:
        st = json.loads((smoke_book["profile_dir"] / run.id / "status.json").read_text())
        page = out / ("runs" if st["status"] == "done" else "failed") / f"{run.id}.html"
        assert page.is_file(), f"no page for {run.id} ({st['status']})"
    assert remote_assets(out) == [], "the book must read offline"


def test_smoke_book_front_page_headline_table(smoke_book):
    front = (smoke_book["out"] / "index.html").read_text()
    assert "Headline results" in front and 'class="dml-benchmark"' in front
    assert "reported | reproduced" in front
    for name in ("NormSoftmax", "AsymptoticProxy", "PP (positive proxy)", "CGD"):
        assert f"<td>{name}</td>" in front, name
    assert "What the runs show" in front and "R@1" in front
    assert (smoke_book["out"] / "_downloads").is_dir()


def test_smoke_book_pages_have_no_warning_or_error_output(smoke_book):
    found = []
    for page in sorted((smoke_book["out"] / "runs").glob("*.html")):
        found += warning_outputs(page)
    assert not found, "rendered pages show warnings or errors:\n" + "\n".join(found)
