"""One run of a profile executed into its run folder, and whether it must run again.

:func:`execute_run` executes a run's notebook with papermill (``cwd`` = the notebooks folder)
into the run folder's executed notebook (:class:`dml_core.core.run_folder.RunFolder`) — while it
runs, papermill saves progress into a "running" copy beside it; the final file is written
atomically at the end, failed or not — streams the cell outputs into its log, renders its HTML
(also when the notebook failed, so the traceback is readable; a page that opens offline,
:func:`render_html`), writes its status and, only after success, its done marker. It first
removes what a killed execution of the same run left (the ``.*.tmp`` files of its folder). It never raises and takes plain data, so the same function runs in the
batch's process, in its worker processes and in a Slurm job (:mod:`dml_core.batch.cluster`).

Fingerprint (the done marker): SHA-256 over (a) the notebook's *code* cells (markdown and outputs
are ignored, as jupyter-cache does; use ``--force`` to re-render after a prose edit), (b) the run's
complete parameters (injected ones included), (c) the source of every ``.py`` file of the
``dml_core`` package and of the notebooks folder (helpers imported by the notebooks). (c) is
deliberately coarse: any code change reruns every notebook, which is correct rather than fast.
Besides, a done run is rerun when (d) the prepared data its training read changed (the done
marker keeps the data fingerprint of every training provenance in the run folder,
:meth:`RunFolder.provenances`), or (e) for a run of stage 2 or later (tables, figures: they read
the other runs), when any run of an earlier stage of the profile re-executes now or re-executed
since (its done marker changed or disappeared). Rerunning a training notebook is cheap when
nothing it depends on changed: ``train`` reuses a complete run folder only when its recipe,
training code and data fingerprints match, and retrains otherwise.

A :class:`Plan` is what the batch decides for one run before executing anything;
:func:`skip_reason` and :func:`stale_readers` decide from the points above. The batch driver
(:mod:`dml_core.batch.driver`) plans and schedules the runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

import dml_core.batch.kernels as kernels
from dml_core.core import io, paths
from dml_core.core.clock import now
from dml_core.core.run_folder import RunFolder
from dml_core.profiles import Profile, Run, run_dir_of
from dml_core.core.run_folder import read_status  # status.json, checked (re-exported)

__all__ = [
    "Plan",
    "execute_run",
    "notebook_fingerprint",
    "code_fingerprint",
    "fingerprint_parts",
    "sha256_of",
    "skip_reason",
    "inputs_of",
    "stale_readers",
    "render_html",
]

FINGERPRINT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the batch decided for one run before executing anything."""

    run: Run
    run_dir: Path
    parameters: dict[str, Any]  # complete: the profile's, the injected ones, the --set values
    parts: dict[str, str]       # what the fingerprint hashes (:func:`fingerprint_parts`)
    fingerprint: str            # sha256_of(parts)
    skip: bool                  # done before with this fingerprint, nothing it reads changed
    reason: str                 # why it runs or is skipped, in words

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)


def sha256_of(obj: Any) -> str:
    """SHA-256 of ``obj`` as sorted JSON (the fingerprint of :func:`fingerprint_parts`)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def notebook_fingerprint(notebook: str | Path) -> str:
    """Hash of the notebook's code cells (source only; markdown, outputs, metadata ignored)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    return sha256_of([c.source for c in nb.cells if c.cell_type == "code"])


def code_fingerprint(*dirs: str | Path) -> str:
    """Hash of every ``.py`` file under ``dirs`` (default: the ``dml_core`` package)."""
    if not dirs:
        dirs = (paths.PACKAGE_DIR,)
    h = hashlib.sha256()
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            continue
        for f in sorted(d.rglob("*.py")):
            if "__pycache__" in f.parts or any(part.startswith(".") for part in
                                               f.relative_to(d).parts):
                continue
            h.update(f"{d.name}/{f.relative_to(d).as_posix()}\0".encode())
            h.update(f.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def fingerprint_parts(run: Run, params: dict[str, Any], code: str) -> dict[str, str]:
    """What a run's fingerprint hashes: notebook code cells, parameters, ``code`` (see above)."""
    return {"version": str(FINGERPRINT_VERSION), "notebook": notebook_fingerprint(run.notebook),
            "parameters": sha256_of(params), "code": code}


#: Runs of this stage or later read the runs of earlier stages (tables, figures).
READS_RUNS_FROM_STAGE = 2


def _done_marker(run_dir: str | Path) -> str | None:
    """What identifies the last successful execution of a run: its done marker's fingerprint
    and finish time, or None when it has none (never done, failed, or running)."""
    done = RunFolder(run_dir).read_done()
    return None if done is None else f"{done.get('fingerprint')}@{done.get('finished_at')}"


def _data_state(run_dir: Path) -> dict[str, str | None]:
    """``{index path: current data fingerprint}`` for every prepared index that a training in
    ``run_dir`` read (the provenance of the folder and of the run folders one level below), and
    ``{"weights:<file>": "present" | None}`` for the pretrained weights it started from (their
    names carry their SHA-256 prefix, so rebuilt weights have another name)."""
    from dml_core.data.index import index_fingerprint

    state: dict[str, str | None] = {}
    for provenance in RunFolder(run_dir).provenances():
        weights = provenance.get("weights") or {}
        for path in (provenance.get("data_index") or {}).values():
            try:
                state[path] = index_fingerprint(path)
            except OSError:
                state[path] = None
        if weights.get("file"):
            present = (paths.torch_checkpoint_dir() / weights["file"]).is_file()
            state[f"weights:{weights['file']}"] = "present" if present else None
    return state


def skip_reason(run_dir: Path, parts: dict[str, str]) -> tuple[bool, str]:
    """(skip?, reason) from the run folder's done marker."""
    run = RunFolder(run_dir)
    if not run.done.is_file():
        return False, "not done before"
    stored = run.read_done()
    if stored is None:
        return False, "done marker unreadable"
    if not run.notebook.is_file():
        return False, "executed notebook missing"
    if stored.get("fingerprint") == sha256_of(parts):
        data = stored.get("data") or {}
        if data and _data_state(run_dir) != data:
            return False, "changed: prepared data or pretrained weights"
        return True, "unchanged"
    old = stored.get("parts") or {}
    changed = [k for k in ("notebook", "parameters", "code", "version") if old.get(k) != parts[k]]
    return False, ("changed: " + ", ".join(changed)) if changed else "changed"


def inputs_of(run: Run, prof: Profile, runs_root: Path) -> dict[str, str]:
    """``{run id: run folder}`` of the runs that ``run`` reads: when ``run.stage >=
    READS_RUNS_FROM_STAGE``, every run of an earlier stage of the profile whose folder holds
    results (:meth:`RunFolder.holds_results`: a training or toy run), else none."""
    if run.stage < READS_RUNS_FROM_STAGE:
        return {}
    out = {}
    for r in prof.runs:
        rdir = run_dir_of(runs_root, prof.name, r.id)
        if r.stage < run.stage and RunFolder(rdir).holds_results():
            out[r.id] = str(rdir)
    return out


def stale_readers(plans: list[Plan], prof: Profile, runs_root: Path) -> list[Plan]:
    """``plans`` with the skip decision of runs that read other runs revised: such a run is
    rerun when one of its input runs executes in this batch, or re-executed (or failed) since
    it was done (its done marker differs from the one recorded)."""
    executing = {p.id for p in plans if not p.skip}
    out = []
    for plan in plans:
        inputs = inputs_of(plan.run, prof, runs_root)
        if plan.skip and inputs:
            rerun = sorted(set(inputs) & executing)
            recorded = (plan.folder.read_done() or {}).get("inputs")
            current = {k: _done_marker(d) for k, d in inputs.items()}
            if rerun:
                plan = dataclasses.replace(
                    plan, skip=False, reason=f"changed: inputs ({', '.join(rerun)} executes now)")
            elif recorded != current:
                changed = sorted(k for k in set(current) | set(recorded or {})
                                 if (recorded or {}).get(k) != current.get(k))
                plan = dataclasses.replace(
                    plan, skip=False, reason=f"changed: inputs ({', '.join(changed)})")
        out.append(plan)
    return out


def _kernel_config():
    """Kernel manager settings for papermill: CurveZMQ transport encryption where the kernel
    spec declares support (ipykernel's do), which also keeps the kernel's "running over TCP
    without encryption" warning out of the console; other kernels run as before."""
    import zmq
    from traitlets.config import Config

    if not zmq.has("curve"):  # libzmq without libsodium: 'auto' would be refused
        return Config()
    return Config({"AsyncKernelManager": {"transport_encryption": "auto"}})


@contextlib.contextmanager
def _environ(updates: dict[str, str | None]) -> Iterable[None]:
    """Set (a string) or unset (None) environment variables for the block, then restore them."""
    def apply(values: dict[str, str | None]) -> None:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    saved = {k: os.environ.get(k) for k in updates}
    try:
        apply(updates)
        yield
    finally:
        apply(saved)


class _CellProgress(logging.Filter):
    """Console lines ``[id] cell N`` for parallel runs (tqdm bars would collide)."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith("Executing Cell"):
            record.msg, record.args = f"[{self.run_id}] cell {msg[14:].strip('- ')}", ()
            return True
        return False


#: nbconvert's lab page without what it would fetch from a CDN (require.js, MathJax 2, mermaid,
#: widgets): MathJax 3 comes from the profile's own copy (:func:`page_mathjax`), or not at all.
_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}
{%- if resources.dml_mathjax_url -%}
<script>window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], processEscapes: true},
options: {enableMenu: false}, loader: {load: ['ui/safe']}};</script>
<script src="{{ resources.dml_mathjax_url | escape_html }}"></script>
{%- endif -%}
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""
#: Where a profile's run pages find MathJax: ``runs/<profile>/_static/mathjax/``.
PAGE_MATHJAX = ("_static", "mathjax")


def page_mathjax(profile_dir: Path) -> str | None:
    """The MathJax script of the run pages of ``profile_dir``, as a URL relative to a run folder:
    copied (once) from the offline package the book uses into ``<profile_dir>/_static/mathjax/``.
    None when that package is missing: the pages then show formulas as TeX source."""
    import shutil

    from dml_core.report.book import MATHJAX_FILE, BookError, mathjax_dir

    try:
        src = mathjax_dir()
    except BookError:
        return None
    dst = Path(profile_dir).joinpath(*PAGE_MATHJAX)
    for rel in (MATHJAX_FILE, "ui/safe.js"):
        target = dst / rel
        if not target.is_file() or target.stat().st_size != (src / rel).stat().st_size:
            with io.atomic_path(target) as tmp:
                shutil.copyfile(src / rel, tmp)
    return "../" + "/".join(PAGE_MATHJAX) + f"/{MATHJAX_FILE}"


def render_html(nb, html_path: Path) -> None:
    """Render a notebook node to HTML, atomically: a page that opens offline (nothing from a
    CDN; formulas by the profile's MathJax copy, :func:`page_mathjax`)."""
    import jinja2
    from nbconvert import HTMLExporter

    html_path = Path(html_path)
    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({"dml_offline.html.j2":
                                                              _OFFLINE_TEMPLATE})],
                            template_file="dml_offline.html.j2")
    body, _ = exporter.from_notebook_node(
        nb, resources={"dml_mathjax_url": page_mathjax(html_path.parent.parent)})
    io.write_text(html_path, body)


def execute_run(task: dict[str, Any]) -> dict[str, Any]:
    """Execute one run; never raises. ``task`` is plain data so that it pickles to workers."""
    import nbformat
    import papermill

    run = RunFolder(task["run_dir"])
    run.root.mkdir(parents=True, exist_ok=True)
    run.forget_done()  # not done until it succeeds again
    # what a killed run left: temporaries of atomic writes anywhere in its folder (this run's
    # own: the batch's lock keeps any other batch out of the profile's folders)
    io.remove_temporaries(run.root, recursive=True)
    started, t0 = now(), time.time()
    status: dict[str, Any] = {"id": task["id"], "notebook": task["notebook"], "status": "running",
                              "started_at": started, "finished_at": None, "elapsed_s": None,
                              "error": None, "fingerprint": task["fingerprint"]}
    run.write_status(status)

    pm_logger = logging.getLogger("papermill")
    file_handler = logging.FileHandler(run.log, mode="w", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handlers: list[logging.Handler] = [file_handler]
    if task.get("cell_lines"):
        console = logging.StreamHandler(sys.stdout)
        console.addFilter(_CellProgress(task["id"]))
        handlers.append(console)
    old_level = pm_logger.level
    pm_logger.setLevel(logging.INFO)
    for h in handlers:
        pm_logger.addHandler(h)
    error = None
    nb = None
    config = _kernel_config()
    kernel = None
    try:
        with _environ(task.get("env") or {}):
            # a local batch's worker keeps its kernel from one run to the next
            # (dml_core.batch.kernels); a new one starts here, with the task's environment
            kernel = kernels.kernel_for(task, config) if task.get("reuse_kernel") else None
            status["kernel"] = "reused" if kernel is not None and kernel.runs else "new"
            nb = papermill.execute_notebook(
                task["notebook_path"], str(run.running_notebook), parameters=task["parameters"],
                kernel_name=task["kernel_name"], language="python", cwd=task["cwd"], log_output=True,
                config=config, **({} if kernel is None else {"km": kernel.km}),
                progress_bar=bool(task.get("progress_bar")), request_save_on_cell_execute=True)
    except KeyboardInterrupt:  # Ctrl-C: say so in the status, then stop the batch
        if kernel is not None:
            kernels.release(kernel, ok=False)
        status.update(status="interrupted", finished_at=now(), elapsed_s=time.time() - t0,
                      error="interrupted (Ctrl-C)")
        run.write_status(status)
        raise
    except Exception as exc:  # noqa: BLE001 - whatever stops the notebook (PapermillExecutionError,
        # a dead kernel, a missing kernel spec, ...) is the run's failure, recorded, never raised
        if hasattr(exc, "ename") and hasattr(exc, "evalue"):  # PapermillExecutionError
            error = f"{exc.ename}: {exc.evalue} (in cell [{getattr(exc, 'exec_count', '?')}])"
        else:
            error = f"{type(exc).__name__}: {exc}".strip()
        pm_logger.error("run failed:\n%s", traceback.format_exc())
    finally:
        for h in handlers:
            pm_logger.removeHandler(h)
            h.close()
        pm_logger.setLevel(old_level)
    if kernel is not None:  # kept for the next run only after a clean one
        kernels.release(kernel, ok=error is None)
    if nb is None and run.running_notebook.is_file():
        with contextlib.suppress(OSError, ValueError):  # half written by a dead kernel: no copy
            nb = nbformat.read(str(run.running_notebook), as_version=4)
    if nb is not None:
        try:
            with io.atomic_path(run.notebook) as tmp:
                nbformat.write(nb, str(tmp))
            run.running_notebook.unlink(missing_ok=True)
            render_html(nb, run.html)
        except Exception as exc:  # noqa: BLE001 - nbconvert's templates and exporters fail in
            # many ways; the run's outcome must still be recorded below
            error = error or f"saving/rendering failed: {type(exc).__name__}: {exc}"
    elapsed = time.time() - t0
    interrupted = bool(error) and error.startswith("KeyboardInterrupt")  # Ctrl-C reached the kernel
    status.update(status="interrupted" if interrupted else "failed" if error else "done",
                  finished_at=now(), elapsed_s=elapsed, error=error)
    run.write_status(status)
    if not error:
        run.write_done({
            "fingerprint": task["fingerprint"], "parts": task["parts"],
            "data": _data_state(run.root),
            "inputs": {k: _done_marker(Path(d)) for k, d in (task.get("inputs") or {}).items()},
            "finished_at": status["finished_at"], "elapsed_s": elapsed,
            "parameters": task["parameters"], "kernel_name": task["kernel_name"]})
    return status

