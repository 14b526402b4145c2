"""One run of a profile executed into its run folder, and whether it must run again.

:func:`execute_run` executes a run's notebook with papermill (``cwd`` = the notebooks folder)
into ``<run_dir>/notebook.ipynb`` — while it runs, papermill saves progress into
``notebook.running.ipynb`` beside it; the final file is written atomically at the end, failed or
not — streams the cell outputs into ``log.txt``, renders ``notebook.html`` (also when the
notebook failed, so the traceback is readable), writes ``status.json`` and, only after success,
``done.json`` (:data:`RUN_FILES`). It never raises and takes plain data, so the same function
runs in the batch's process, in its worker processes and in a Slurm job (:mod:`dml_core.batch.cluster`).

Fingerprint (``done.json``): SHA-256 over (a) the notebook's *code* cells (markdown and outputs are
ignored, as jupyter-cache does; use ``--force`` to re-render after a prose edit), (b) the run's
complete parameters (injected ones included), (c) the source of every ``.py`` file of the
``dml_core`` package and of the notebooks folder (helpers imported by the notebooks). (c) is
deliberately coarse: any code change reruns every notebook, which is correct rather than fast.
Besides, a done run is rerun when (d) the prepared data its training read changed (done.json
keeps the data fingerprint of every ``provenance.json`` in the run folder, see
:mod:`dml_core.training.run_folder`), or (e) for a run of stage 2 or later (tables, figures:
they read the other runs), when any run of an earlier stage of the profile re-executes now or
re-executed since (its ``done.json`` changed or disappeared). Rerunning a training notebook is
cheap when nothing it depends on changed: ``train`` reuses a complete run folder only when its
recipe, training code and data fingerprints match, and retrains otherwise.
:func:`skip_reason` and :func:`stale_readers` decide from these; the batch driver
(:mod:`dml_core.batch`) plans and schedules the runs.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

from dml_core.core import io, paths
from dml_core.profiles import Profile, Run, run_dir_of

__all__ = [
    "RUN_FILES",
    "execute_run",
    "notebook_fingerprint",
    "code_fingerprint",
    "fingerprint_parts",
    "sha256_of",
    "skip_reason",
    "inputs_of",
    "stale_readers",
    "read_status",
    "render_html",
    "now",
]

FINGERPRINT_VERSION = 1
RUN_FILES = {
    "notebook": "notebook.ipynb",
    "running": "notebook.running.ipynb",
    "html": "notebook.html",
    "log": "log.txt",
    "status": "status.json",
    "done": "done.json",
}


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


def _done_marker(run_dir: Path) -> str | None:
    """What identifies the last successful execution of a run: its done.json fingerprint and
    finish time, or None when it has no done.json (never done, failed, or running)."""
    try:
        done = io.read_json(run_dir / RUN_FILES["done"])
    except Exception:
        return None
    return f"{done.get('fingerprint')}@{done.get('finished_at')}"


def _data_state(run_dir: Path) -> dict[str, str | None]:
    """``{index path: current data fingerprint}`` for every prepared index that a training in
    ``run_dir`` read (its ``provenance.json`` files, the folder and one level below), and
    ``{"weights:<file>": "present" | None}`` for the pretrained weights it started from (their
    names carry their SHA-256 prefix, so rebuilt weights have another name)."""
    from dml_core.data.index import index_fingerprint

    state: dict[str, str | None] = {}
    for prov in [run_dir / "provenance.json", *run_dir.glob("*/provenance.json")]:
        try:
            provenance = io.read_json(prov)
            data_index = provenance.get("data_index") or {}
            weights = provenance.get("weights") or {}
        except Exception:
            continue
        for path in data_index.values():
            try:
                state[path] = index_fingerprint(path)
            except OSError:
                state[path] = None
        if weights.get("file"):
            present = (paths.torch_checkpoint_dir() / weights["file"]).is_file()
            state[f"weights:{weights['file']}"] = "present" if present else None
    return state


def skip_reason(run_dir: Path, parts: dict[str, str]) -> tuple[bool, str]:
    """(skip?, reason) from the run folder's done.json."""
    done = run_dir / RUN_FILES["done"]
    if not done.is_file():
        return False, "not done before"
    try:
        stored = io.read_json(done)
    except Exception:
        return False, "done.json unreadable"
    if not (run_dir / RUN_FILES["notebook"]).is_file():
        return False, "executed notebook missing"
    if stored.get("fingerprint") == sha256_of(parts):
        data = stored.get("data") or {}
        if data and _data_state(run_dir) != data:
            return False, "changed: prepared data or pretrained weights"
        return True, "unchanged"
    old = stored.get("parts") or {}
    changed = [k for k in ("notebook", "parameters", "code", "version") if old.get(k) != parts[k]]
    return False, ("changed: " + ", ".join(changed)) if changed else "changed"


#: What makes a run folder an input of the tables and figures (the folder or one level below).
READ_OUTPUTS = ("summary.json", "provenance.json", "toy_study.json", "figures")


def inputs_of(run: Run, prof: Profile, runs_root: Path) -> dict[str, str]:
    """``{run id: run folder}`` of the runs that ``run`` reads: when ``run.stage >=
    READS_RUNS_FROM_STAGE``, every run of an earlier stage of the profile whose folder holds
    results (:data:`READ_OUTPUTS`: a training or toy run), else none."""
    if run.stage < READS_RUNS_FROM_STAGE:
        return {}
    out = {}
    for r in prof.runs:
        rdir = run_dir_of(runs_root, prof.name, r.id)
        if r.stage < run.stage and any(
                (rdir / name).exists() or any(rdir.glob(f"*/{name}")) for name in READ_OUTPUTS):
            out[r.id] = str(rdir)
    return out


def stale_readers(plans: list, prof: Profile, runs_root: Path) -> list:
    """``plans`` with the skip decision of runs that read other runs revised: such a run is
    rerun when one of its input runs executes in this batch, or re-executed (or failed) since
    it was done (its done.json marker differs from the one recorded)."""
    executing = {p[0].id for p in plans if not p[5]}
    out = []
    for plan in plans:
        run, rdir, params, parts, fp, skip, reason = plan
        inputs = inputs_of(run, prof, runs_root)
        if skip and inputs:
            rerun = sorted(set(inputs) & executing)
            if rerun:
                skip, reason = False, f"changed: inputs ({', '.join(rerun)} executes now)"
            else:
                with contextlib.suppress(Exception):
                    recorded = io.read_json(rdir / RUN_FILES["done"]).get("inputs")
                    current = {k: _done_marker(Path(d)) for k, d in inputs.items()}
                    if recorded != current:
                        changed = sorted(k for k in set(current) | set(recorded or {})
                                         if (recorded or {}).get(k) != current.get(k))
                        skip, reason = False, f"changed: inputs ({', '.join(changed)})"
        out.append((run, rdir, params, parts, fp, skip, reason))
    return out


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run folder's ``status.json``, or ``{}`` when it has none (or it is unreadable)."""
    with contextlib.suppress(Exception):
        return io.read_json(run_dir / RUN_FILES["status"])
    return {}


def now() -> str:
    """The local time with its offset, to the second (ISO 8601), as status files record it."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


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


def render_html(nb, html_path: Path) -> None:
    """Render a notebook node to HTML, atomically."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    io.write_text(html_path, body)


def execute_run(task: dict[str, Any]) -> dict[str, Any]:
    """Execute one run; never raises. ``task`` is plain data so that it pickles to workers."""
    import nbformat
    import papermill

    run_dir = Path(task["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    out_nb, running = run_dir / RUN_FILES["notebook"], run_dir / RUN_FILES["running"]
    log_path, html_path = run_dir / RUN_FILES["log"], run_dir / RUN_FILES["html"]
    (run_dir / RUN_FILES["done"]).unlink(missing_ok=True)  # not done until it succeeds again
    started, t0 = now(), time.time()
    status: dict[str, Any] = {"id": task["id"], "notebook": task["notebook"], "status": "running",
                              "started_at": started, "finished_at": None, "elapsed_s": None,
                              "error": None, "fingerprint": task["fingerprint"]}
    io.write_json(run_dir / RUN_FILES["status"], status)

    pm_logger = logging.getLogger("papermill")
    file_handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
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
    try:
        with _environ(task.get("env") or {}):
            nb = papermill.execute_notebook(
                task["notebook_path"], str(running), parameters=task["parameters"],
                kernel_name=task["kernel_name"], language="python", cwd=task["cwd"], log_output=True,
                config=_kernel_config(),
                progress_bar=bool(task.get("progress_bar")), request_save_on_cell_execute=True)
    except KeyboardInterrupt:  # Ctrl-C: say so in status.json, then stop the batch
        status.update(status="interrupted", finished_at=now(), elapsed_s=time.time() - t0,
                      error="interrupted (Ctrl-C)")
        io.write_json(run_dir / RUN_FILES["status"], status)
        raise
    except Exception as exc:  # PapermillExecutionError, dead kernel, ...
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
    if nb is None and running.is_file():
        with contextlib.suppress(Exception):
            nb = nbformat.read(str(running), as_version=4)
    if nb is not None:
        try:
            with io.atomic_path(out_nb) as tmp:
                nbformat.write(nb, str(tmp))
            running.unlink(missing_ok=True)
            render_html(nb, html_path)
        except Exception as exc:
            error = error or f"saving/rendering failed: {type(exc).__name__}: {exc}"
    elapsed = time.time() - t0
    interrupted = bool(error) and error.startswith("KeyboardInterrupt")  # Ctrl-C reached the kernel
    status.update(status="interrupted" if interrupted else "failed" if error else "done",
                  finished_at=now(), elapsed_s=elapsed, error=error)
    io.write_json(run_dir / RUN_FILES["status"], status)
    if not error:
        io.write_json(run_dir / RUN_FILES["done"], {
            "fingerprint": task["fingerprint"], "parts": task["parts"],
            "data": _data_state(run_dir),
            "inputs": {k: _done_marker(Path(d)) for k, d in (task.get("inputs") or {}).items()},
            "finished_at": status["finished_at"], "elapsed_s": elapsed,
            "parameters": task["parameters"], "kernel_name": task["kernel_name"]})
    return status

