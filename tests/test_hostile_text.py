"""Hostile text (issue 22): free text from data, errors and logs never acts in a page, run pages
open offline, and names that become folders are checked in full.

The book test builds a book (Sphinx, ~10 s) from runs whose error, log, class name, file name,
recipe values and description carry ``<script>``, an ``onerror`` attribute, indented and longer
fences and MyST ``{include}`` directives, then parses every page.
"""
from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
import yaml
from markdown_it import MarkdownIt

from dml_core.report import book as bk

MARK = "dml-xss"
SECRET = "SECRET-INCLUDED-4217"


def payload(secret: Path, rel: str) -> str:
    """Everything that once escaped its place: tags, an event handler, fences (indented, longer,
    tilde), MyST directives by absolute and by relative path, a role, math."""
    return (f'<script>alert("{MARK}")</script> <img src=x onerror=alert("{MARK}")>\n'
            "    ```\n````\n`````\n~~~\n"
            f'<script>alert("{MARK}")</script>\n'
            f"```{{include}} {secret}\n```\n"
            f"```{{include}} {rel}\n```\n"
            f":::{{include}} {rel}\n:::\n"
            f"{{download}}`{rel}` $\\href{{javascript:alert(1)}}{{x}}$ *em* [a](javascript:x)\n")


class _Live(HTMLParser):
    """What would act in a page: script bodies and sources, event-handler attributes,
    javascript: URLs."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self._in_script = tag == "script"
        for name, value in attrs:
            if name.startswith("on") and MARK in (value or ""):
                self.found.append(f"<{tag} {name}={value!r}>")
            v = (value or "").strip().lower()
            if name in ("href", "src") and v.startswith("javascript") and (
                    "alert" in v or v.endswith(":x")):
                self.found.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script and MARK in data:
            self.found.append(f"<script>{data[:80]}")


def live_in(page: Path) -> list[str]:
    p = _Live()
    text = page.read_text(errors="replace")
    p.feed(text)
    return p.found + ([f"{SECRET} (an include ran)"] if SECRET in text else [])


def test_escape_helpers_make_text_inert():
    from dml_core.report.escape import markdown_code, markdown_text, pre_block, raw_html

    text = "a *b* `c` <d> {include} $x$\n```\nend"
    md = markdown_text(text)
    assert "\n" not in md and "<" not in md.replace("\\<", "")
    assert re.sub(r"\\(.)", r"\1", md) == text.replace("\n", " ")
    assert markdown_code("x `y` z") == "``x `y` z``"
    block = pre_block("```\n</pre><script>x</script>")
    assert block.startswith("```{raw} html\n<pre") and "<script>" not in block
    assert "`" not in block.split("\n", 1)[1].rsplit("\n", 2)[0]  # no backtick inside
    assert raw_html("<p>````</p>").startswith("`````{raw} html")
    with pytest.raises(ValueError):
        raw_html(":file: /etc/hostname")


def _hostile_run_folder(run_dir: Path, bad: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe = {"name": "x", "method": bad, "dataset": bad, "backbone": "resnet18", "crop": False,
              "seed": 0, "reported": None}
    m = {"test/dense/R@1": 0.5, "test/binary/R@1": 0.4, "test/dense/MAP@R": 0.2}
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "complete", "recipe": recipe, "selection": "test", "epochs_completed": 2,
        "train_time_s": 3.0, "images_per_s": 10.0, "hardware": {"device": "cpu", "cpu": bad},
        "untrained": {"epoch": 0, "metrics": m}, "best": {"epoch": 1, "metrics": m},
        "last": {"epoch": 2, "metrics": m}}))


@pytest.fixture(scope="module")
def hostile_book(tmp_path_factory):
    from dml_core.report.findings import run_findings
    from dml_core.study.query import Retrieval

    root = tmp_path_factory.mktemp("hostile")
    secret = root / "secret.txt"
    secret.write_text(SECRET + "\n")
    runs = root / "runs" / "hostile"
    src_failed = runs / ".book" / "src" / "failed"  # where the failed page's source lies
    bad = payload(secret, os.path.relpath(secret, src_failed))
    (root / "hostile.yaml").write_text(yaml.safe_dump({
        "name": "hostile", "description": bad, "runs": [
            {"id": "00_prepare_data", "notebook": "00_prepare_data.ipynb",
             "parameters": {"datasets": ["demo"]}, "description": bad},
            {"id": "01_normsoftmax", "notebook": "01_normsoftmax.ipynb", "description": bad},
            {"id": "02_asymptotic_proxy", "notebook": "02_asymptotic_proxy.ipynb"}]}))
    done = runs / "00_prepare_data"
    _hostile_run_folder(done / "sub", bad)
    table = pd.DataFrame({"rank": [1], "similarity": [0.9], "label": [3], "class": [bad],
                          "path": [f"/data/{bad}/x.jpg"]})
    shown = Retrieval(query=f"/data/{bad}.jpg", table=table, figure=None,
                      embedding=torch.zeros(2), run_dir=done, checkpoint="best", gallery_size=1)
    failed_other = runs / "02_asymptotic_proxy"
    failed_other.mkdir(parents=True)
    (failed_other / "status.json").write_text(json.dumps({"status": "failed", "error": bad}))
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": shown._repr_html_(),
                                                     "text/plain": "r"}),
        nbformat.v4.new_output("display_data", data={"text/markdown": run_findings(done),
                                                     "text/plain": "f"}),
        nbformat.v4.new_output("display_data", data={
            "text/markdown": run_findings(failed_other), "text/plain": "g"}),
        nbformat.v4.new_output("stream", name="stdout", text=bad)]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 00 · Prepare"), cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, str(done / "notebook.ipynb"))
    (done / "status.json").write_text(json.dumps({"status": "done"}))
    failed = runs / "01_normsoftmax"
    failed.mkdir()
    error = f"ImageLoadError: cannot read image /data/cub/images/{bad}/x.jpg"
    (failed / "status.json").write_text(json.dumps(
        {"status": "failed", "error": error, "started_at": bad, "finished_at": "t"}))
    (failed / "log.txt").write_text("line 1\n" + bad + "\nlast line\n")
    index = bk.build_book(root / "hostile.yaml", root / "runs")
    return {"out": index.parent, "bad": bad}


def test_hostile_text_never_acts_in_any_page_of_the_book(hostile_book):
    out = hostile_book["out"]
    pages = sorted(out.rglob("*.html"))
    assert len(pages) > 5
    found = {p.relative_to(out).as_posix(): live_in(p) for p in pages}
    assert not {k: v for k, v in found.items() if v}, found
    failed = (out / "failed" / "01_normsoftmax.html").read_text()
    # the error and the log are there, as escaped text in <pre> blocks
    assert failed.count('<pre class="dml-log">') == 2
    assert "&lt;script&gt;alert(" in failed and "last line" in failed and "line 1" in failed
    front = (out / "index.html").read_text()
    assert "&lt;img src=x onerror" in front  # the error's first line, shown as text
    run_page = (out / "runs" / "00_prepare_data.html").read_text()
    assert "&lt;script&gt;" in run_page  # class and file names of the retrieval table


def test_run_findings_and_retrieval_table_escape_their_text(tmp_path):
    from dml_core.report.findings import run_findings
    from dml_core.study.query import Retrieval

    bad = "<img src=x onerror=alert(1)> `x` {include} /etc/hostname\n```\n# h"
    _hostile_run_folder(tmp_path / "r", bad)
    rendered = MarkdownIt("commonmark").render(run_findings(tmp_path / "r"))
    assert "<img" not in rendered and "<code" not in rendered and "<h1" not in rendered
    assert "&lt;img src=x onerror=alert(1)&gt; `x` {include}" in rendered  # shown as text
    table = pd.DataFrame({"class": [bad], "path": [bad]})
    r = Retrieval(query=f"/d/{bad}.png", table=table, figure=None, embedding=torch.zeros(1),
                  run_dir=tmp_path / "r", checkpoint="best", gallery_size=1)
    assert "<img" not in r._repr_html_()


# ------------------------------------------------------------------------ run pages offline
class _Loads(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) and (tag != "a" or key == "src"):
                self.urls.append(a[key])


def test_each_run_page_opens_offline(tmp_path):
    from dml_core.batch.execution import render_html

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\n\n$$\\mathcal L = \\sum_i x_i$$"),
        nbformat.v4.new_code_cell("1")])
    page = tmp_path / "runs" / "p" / "r1" / "notebook.html"
    render_html(nb, page)
    text = page.read_text()
    p = _Loads()
    p.feed(text)
    remote = [u for u in p.urls if re.match(r"(https?:)?//", u)]
    remote += re.findall(r"(?:import\(|@import\s+|url\()\s*['\"]?((?:https?:)?//[^'\")\s]+)", text)
    assert remote == [], remote
    scripts = [u for u in p.urls if u.endswith(".js")]
    assert scripts, "MathJax is loaded (from a local copy)"
    for url in scripts:
        assert (page.parent / url).resolve().is_file(), url


# ------------------------------------------------------------------------ names
def test_names_that_become_folders_are_matched_in_full(tmp_path):
    from dml_core.core.paths import check_name
    from dml_core.profiles import ProfileError, load_profile, run_dir_of
    from dml_core.profiles.params import ParameterError, validate_parameters

    for bad in ("run1\n", "../x", "a/b", ".hidden", "", "x\ny"):
        with pytest.raises(ValueError):
            check_name(bad)
        with pytest.raises(ProfileError):
            run_dir_of(tmp_path, "p", bad)
        with pytest.raises(ProfileError):
            run_dir_of(tmp_path, bad, "r")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"name": "p", "runs": [
        {"id": "run1\n", "notebook": "07_toy_proxies.ipynb"}]}))
    with pytest.raises(ProfileError, match="run1"):
        load_profile(tmp_path / "p.yaml")
    with pytest.raises(ParameterError, match="profile name"):
        validate_parameters("07_toy_proxies", {"profile": "../../elsewhere"}, resolve=False)


def test_profile_names_of_the_report_commands_are_checked(tmp_path, capsys):
    from dml_core.report import replicate
    from dml_core.report.figures import refresh_readme_figures

    with pytest.raises(ValueError, match="profile name"):
        replicate.results_dir("../../outside")
    with pytest.raises(ValueError, match="profile name"):
        refresh_readme_figures("../x", runs_root=tmp_path, dest=tmp_path / "f")
    with pytest.raises(SystemExit) as exc:
        replicate.main(["--profile", "study\n", "--save"])
    assert exc.value.code == 2 and "profile name" in capsys.readouterr().err


def _one_cell_notebook(path: Path) -> None:
    params = nbformat.v4.new_code_cell("profile = None\nrun_dir = None")
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), params,
                                         nbformat.v4.new_code_cell("print('ok')")])
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


@pytest.mark.parametrize("content", ['[1, 2]', '{"status": 5}', '{"status": "done", '
                                     '"elapsed_s": "abc", "finished_at": 7}', "{not json"])
def test_a_malformed_status_is_reported_for_its_run(tmp_path, content):
    from dml_core.batch.driver import write_index
    from dml_core.profiles import load_profile
    from dml_core.core.run_folder import read_status

    _one_cell_notebook(tmp_path / "nb" / "01_a.ipynb")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"name": "p", "notebooks_dir": "nb", "runs": [
        {"id": "a", "notebook": "01_a.ipynb"}, {"id": "b", "notebook": "01_a.ipynb"}]}))
    prof = load_profile(tmp_path / "p.yaml")
    (tmp_path / "runs" / "p" / "b").mkdir(parents=True)
    (tmp_path / "runs" / "p" / "b" / "status.json").write_text(content)
    st = read_status(tmp_path / "runs" / "p" / "b")
    assert st["status"] == "malformed" and "status.json is malformed" in st["error"]
    page = write_index(prof, tmp_path / "runs", {}).read_text()
    assert "malformed status.json" in page and "not run" in page  # run a is unaffected
    pages = bk.collect_runs(prof, tmp_path / "runs" / "p")
    assert [r.status for r in pages] == ["not run", "failed"]


def test_the_batch_goes_on_past_a_malformed_status(tmp_path):
    from dml_core.batch.driver import run_profile

    _one_cell_notebook(tmp_path / "nb" / "01_a.ipynb")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"name": "p", "notebooks_dir": "nb", "runs": [
        {"id": "a", "notebook": "01_a.ipynb"}, {"id": "b", "notebook": "01_a.ipynb"}]}))
    (tmp_path / "runs" / "p" / "b").mkdir(parents=True)
    (tmp_path / "runs" / "p" / "b" / "status.json").write_text('["garbage"]')
    result = run_profile(tmp_path / "p.yaml", only="a", runs_root=tmp_path / "runs", quiet=True)
    assert result.ok and result.by_id()["a"].status == "done"
    assert "malformed status.json" in result.index_html.read_text()
