"""The batch runner: execute a profile's notebooks with papermill and build the HTML report.

``python -m dml_core.batch --profile demo`` (what ``make report`` runs) reads
``profiles/demo.yaml`` (format: ``profiles/README.md``) and, for every run, in profile order:

1. skips it when it finished before with the same fingerprint (:mod:`dml_core.batch.execution`), unless
   ``--force``;
2. executes ``notebooks/<notebook>`` into its run folder ``runs/<profile>/<id>/`` (injected
   parameters ``profile``, ``run_dir`` and, with ``--data-root``, ``data_root``): the executed
   notebook, its HTML, ``log.txt``, ``status.json`` and, only after success, ``done.json``
   (:func:`dml_core.batch.execution.execute_run`);
3. rewrites ``runs/<profile>/index.html`` (the report: every run in profile order, linked, with
   status and time) and, at the end, ``runs/<profile>/batch_summary.json``.

A failing run does not stop the others; the exit code is 1 when any run failed, 2 for a bad
profile or command line.

One batch per profile at a time: the lock ``runs/<profile>/.batch.lock`` (:mod:`dml_core.core.locks`);
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

The layers: :mod:`dml_core.profiles` reads a profile (and the ``--set`` settings),
:mod:`dml_core.batch.execution` executes one run and decides whether it must run again,
:mod:`dml_core.batch.cluster` runs them as Slurm jobs; this module plans a batch, schedules it on this
machine or the cluster, and writes its report. It imports them; none of them imports it.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import html
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from dml_core.core import io, paths
from dml_core.batch.execution import (RUN_FILES, code_fingerprint, execute_run, fingerprint_parts,
                                inputs_of, notebook_fingerprint, now, read_status, sha256_of,
                                skip_reason, stale_readers)
from dml_core.profiles import (BatchError, Profile, ProfileError, Run, apply_settings,
                               default_stage, effective_parameters, list_profiles, load_profile,
                               parse_settings, resolve_profile_path, run_dir_of, select_runs)
from dml_core.profiles.status import MALFORMED

__all__ = ["RunResult", "BatchResult", "run_profile", "gpu_for_slot", "main",
           # re-exported from dml_core.profiles and dml_core.batch.execution for the batch's users
           "BatchError", "ProfileError", "Run", "Profile", "load_profile", "resolve_profile_path",
           "list_profiles", "default_stage", "parse_settings", "apply_settings",
           "notebook_fingerprint", "code_fingerprint"]

DEFAULT_KERNEL = "python3"


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
# Local scheduling (worker processes on this machine)
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


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


# ------------------------------------------------------------------------------------------
# The batch
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


SETTINGS_FILE = "batch_settings.json"


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
    (:mod:`dml_core.batch.cluster`; ``slurm``: overrides of the profile's ``slurm:`` settings, keys of
    :class:`dml_core.profiles.slurm.SlurmOptions`); ``jobs`` is then ignored.
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
        from dml_core.batch import cluster

        try:
            slurm_opts = cluster.slurm_options(prof.slurm, **(slurm or {}))
        except (ValueError, TypeError) as exc:
            raise BatchError(f"Slurm settings: {exc}") from exc
        jobs = 1  # the parallelism is the job array's
    selected = select_runs(prof.runs, only)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))

    code = code_fingerprint(paths.PACKAGE_DIR, prof.notebooks_dir)
    plans = []  # (run, run_dir, params, parts, fingerprint, skip, reason)
    for run in selected:
        rdir = run_dir_of(runs_root, prof.name, run.id)
        params = apply_settings(run, effective_parameters(run, prof.name, rdir, data_root),
                                settings)
        parts = fingerprint_parts(run, params, code)
        skip, reason = skip_reason(rdir, parts)
        if force and skip:
            skip, reason = False, "forced"
        plans.append((run, rdir, params, parts, sha256_of(parts), skip, reason))
    plans = stale_readers(plans, prof, runs_root)

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
            prev = read_status(rdir)
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
                "inputs": inputs_of(run, prof, runs_root),
                "env": task_env, "progress_bar": False,  # tqdm bars would mix with epoch lines
                "cell_lines": progress and not quiet and backend == "local"}

    def started(plan, slot) -> None:
        counter["n"] += 1
        gpu = gpu_for_slot(slot, gpus, visible)
        say(f"[{counter['n']}/{total}] start {plan[0].id} ({plan[0].notebook.name}, stage "
            f"{plan[0].stage}, {plan[6]}{', GPU ' + gpu if gpu else ''}) {now()}")
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

    from dml_core.core.locks import FileLock, LockError

    batch_lock = FileLock(runs_root / prof.name / BATCH_LOCK, timeout=0,
                          what=f"the batch of profile {prof.name!r} ({runs_root / prof.name})")
    try:
        batch_lock.acquire()
    except LockError as exc:  # held by another batch, or no working flock here
        raise BatchError(str(exc)) from None
    io.remove_temporaries(runs_root / prof.name)  # a killed batch's index.html, summary temps
    monitor = None
    if progress and not quiet and to_run:
        from dml_core.batch.progress import BatchProgress

        monitor = BatchProgress(slurm_opts.array_parallelism if slurm_opts else jobs, say)
        for plan in to_run:
            prev = read_status(plan[1])
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
                    finished(plan, execute_run(task_for(plan, 0)))
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
        "finished_at": now(), "elapsed_s": batch.elapsed_s, "jobs": jobs, "force": force,
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


def _record_settings(run_dir: Path, settings: dict[str, Any] | None) -> None:
    """``batch_settings.json`` in the run folder: the ``--set`` values it ran with (or none)."""
    path = run_dir / SETTINGS_FILE
    if settings:
        io.write_json(path, {"settings": settings, "shortened": True, "written_at": now()})
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
            running[pool.submit(execute_run, task_for(plan, slot))] = (plan, slot)
        done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            plan, slot = running.pop(fut)
            free_slots.append(slot)
            try:
                status = fut.result()
            except Exception as exc:  # the worker process died
                status = {"status": "failed", "elapsed_s": 0.0,
                          "error": f"worker crashed: {type(exc).__name__}: {exc}",
                          "started_at": None, "finished_at": now()}
                with contextlib.suppress(Exception):
                    io.write_json(Path(plan[1]) / RUN_FILES["status"],
                                  {"id": plan[0].id, **status})
            finished(plan, status)


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
                   "running": "#9a6700", "not run": "#6e7781", "malformed": "#cf222e"}


def write_index(prof: Profile, runs_root: Path, results: dict[str, RunResult]) -> Path:
    """``runs/<profile>/index.html``: every run of the profile in profile order, linked."""
    out = runs_root / prof.name / "index.html"
    rows = []
    for i, run in enumerate(prof.runs, 1):
        rdir = run_dir_of(runs_root, prof.name, run.id)
        res = results.get(run.id)
        st = read_status(rdir)
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
        why = ""  # a malformed status.json is reported on its row; the others are unaffected
        if res is None and st.get("status") == MALFORMED:
            status, why = "malformed status.json", st["error"]
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
            f"<td>{run.stage}</td><td style=\"color:{colour}\" title=\"{html.escape(why)}\">"
            f"{html.escape(status)}</td>"
            f"<td>{fmt_time(elapsed) if elapsed is not None else '-'}</td>"
            f"<td>{html.escape(finished or '')}</td><td>{log}</td></tr>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>dml_core report: {html.escape(prof.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}th{{background:#f4f4f4}}</style>
</head><body>
<h1>dml_core report: profile <code>{html.escape(prof.name)}</code></h1>
<p>{html.escape(prof.description)}</p>
<p>Notebooks in reading order. Updated {now()}.
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
    p.add_argument("--allow-unlocked", action="store_true",
                   help="run even where the file system has no working file locks (some NFS/"
                        "Lustre mounts; sets DML_ALLOW_UNLOCKED=1): at your risk, make sure only "
                        "one process writes each run folder and data set")
    p.add_argument("--profiles-dir", help=argparse.SUPPRESS)
    return p


def _slurm_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--slurm-*`` options that were given, as keys of
    :class:`dml_core.profiles.slurm.SlurmOptions`."""
    from dml_core.profiles.slurm import parse_sbatch_flags

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
    if args.allow_unlocked:  # the workers, kernels and Slurm jobs inherit it
        from dml_core.core.locks import ALLOW_UNLOCKED_ENV

        os.environ[ALLOW_UNLOCKED_ENV] = "1"
    try:
        settings = parse_settings(args.settings)
        if args.check:
            from dml_core.batch import preflight

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
    except io.DiskFullError as exc:  # the driver's own files (report, summary): one clear line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return result.exit_code

