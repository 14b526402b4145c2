"""The batch runner: execute a profile's notebooks with papermill and build the HTML report.

``python -m dml_core.batch --profile demo`` (what ``make report`` runs) reads
``profiles/demo.yaml`` (format: ``profiles/README.md``) and, for every run, in profile order:

1. skips it when it finished before with the same fingerprint (see below), unless ``--force``;
2. executes ``notebooks/<notebook>`` with papermill (``cwd`` = the notebooks folder; injected
   parameters ``profile``, ``run_dir`` and, with ``--data-root``, ``data_root``) into
   ``runs/<profile>/<id>/notebook.ipynb`` — while it runs, papermill saves progress into
   ``notebook.running.ipynb`` beside it; the final file is written atomically at the end, failed
   or not — and streams the cell outputs into ``runs/<profile>/<id>/log.txt``;
3. renders it to ``runs/<profile>/<id>/notebook.html`` (also when the notebook failed, so the
   traceback is readable), writes ``status.json`` and, only after success, ``done.json``;
4. rewrites ``runs/<profile>/index.html`` (the report: every run in profile order, linked, with
   status and time) and, at the end, ``runs/<profile>/batch_summary.json``.

A failing run does not stop the others; the exit code is 1 when any run failed, 2 for a bad
profile or command line.

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

One batch per profile at a time: the lock ``runs/<profile>/.batch.lock`` (:mod:`dml_core.locks`);
a second batch on the same profile is refused (exit 2) with a message naming the holder's pid.
Ctrl-C records ``interrupted`` in the running runs' ``status.json``.

Stages: a run may set ``stage: N``; by default notebooks numbered ``00`` are stage 0, ``06`` and
``08`` (which read other runs) stage 2, the rest stage 1. A stage starts when every run of the
previous stages has finished (failed ones included). Within a stage, ``--jobs N`` runs N notebooks
at once, each in its own worker process; where several GPUs are visible each worker gets one
(``CUDA_VISIBLE_DEVICES``, round robin over ``torch.cuda.device_count()``).

The kernels see ``DML_RUNS_ROOT`` (the runs root of this batch) and, with ``--data-root``,
``DML_DATA_ROOT``. The kernel is ``--kernel`` / ``$DML_KERNEL`` / ``python3``; a kernel spec whose
command is plain ``python`` runs the interpreter of this process (jupyter_client substitutes
``sys.executable``), i.e. the venv's ipykernel when the batch runs from the venv.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import datetime as _dt
import fnmatch
import hashlib
import html
import json
import logging
import multiprocessing
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Sequence

from dml_core import io, paths

# nbformat → jsonschema imports the optional ``rfc3987_syntax``, which compiles an Earley grammar
# at import time (2–3 s of CPU in every batch and worker process) only to check the "iri" string
# format, which notebook schemas do not use. Mark it unavailable unless something imported it.
if "rfc3987_syntax" not in sys.modules and "jsonschema" not in sys.modules:
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]

__all__ = [
    "BatchError",
    "ProfileError",
    "Run",
    "Profile",
    "RunResult",
    "BatchResult",
    "load_profile",
    "resolve_profile_path",
    "list_profiles",
    "run_profile",
    "notebook_fingerprint",
    "code_fingerprint",
    "gpu_for_slot",
    "main",
]

DEFAULT_KERNEL = "python3"
# Default stage by the notebook's two-digit prefix; any other notebook is stage DEFAULT_STAGE.
DEFAULT_STAGE_BY_PREFIX = {"00": 0, "06": 2, "08": 2}
DEFAULT_STAGE = 1
FINGERPRINT_VERSION = 1
RUN_FILES = {
    "notebook": "notebook.ipynb",
    "running": "notebook.running.ipynb",
    "html": "notebook.html",
    "log": "log.txt",
    "status": "status.json",
    "done": "done.json",
}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PROFILE_KEYS = {"name", "description", "runs", "parameters", "notebooks_dir", "slurm"}
_RUN_KEYS = {"id", "notebook", "parameters", "stage", "description"}
_INJECTED = ("profile", "run_dir", "data_root")


class BatchError(Exception):
    """Something prevents the batch from starting (bad profile, unknown kernel, ...)."""


class ProfileError(BatchError):
    """The profile file is malformed; the message names the file and the problem."""


@dataclasses.dataclass
class Run:
    id: str
    notebook: Path  # absolute path of the .ipynb
    parameters: dict[str, Any]  # the profile's parameters (no injected ones)
    stage: int
    description: str = ""


@dataclasses.dataclass
class Profile:
    name: str
    description: str
    runs: list[Run]
    path: Path | None
    notebooks_dir: Path
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)  # --backend slurm settings


@dataclasses.dataclass
class RunResult:
    id: str
    notebook: str
    status: str  # done | skipped | failed | would-run | would-skip
    elapsed_s: float
    run_dir: str
    log: str
    html: str
    stage: int
    reason: str = ""  # why it runs / is skipped
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class BatchResult:
    profile: str
    runs_root: Path
    results: list[RunResult]
    dry_run: bool = False
    elapsed_s: float = 0.0

    @property
    def profile_dir(self) -> Path:
        return self.runs_root / self.profile

    @property
    def index_html(self) -> Path:
        return self.profile_dir / "index.html"

    @property
    def summary_json(self) -> Path:
        return self.profile_dir / "batch_summary.json"

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if r.status in ("failed", "interrupted")]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def by_id(self) -> dict[str, RunResult]:
        return {r.id: r for r in self.results}


# ------------------------------------------------------------------------------------------
# Profiles
def resolve_profile_path(profile: str | os.PathLike, profiles_dir: Path | None = None) -> Path:
    """A profile name (``demo`` → ``profiles/demo.yaml``) or a path to a YAML file."""
    profiles_dir = Path(profiles_dir or paths.PROFILES_DIR)
    text = str(profile)
    candidate = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")) or os.sep in text or candidate.is_file():
        if not candidate.is_file():
            raise ProfileError(f"profile file not found: {candidate}")
        return candidate.resolve()
    for ext in (".yaml", ".yml"):
        path = profiles_dir / f"{text}{ext}"
        if path.is_file():
            return path
    known = ", ".join(p.stem for p in _profile_files(profiles_dir)) or "(none)"
    raise ProfileError(f"unknown profile {text!r}: no {profiles_dir / (text + '.yaml')}; "
                       f"available profiles: {known}")


def _profile_files(profiles_dir: Path) -> list[Path]:
    return sorted([*profiles_dir.glob("*.yaml"), *profiles_dir.glob("*.yml")])


def default_stage(notebook: str | Path) -> int:
    m = re.match(r"^(\d\d)", Path(notebook).name)
    return DEFAULT_STAGE_BY_PREFIX.get(m.group(1), DEFAULT_STAGE) if m else DEFAULT_STAGE


def load_profile(profile: str | os.PathLike, profiles_dir: Path | None = None,
                 notebooks_dir: Path | None = None, validate_params: bool = True) -> Profile:
    """Read and validate a profile; raise :class:`ProfileError` naming every problem found.

    Checks: required keys (``name``, ``runs``; each run ``id`` and ``notebook``), no unknown keys,
    ``name`` equal to the file name, ids unique and usable as folder names, notebook files exist,
    ``stage`` a non-negative int, and — for notebooks with a schema in
    :data:`dml_core.params.NOTEBOOK_PARAMETERS` — the parameters (see :mod:`dml_core.params`).
    """
    from dml_core import params as nbparams

    path = resolve_profile_path(profile, profiles_dir)
    try:
        data = io.read_yaml(path)
    except Exception as exc:  # yaml.YAMLError and friends
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    where = str(path)
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: a profile is a mapping with keys name, description, runs")
    problems: list[str] = []
    for key in ("name", "runs"):
        if key not in data:
            problems.append(f"missing top-level key {key!r}")
    unknown = sorted(set(data) - _PROFILE_KEYS)
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown}; allowed: {sorted(_PROFILE_KEYS)}")
    name = data.get("name")
    if "name" in data and (not isinstance(name, str) or not _ID_RE.match(name)):
        problems.append(f"name {name!r} must be a string of letters, digits, '_', '.', '-'")
    elif isinstance(name, str) and name != path.stem:
        problems.append(f"name {name!r} must equal the file name {path.stem!r}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        problems.append("description must be a string")
    defaults = data.get("parameters") or {}
    if not isinstance(defaults, dict):
        problems.append("parameters (defaults for every run) must be a mapping")
        defaults = {}
    if notebooks_dir is None:
        nbdir = data.get("notebooks_dir")
        notebooks_dir = (path.parent / nbdir).resolve() if nbdir else paths.NOTEBOOKS_DIR
    notebooks_dir = Path(notebooks_dir)
    runs_data = data.get("runs")
    if "runs" in data and (not isinstance(runs_data, list) or not runs_data):
        problems.append("runs must be a non-empty list of {id, notebook, parameters}")
        runs_data = []
    runs: list[Run] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(runs_data or []):
        label = f"runs[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{label} must be a mapping with keys id, notebook, parameters")
            continue
        run_id = entry.get("id")
        if isinstance(run_id, str):
            label = f"runs[{i}] (id {run_id!r})"
        for key in ("id", "notebook"):
            if key not in entry:
                problems.append(f"{label}: missing key {key!r}")
        bad = sorted(set(entry) - _RUN_KEYS)
        if bad:
            problems.append(f"{label}: unknown key(s) {bad}; allowed: {sorted(_RUN_KEYS)}")
        if "id" in entry:
            if not isinstance(run_id, str) or not _ID_RE.match(run_id):
                problems.append(f"{label}: id {run_id!r} must be letters, digits, '_', '.', '-'")
            elif run_id in seen:
                problems.append(f"{label}: duplicate id {run_id!r} (also runs[{seen[run_id]}])")
            else:
                seen[run_id] = i
        nb = entry.get("notebook")
        nb_path = None
        if "notebook" in entry:
            if not isinstance(nb, str) or not nb.endswith(".ipynb"):
                problems.append(f"{label}: notebook {nb!r} must be a .ipynb file name")
            else:
                nb_path = (notebooks_dir / nb).resolve()
                if not nb_path.is_file():
                    have = ", ".join(p.name for p in sorted(notebooks_dir.glob("*.ipynb")))
                    problems.append(f"{label}: unknown notebook {nb!r}: no file {nb_path}; "
                                    f"notebooks in {notebooks_dir}: {have or '(none)'}")
                    nb_path = None
        run_params = entry.get("parameters") or {}
        if not isinstance(run_params, dict):
            problems.append(f"{label}: parameters must be a mapping")
            run_params = {}
        clash = sorted(set(run_params) & {"profile", "run_dir"})
        if clash:
            problems.append(f"{label}: parameters {clash} are injected by the batch; remove them")
        stage = entry.get("stage")
        if stage is not None and (not isinstance(stage, int) or isinstance(stage, bool)
                                  or stage < 0):
            problems.append(f"{label}: stage {stage!r} must be a non-negative integer")
            stage = None
        if nb_path is None or not isinstance(run_id, str):
            continue
        merged = {**defaults, **run_params}
        stem = nbparams.notebook_stem(nb_path)
        if validate_params and stem in nbparams.NOTEBOOK_PARAMETERS:
            trial = {**merged, "profile": name if isinstance(name, str) else "x",
                     "run_dir": "/tmp/x"}
            try:
                nbparams.validate_parameters(stem, trial, resolve=False)
            except nbparams.ParameterError as exc:
                problems.extend(f"{label}: {p}" for p in exc.problems)
        runs.append(Run(id=run_id, notebook=nb_path, parameters=merged,
                        stage=default_stage(nb_path) if stage is None else stage,
                        description=str(entry.get("description") or "")))
    from dml_core.cluster import validate_slurm_block

    problems.extend(validate_slurm_block(data.get("slurm")))
    if problems:
        raise ProfileError(f"bad profile {where}:\n" + "\n".join(f"  - {p}" for p in problems))
    return Profile(name=name, description=description, runs=runs, path=path,
                   notebooks_dir=notebooks_dir, slurm=dict(data.get("slurm") or {}))


def list_profiles(profiles_dir: Path | None = None) -> list[tuple[str, str, int | None, str]]:
    """``(name, description, number of runs or None, error or "")`` for every profile file."""
    profiles_dir = Path(profiles_dir or paths.PROFILES_DIR)
    out = []
    for path in _profile_files(profiles_dir):
        try:
            p = load_profile(path)
            out.append((p.name, p.description, len(p.runs), ""))
        except BatchError as exc:
            out.append((path.stem, "", None, str(exc)))
    return out


# ------------------------------------------------------------------------------------------
# Fingerprints
def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def notebook_fingerprint(notebook: str | Path) -> str:
    """Hash of the notebook's code cells (source only; markdown, outputs, metadata ignored)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    return _sha([c.source for c in nb.cells if c.cell_type == "code"])


def code_fingerprint(*dirs: str | Path) -> str:
    """Hash of every ``.py`` file under ``dirs`` (default: the ``dml_core`` package)."""
    if not dirs:
        dirs = (Path(__file__).resolve().parent,)
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


def _fingerprint_parts(run: Run, params: dict[str, Any], code: str) -> dict[str, str]:
    return {"version": str(FINGERPRINT_VERSION), "notebook": notebook_fingerprint(run.notebook),
            "parameters": _sha(params), "code": code}


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
    ``run_dir`` read (its ``provenance.json`` files, the folder and one level below)."""
    from dml_core.data.index import index_fingerprint

    state: dict[str, str | None] = {}
    for prov in [run_dir / "provenance.json", *run_dir.glob("*/provenance.json")]:
        try:
            data_index = io.read_json(prov).get("data_index") or {}
        except Exception:
            continue
        for path in data_index.values():
            try:
                state[path] = index_fingerprint(path)
            except OSError:
                state[path] = None
    return state


def _skip_reason(run_dir: Path, parts: dict[str, str]) -> tuple[bool, str]:
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
    if stored.get("fingerprint") == _sha(parts):
        data = stored.get("data") or {}
        if data and _data_state(run_dir) != data:
            return False, "changed: prepared data"
        return True, "unchanged"
    old = stored.get("parts") or {}
    changed = [k for k in ("notebook", "parameters", "code", "version") if old.get(k) != parts[k]]
    return False, ("changed: " + ", ".join(changed)) if changed else "changed"


# ------------------------------------------------------------------------------------------
# Execution (in this process for --jobs 1, in worker processes otherwise)
def gpu_for_slot(slot: int, device_count: int, visible: str | None = None) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` value for worker ``slot``: None unless ≥ 2 GPUs exist.

    Round robin over the visible devices; ``visible`` is the parent's ``CUDA_VISIBLE_DEVICES``
    (its entries are kept, so ``"2,3"`` hands out ``"2"`` and ``"3"``).
    """
    if device_count < 2:
        return None
    ids = [s.strip() for s in visible.split(",")] if visible else []
    ids = [s for s in ids if s] or [str(i) for i in range(device_count)]
    return ids[slot % min(device_count, len(ids))]


def cpu_threads_per_job(jobs: int, gpus: int, user_setting: str | None,
                        cpus: int | None = None) -> str | None:
    """``OMP_NUM_THREADS`` for each of ``jobs`` CPU-only notebooks run at once: the cores shared
    out (at least 1), so that parallel jobs do not oversubscribe the machine. None (leave the
    environment alone) for one job, with GPUs, or when the user set ``OMP_NUM_THREADS``."""
    if jobs <= 1 or gpus > 0 or user_setting:
        return None
    return str(max(1, (cpus or os.cpu_count() or 1) // jobs))


def loader_workers_per_job(jobs: int, user_setting: str | None,
                           cpus: int | None = None) -> str | None:
    """``DML_NUM_WORKERS`` (DataLoader workers per loader) for each of ``jobs`` local runs at
    once: the CPUs granted to this process (``os.sched_getaffinity``) shared out, one kept for
    the run's main process. None (leave it to the loader) for one job or when the user set it."""
    if jobs <= 1 or user_setting:
        return None
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
    return str(max(0, cpus // jobs - 1))


def _kernel_config():
    """Kernel manager settings for papermill: CurveZMQ transport encryption where the kernel
    spec declares support (ipykernel's do), which also keeps the kernel's "running over TCP
    without encryption" warning out of the console; other kernels run as before."""
    import zmq
    from traitlets.config import Config

    if not zmq.has("curve"):  # libzmq without libsodium: 'auto' would be refused
        return Config()
    return Config({"AsyncKernelManager": {"transport_encryption": "auto"}})


def _cuda_device_count() -> int:
    """``torch.cuda.device_count()``; 0 without importing torch when no GPU device node exists."""
    if os.name == "posix" and Path("/dev").is_dir() and not (
            any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()):
        return 0
    try:
        import torch  # lazily: only --jobs > 1 needs it

        return int(torch.cuda.device_count())
    except Exception:
        return 0


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


@contextlib.contextmanager
def _environ(updates: dict[str, str | None]) -> Iterable[None]:
    saved = {k: os.environ.get(k) for k in updates}
    try:
        for k, v in updates.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


def _execute_run(task: dict[str, Any]) -> dict[str, Any]:
    """Execute one run; never raises. ``task`` is plain data so that it pickles to workers."""
    import nbformat
    import papermill

    run_dir = Path(task["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    out_nb, running = run_dir / RUN_FILES["notebook"], run_dir / RUN_FILES["running"]
    log_path, html_path = run_dir / RUN_FILES["log"], run_dir / RUN_FILES["html"]
    (run_dir / RUN_FILES["done"]).unlink(missing_ok=True)  # not done until it succeeds again
    started, t0 = _now(), time.time()
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
        status.update(status="interrupted", finished_at=_now(), elapsed_s=time.time() - t0,
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
                  finished_at=_now(), elapsed_s=elapsed, error=error)
    io.write_json(run_dir / RUN_FILES["status"], status)
    if not error:
        io.write_json(run_dir / RUN_FILES["done"], {
            "fingerprint": task["fingerprint"], "parts": task["parts"],
            "data": _data_state(run_dir),
            "inputs": {k: _done_marker(Path(d)) for k, d in (task.get("inputs") or {}).items()},
            "finished_at": status["finished_at"], "elapsed_s": elapsed,
            "parameters": task["parameters"], "kernel_name": task["kernel_name"]})
    return status


# ------------------------------------------------------------------------------------------
# The batch
def _select(runs: list[Run], only: str | Sequence[str] | None) -> list[Run]:
    if not only:
        return list(runs)
    items = [only] if isinstance(only, str) else list(only)
    patterns = [pat.strip() for item in items for pat in item.split(",") if pat.strip()]
    chosen = [r for r in runs if any(fnmatch.fnmatchcase(r.id, p) for p in patterns)]
    if not chosen:
        raise BatchError(f"--only {','.join(patterns)} matches no run; run ids: "
                         + ", ".join(r.id for r in runs))
    return chosen


def _check_kernel(kernel_name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        have = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "(none)"
        raise BatchError(f"no Jupyter kernel {kernel_name!r}; installed kernels: {have}. "
                         "Use --kernel NAME (or $DML_KERNEL), or install one with "
                         f"`{sys.executable} -m ipykernel install --sys-prefix --name dml_core`")
    exe = spec.argv[0] if spec.argv else ""
    if exe not in {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"} \
            and Path(exe).resolve() != Path(sys.executable).resolve():
        print(f"note: kernel {kernel_name!r} runs {exe}, not this interpreter {sys.executable}",
              file=sys.stderr)


def _run_dir(runs_root: Path, profile: str, run_id: str) -> Path:
    return (runs_root / profile / run_id).resolve()


def _effective_parameters(run: Run, profile: str, run_dir: Path, data_root) -> dict[str, Any]:
    params = dict(run.parameters)
    params["profile"] = profile
    params["run_dir"] = str(run_dir)
    if data_root is not None:
        params["data_root"] = str(Path(data_root).expanduser().resolve())
    return params


SETTINGS_FILE = "batch_settings.json"


def parse_settings(items: Sequence[str] | None) -> dict[str, Any]:
    """``["epochs=1", "rrc_scale=[0.5, 1]"]`` → ``{"epochs": 1, "rrc_scale": [0.5, 1]}``.

    Each value is read as YAML (numbers, booleans, ``null``, lists); a later KEY wins. Raises
    :class:`BatchError` for an item without ``=`` or with an empty key.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise BatchError(f"--set {item!r}: expected KEY=VALUE, e.g. --set epochs=1")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise BatchError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
    return out


def apply_settings(run: Run, params: dict[str, Any], settings: dict[str, Any] | None) -> dict[str, Any]:
    """The run's parameters with the profile-wide ``settings`` (``--set``) applied.

    A setting that is a parameter of the run's notebook (``device``, the toy's ``epochs``) sets
    that parameter. Notebooks with an ``overrides`` parameter (the training notebooks) get every
    other setting merged into ``overrides`` (the settings win), so the recipe code checks the keys
    and records them (``overrides``, ``shortened``, ``reported: None`` in the run's
    ``config.yaml`` and ``summary.json``). Other settings leave other notebooks unchanged.
    """
    if not settings:
        return params
    from dml_core import params as nbparams

    try:
        _, schema = nbparams._schema(run.notebook)
    except nbparams.ParameterError:
        schema = {}
    out = dict(params)
    own = {k: v for k, v in settings.items() if k in schema and k not in _INJECTED + ("overrides",)}
    out.update(own)
    if "overrides" in schema:
        from dml_core.recipes import list_recipes, recipe_by_name

        # a parameter of another notebook (e.g. 08's output_dir) that is no recipe key: not ours
        recipe_keys = {k for name in list_recipes() for k in recipe_by_name(name)}
        others = {k for sch in nbparams.NOTEBOOK_PARAMETERS.values() for k in sch} - recipe_keys
        rest = {k: v for k, v in settings.items() if k not in own and k not in others}
        if rest:
            out["overrides"] = {**dict(params.get("overrides") or {}), **rest}
    return out


def run_profile(profile: str | os.PathLike | Profile, *, jobs: int = 1, force: bool = False,
                only: str | Sequence[str] | None = None, dry_run: bool = False,
                runs_root: str | os.PathLike | None = None,
                data_root: str | os.PathLike | None = None,
                kernel_name: str | None = None, progress: bool = True,
                profiles_dir: Path | None = None, quiet: bool = False,
                settings: dict[str, Any] | None = None, backend: str = "local",
                slurm: dict[str, Any] | None = None) -> BatchResult:
    """Run a profile (name, path or :class:`Profile`); see the module docstring.

    ``settings`` (``--set KEY=VALUE``) are applied to every run by :func:`apply_settings`, take
    part in the fingerprint, and are written to ``<run_dir>/batch_settings.json`` and
    ``batch_summary.json``.

    Raises :class:`BatchError` (:class:`ProfileError`) before executing anything when the profile,
    ``only`` or the kernel is bad. Failed runs do not raise: check ``result.ok`` /
    ``result.exit_code``. With ``jobs > 1`` the workers are *spawned* processes: call this from
    a script only under ``if __name__ == "__main__":`` (notebooks and ``-m`` are fine).

    ``backend="slurm"`` submits each run to execute as a Slurm job through submitit
    (:mod:`dml_core.cluster`; ``slurm``: overrides of the profile's ``slurm:`` settings, keys of
    :class:`dml_core.cluster.SlurmOptions`); ``jobs`` is then ignored.
    """
    t_batch = time.time()
    prof = profile if isinstance(profile, Profile) else load_profile(profile, profiles_dir)
    runs_root = Path(runs_root).expanduser().resolve() if runs_root else paths.runs_root().resolve()
    kernel_name = kernel_name or os.environ.get("DML_KERNEL") or DEFAULT_KERNEL
    jobs = max(1, int(jobs))
    if backend not in ("local", "slurm"):
        raise BatchError(f"backend {backend!r} must be 'local' or 'slurm'")
    slurm_opts = None
    if backend == "slurm":
        from dml_core import cluster

        try:
            slurm_opts = cluster.slurm_options(prof.slurm, **(slurm or {}))
        except (ValueError, TypeError) as exc:
            raise BatchError(f"Slurm settings: {exc}") from exc
        jobs = 1  # the parallelism is the job array's
    selected = _select(prof.runs, only)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))

    code = code_fingerprint(Path(__file__).resolve().parent, prof.notebooks_dir)
    plans = []  # (run, run_dir, params, parts, fingerprint, skip, reason)
    for run in selected:
        rdir = _run_dir(runs_root, prof.name, run.id)
        params = apply_settings(run, _effective_parameters(run, prof.name, rdir, data_root),
                                settings)
        parts = _fingerprint_parts(run, params, code)
        skip, reason = _skip_reason(rdir, parts)
        if force and skip:
            skip, reason = False, "forced"
        plans.append((run, rdir, params, parts, _sha(parts), skip, reason))
    plans = _stale_readers(plans, prof, runs_root)

    def result_for(run, rdir, status, reason, **kw) -> RunResult:
        return RunResult(id=run.id, notebook=run.notebook.name, status=status, run_dir=str(rdir),
                         log=str(rdir / RUN_FILES["log"]), html=str(rdir / RUN_FILES["html"]),
                         stage=run.stage, reason=reason, elapsed_s=kw.pop("elapsed_s", 0.0), **kw)

    if dry_run:
        results = [result_for(run, rdir, "would-skip" if skip else "would-run", reason)
                   for run, rdir, _p, _pa, _f, skip, reason in plans]
        batch = BatchResult(prof.name, runs_root, results, dry_run=True)
        say(f"profile {prof.name}: dry run, nothing executed (runs root {runs_root})")
        say(format_table(batch, dry_run=True))
        return batch

    to_run = [p for p in plans if not p[5]]
    if to_run:
        _check_kernel(kernel_name)
    results: dict[str, RunResult] = {}
    for run, rdir, _params, _parts, _fp, skip, reason in plans:
        if skip:
            prev = _read_status(rdir)
            results[run.id] = result_for(run, rdir, "skipped", reason,
                                         elapsed_s=float(prev.get("elapsed_s") or 0.0),
                                         started_at=prev.get("started_at"),
                                         finished_at=prev.get("finished_at"))
    say(f"profile {prof.name}: {len(plans)} run(s) selected, {len(to_run)} to execute, "
        f"{len(plans) - len(to_run)} unchanged (skipped); jobs={jobs}; kernel={kernel_name}; "
        f"runs root {runs_root}")
    for r in results.values():
        say(f"  skip  {r.id} ({r.reason})")

    env = {"DML_RUNS_ROOT": str(runs_root)}
    if data_root is not None:
        env["DML_DATA_ROOT"] = str(Path(data_root).expanduser().resolve())
    gpus = _cuda_device_count() if jobs > 1 else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    total = len(to_run)
    counter = {"n": 0}

    def task_for(plan, slot: int) -> dict[str, Any]:
        run, rdir, params, parts, fp, _skip, _reason = plan
        _record_settings(rdir, settings)
        task_env = dict(env)
        gpu = gpu_for_slot(slot, gpus, visible)
        if gpu is not None:
            task_env["CUDA_VISIBLE_DEVICES"] = gpu
        threads = cpu_threads_per_job(jobs, gpus, os.environ.get("OMP_NUM_THREADS"))
        if threads is not None:
            task_env["OMP_NUM_THREADS"] = threads
        workers = loader_workers_per_job(jobs, os.environ.get("DML_NUM_WORKERS"))
        if workers is not None and backend == "local":
            task_env["DML_NUM_WORKERS"] = workers
        return {"id": run.id, "notebook": run.notebook.name, "notebook_path": str(run.notebook),
                "run_dir": str(rdir), "parameters": params, "kernel_name": kernel_name,
                "cwd": str(run.notebook.parent), "fingerprint": fp, "parts": parts,
                "inputs": _inputs_of(run, prof, runs_root),
                "env": task_env, "progress_bar": False,  # tqdm bars would mix with epoch lines
                "cell_lines": progress and not quiet and backend == "local"}

    def started(plan, slot) -> None:
        counter["n"] += 1
        gpu = gpu_for_slot(slot, gpus, visible)
        say(f"[{counter['n']}/{total}] start {plan[0].id} ({plan[0].notebook.name}, stage "
            f"{plan[0].stage}, {plan[6]}{', GPU ' + gpu if gpu else ''}) {_now()}")
        if monitor is not None:
            monitor.started(plan[0].id)

    def finished(plan, status: dict[str, Any]) -> None:
        run, rdir = plan[0], plan[1]
        res = result_for(run, rdir, status["status"], plan[6],
                         elapsed_s=float(status.get("elapsed_s") or 0.0),
                         error=status.get("error"), started_at=status.get("started_at"),
                         finished_at=status.get("finished_at"))
        results[run.id] = res
        word = "done  " if res.status == "done" else "FAILED"
        say(f"        {word} {run.id} in {fmt_time(res.elapsed_s)}"
            + (f": {res.error.splitlines()[0]} (log: {res.log})" if res.error else ""))
        if monitor is not None:
            monitor.finished(run.id, res.status, res.elapsed_s)
        write_index(prof, runs_root, results)

    from dml_core.locks import FileLock, LockHeldError

    batch_lock = FileLock(runs_root / prof.name / BATCH_LOCK, timeout=0,
                          what=f"the batch of profile {prof.name!r} ({runs_root / prof.name})")
    try:
        batch_lock.acquire()
    except LockHeldError as exc:
        raise BatchError(str(exc)) from None
    monitor = None
    if progress and not quiet and to_run:
        from dml_core.progress import BatchProgress

        monitor = BatchProgress(slurm_opts.array_parallelism if slurm_opts else jobs, say)
        for plan in to_run:
            prev = _read_status(plan[1])
            monitor.add(plan[0].id, plan[1], expected_s=prev.get("elapsed_s")
                        if prev.get("status") == "done" else None, kind=plan[0].notebook.name)
        monitor.start()
    if slurm_opts is not None:
        say(f"backend slurm: {slurm_opts.describe()}; submitit folder "
            f"{runs_root / prof.name / cluster.SLURM_DIR}")
    pool = (_Pool(min(jobs, len(to_run))) if jobs > 1 and len(to_run) > 1 and backend == "local"
            else None)
    try:
        for stage in sorted({p[0].stage for p in to_run}):
            stage_plans = [p for p in to_run if p[0].stage == stage]
            if slurm_opts is not None:
                cluster.run_stage(stage_plans, [task_for(p, 0) for p in stage_plans], slurm_opts,
                                  runs_root / prof.name / cluster.SLURM_DIR, finished, say,
                                  on_start=lambda plan: started(plan, 0),
                                  job_name=f"dml-{prof.name}-s{stage}")
            elif pool is None:
                for plan in stage_plans:
                    started(plan, 0)
                    finished(plan, _execute_run(task_for(plan, 0)))
            else:
                _run_parallel(stage_plans, pool, task_for, started, finished)
    finally:
        if pool is not None:
            pool.shutdown()
        if monitor is not None:
            monitor.stop()
        batch_lock.release()

    ordered = [results[p[0].id] for p in plans]
    batch = BatchResult(prof.name, runs_root, ordered, elapsed_s=time.time() - t_batch)
    write_index(prof, runs_root, results)
    io.write_json(batch.summary_json, {
        "profile": prof.name, "description": prof.description,
        "profile_file": str(prof.path) if prof.path else None, "runs_root": str(runs_root),
        "finished_at": _now(), "elapsed_s": batch.elapsed_s, "jobs": jobs, "force": force,
        "backend": backend,
        "only": only, "settings": settings or {}, "kernel_name": kernel_name,
        "exit_code": batch.exit_code,
        "counts": {s: sum(r.status == s for r in ordered) for s in ("done", "skipped", "failed")},
        "runs": [r.to_json() for r in ordered]})
    say(format_table(batch))
    say(f"report: {batch.index_html}")
    return batch


#: The lock file of a profile's runs folder: one batch per profile at a time.
BATCH_LOCK = ".batch.lock"


#: What makes a run folder an input of the tables and figures (the folder or one level below).
READ_OUTPUTS = ("summary.json", "provenance.json", "toy_study.json", "figures")


def _inputs_of(run: Run, prof: Profile, runs_root: Path) -> dict[str, str]:
    """``{run id: run folder}`` of the runs that ``run`` reads: when ``run.stage >=
    READS_RUNS_FROM_STAGE``, every run of an earlier stage of the profile whose folder holds
    results (:data:`READ_OUTPUTS`: a training or toy run), else none."""
    if run.stage < READS_RUNS_FROM_STAGE:
        return {}
    out = {}
    for r in prof.runs:
        rdir = _run_dir(runs_root, prof.name, r.id)
        if r.stage < run.stage and any(
                (rdir / name).exists() or any(rdir.glob(f"*/{name}")) for name in READ_OUTPUTS):
            out[r.id] = str(rdir)
    return out


def _stale_readers(plans: list, prof: Profile, runs_root: Path) -> list:
    """``plans`` with the skip decision of runs that read other runs revised: such a run is
    rerun when one of its input runs executes in this batch, or re-executed (or failed) since
    it was done (its done.json marker differs from the one recorded)."""
    executing = {p[0].id for p in plans if not p[5]}
    out = []
    for plan in plans:
        run, rdir, params, parts, fp, skip, reason = plan
        inputs = _inputs_of(run, prof, runs_root)
        if skip and inputs:
            rerun = sorted(set(inputs) & executing)
            if rerun:
                skip, reason = False, f"changed: inputs ({', '.join(rerun)} executes now)"
            else:
                with contextlib.suppress(Exception):
                    recorded = io.read_json(rdir / RUN_FILES["done"]).get("inputs")
                    now = {k: _done_marker(Path(d)) for k, d in inputs.items()}
                    if recorded != now:
                        changed = sorted(k for k in set(now) | set(recorded or {})
                                         if (recorded or {}).get(k) != now.get(k))
                        skip, reason = False, f"changed: inputs ({', '.join(changed)})"
        out.append((run, rdir, params, parts, fp, skip, reason))
    return out


def _record_settings(run_dir: Path, settings: dict[str, Any] | None) -> None:
    """``batch_settings.json`` in the run folder: the ``--set`` values it ran with (or none)."""
    path = run_dir / SETTINGS_FILE
    if settings:
        io.write_json(path, {"settings": settings, "shortened": True, "written_at": _now()})
    else:
        path.unlink(missing_ok=True)


class _Pool:
    """Worker processes (spawned, so CUDA state never forks), kept for the whole batch."""

    def __init__(self, workers: int):
        self.workers = workers
        self.ctx = multiprocessing.get_context("spawn")
        self.executor = cf.ProcessPoolExecutor(max_workers=workers, mp_context=self.ctx)

    def submit(self, fn, arg) -> cf.Future:
        try:
            return self.executor.submit(fn, arg)
        except cf.process.BrokenProcessPool:  # a worker died (e.g. out of memory): start anew
            self.executor.shutdown(wait=False)
            self.executor = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=self.ctx)
            return self.executor.submit(fn, arg)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


def _run_parallel(plans, pool: _Pool, task_for, started, finished) -> None:
    """Run ``plans`` (one stage) on ``pool``; each worker slot owns one GPU where several exist."""
    queue = list(plans)
    free_slots = list(range(pool.workers))
    running: dict[cf.Future, tuple] = {}
    while queue or running:
        while queue and free_slots:
            plan, slot = queue.pop(0), free_slots.pop(0)
            started(plan, slot)
            running[pool.submit(_execute_run, task_for(plan, slot))] = (plan, slot)
        done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            plan, slot = running.pop(fut)
            free_slots.append(slot)
            try:
                status = fut.result()
            except Exception as exc:  # the worker process died
                status = {"status": "failed", "elapsed_s": 0.0,
                          "error": f"worker crashed: {type(exc).__name__}: {exc}",
                          "started_at": None, "finished_at": _now()}
                with contextlib.suppress(Exception):
                    io.write_json(Path(plan[1]) / RUN_FILES["status"],
                                  {"id": plan[0].id, **status})
            finished(plan, status)


def _read_status(run_dir: Path) -> dict[str, Any]:
    with contextlib.suppress(Exception):
        return io.read_json(run_dir / RUN_FILES["status"])
    return {}


# ------------------------------------------------------------------------------------------
# Report
def _short(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def format_table(batch: BatchResult, dry_run: bool = False) -> str:
    rows = [("run", "status", "time", "reason" if dry_run else "log")]
    for r in batch.results:
        where = r.reason if dry_run else _short(r.log) if r.status != "skipped" else ""
        rows.append((r.id, r.status, "-" if dry_run else fmt_time(r.elapsed_s), where))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3]
             for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    if not dry_run:
        counts = {s: sum(r.status == s for r in batch.results) for s in ("done", "skipped", "failed")}
        lines.append(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} "
                     f"failed in {fmt_time(batch.elapsed_s)}")
    return "\n".join(lines)


_STATUS_COLOURS = {"done": "#1a7f37", "skipped": "#1a7f37", "failed": "#cf222e",
                   "running": "#9a6700", "not run": "#6e7781"}


def write_index(prof: Profile, runs_root: Path, results: dict[str, RunResult]) -> Path:
    """``runs/<profile>/index.html``: every run of the profile in profile order, linked."""
    out = runs_root / prof.name / "index.html"
    rows = []
    for i, run in enumerate(prof.runs, 1):
        rdir = _run_dir(runs_root, prof.name, run.id)
        res = results.get(run.id)
        st = _read_status(rdir)
        if res is not None:
            status, elapsed, finished = res.status, res.elapsed_s, res.finished_at
            if status == "skipped":
                status = "done (unchanged, skipped)"
        elif st:
            status, elapsed, finished = st.get("status", "?"), st.get("elapsed_s"), st.get(
                "finished_at")
            if status == "done":
                status = "done (earlier batch)"
        else:
            status, elapsed, finished = "not run", None, None
        colour = next((c for k, c in _STATUS_COLOURS.items() if status.startswith(k)), "#000")
        has_html = (rdir / RUN_FILES["html"]).is_file()
        link = (f'<a href="{html.escape(run.id)}/{RUN_FILES["html"]}">{html.escape(run.id)}</a>'
                if has_html else html.escape(run.id))
        log = (f'<a href="{html.escape(run.id)}/{RUN_FILES["log"]}">log</a>'
               if (rdir / RUN_FILES["log"]).is_file() else "")
        nb = (f'<a href="{html.escape(run.id)}/{RUN_FILES["notebook"]}">'
              f'{html.escape(run.notebook.name)}</a>' if (rdir / RUN_FILES["notebook"]).is_file()
              else html.escape(run.notebook.name))
        rows.append(
            f"<tr><td>{i}</td><td>{link}</td><td>{nb}</td><td>{html.escape(run.description)}</td>"
            f"<td>{run.stage}</td><td style=\"color:{colour}\">{html.escape(status)}</td>"
            f"<td>{fmt_time(elapsed) if elapsed is not None else '-'}</td>"
            f"<td>{html.escape(finished or '')}</td><td>{log}</td></tr>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>dml_core report: {html.escape(prof.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}th{{background:#f4f4f4}}</style>
</head><body>
<h1>dml_core report: profile <code>{html.escape(prof.name)}</code></h1>
<p>{html.escape(prof.description)}</p>
<p>Notebooks in reading order. Updated {_now()}.
<a href="batch_summary.json">batch_summary.json</a></p>
<table><thead><tr><th>#</th><th>run</th><th>notebook</th><th>description</th><th>stage</th>
<th>status</th><th>time</th><th>finished</th><th>log</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""
    io.write_text(out, page)
    return out


# ------------------------------------------------------------------------------------------
# CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dml_core.batch",
        description="Execute a profile's notebooks with papermill into runs/<profile>/ and write "
                    "the HTML report runs/<profile>/index.html. Exit code: 0 all ok, 1 a run "
                    "failed, 2 bad profile or arguments.")
    p.add_argument("--profile", help="profile name (profiles/<name>.yaml) or path to a YAML file")
    p.add_argument("--jobs", "-j", type=int, default=1, help="runs executed at once (default 1)")
    p.add_argument("--force", action="store_true", help="rerun runs that are unchanged and done")
    p.add_argument("--only", action="append", metavar="PATTERN",
                   help="run only ids matching this fnmatch pattern (repeatable, comma-separated)")
    p.add_argument("--dry-run", action="store_true", help="list what would run or be skipped")
    p.add_argument("--runs-root", help="root of run folders (default $DML_RUNS_ROOT or runs/)")
    p.add_argument("--data-root", help="data root, injected as the data_root parameter")
    p.add_argument("--kernel", help=f"Jupyter kernel (default $DML_KERNEL or {DEFAULT_KERNEL})")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress lines (cells, epochs, the batch line with the time left)")
    p.add_argument("--list-profiles", action="store_true", help="list the profiles and exit")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="settings",
                   help="override for every run (repeatable): merged into each training run's "
                        "recipe overrides (recorded and marked in the run folder), or set as a "
                        "parameter of the other notebooks that have KEY; e.g. --set epochs=1")
    p.add_argument("--check", action="store_true",
                   help="pre-flight: data sets prepared, checkpoints present and loadable, CUDA "
                        "usable when a run asks for it, disk space; report all, run nothing")
    p.add_argument("--backend", choices=("local", "slurm"), default="local",
                   help="local: worker processes on this machine (default); slurm: one Slurm job "
                        "per run through submitit, job arrays per stage (pip install -e "
                        "'.[cluster]'); settings: the profile's slurm: block and --slurm-*")
    g = p.add_argument_group("--backend slurm (override the profile's slurm: settings)")
    g.add_argument("--slurm-partition", metavar="NAME")
    g.add_argument("--slurm-time", type=int, metavar="MIN", dest="slurm_time_min",
                   help="time limit per job in minutes (a requeued job gets it again)")
    g.add_argument("--slurm-cpus", type=int, metavar="N", dest="slurm_cpus_per_task",
                   help="CPUs per task")
    g.add_argument("--slurm-mem-gb", type=float, metavar="GB")
    g.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per job (default 1)")
    g.add_argument("--slurm-array-parallelism", type=int, metavar="N",
                   help="jobs of a stage's array running at once (the %%N of --array)")
    g.add_argument("--slurm-max-requeues", type=int, metavar="N",
                   help="time-outs after which a job is not requeued")
    g.add_argument("--slurm-sbatch", action="append", metavar="KEY=VALUE",
                   help="extra sbatch flag, repeatable: --slurm-sbatch account=abc")
    g.add_argument("--slurm-executor", choices=("slurm", "local", "debug"),
                   help="submitit executor; local/debug run the jobs on this machine (tests)")
    p.add_argument("--profiles-dir", help=argparse.SUPPRESS)
    return p


def _slurm_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--slurm-*`` options that were given, as :class:`dml_core.cluster.SlurmOptions` keys."""
    from dml_core.cluster import parse_sbatch_flags

    keys = ("partition", "time_min", "cpus_per_task", "mem_gb", "gpus", "array_parallelism",
            "max_requeues", "executor")
    out = {k: getattr(args, f"slurm_{k}") for k in keys if getattr(args, f"slurm_{k}") is not None}
    try:
        sbatch = parse_sbatch_flags(args.slurm_sbatch)
    except ValueError as exc:
        raise BatchError(str(exc)) from exc
    if sbatch:
        out["sbatch"] = sbatch
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    profiles_dir = Path(args.profiles_dir) if args.profiles_dir else None
    if args.list_profiles:
        found = list_profiles(profiles_dir)
        if not found:
            print(f"no profiles in {profiles_dir or paths.PROFILES_DIR}")
        for name, desc, n, err in found:
            if err:
                print(f"{name:<12} INVALID: {err}")
            else:
                print(f"{name:<12} {n:>3} run(s)  {desc}")
        return 0
    if not args.profile:
        print("error: --profile NAME is required (see --list-profiles)", file=sys.stderr)
        return 2
    try:
        settings = parse_settings(args.settings)
        if args.check:
            from dml_core import preflight

            report = preflight.check_profile(args.profile, only=args.only, data_root=args.data_root,
                                             runs_root=args.runs_root, profiles_dir=profiles_dir,
                                             settings=settings)
            print(report.format())
            return 0 if report.ok else 1
        result = run_profile(args.profile, jobs=args.jobs, force=args.force, only=args.only,
                             dry_run=args.dry_run, runs_root=args.runs_root,
                             data_root=args.data_root, kernel_name=args.kernel,
                             progress=not args.no_progress, profiles_dir=profiles_dir,
                             settings=settings, backend=args.backend,
                             slurm=_slurm_overrides(args))
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
