"""The batch runner: execute a profile's notebooks with papermill and build the HTML report.

``python -m dml_core.batch --profile demo`` (what ``make report`` runs) reads
``profiles/demo.yaml`` (format: ``profiles/README.md``) and, for every run, in profile order:

1. skips it when it finished before with the same fingerprint (:mod:`dml_core.batch.execution`), unless
   ``--force``;
2. executes ``notebooks/<notebook>`` into its run folder ``runs/<profile>/<id>/`` (injected
   parameters ``profile``, ``run_dir`` and, with ``--data-root``, ``data_root``): the executed
   notebook, its HTML, its log, its status and, only after success, its done marker
   (:func:`dml_core.batch.execution.execute_run`; the files: :class:`dml_core.core.run_folder.RunFolder`);
3. rewrites ``runs/<profile>/index.html`` (the report: every run in profile order, linked, with
   status and time) and, at the end, ``runs/<profile>/batch_summary.json``.

A failing run does not stop the others; the exit code is 1 when any run failed, 2 for a bad
profile or command line.

One batch per profile at a time: the lock ``runs/<profile>/.batch.lock`` (:mod:`dml_core.core.locks`);
a second batch on the same profile is refused (exit 2) with a message naming the holder's pid.
Ctrl-C records ``interrupted`` in the running runs' status.

Stages: a run may set ``stage: N``; by default notebooks numbered ``00`` are stage 0, ``06`` and
``08`` (which read other runs) stage 2, the rest stage 1. A run starts when every run of the
previous stages has finished (failed ones included), or, where it lists ``needs``, when those have:
the demo's toy needs nothing, so it runs beside the data preparation (Slurm job arrays go stage by
stage). ``--jobs N`` runs N notebooks at once, each in its own worker process; where several GPUs
are visible each worker gets one (``CUDA_VISIBLE_DEVICES``, round robin over
``torch.cuda.device_count()``). A worker keeps its kernel from one run to the next, reset to a
new kernel's state (:mod:`dml_core.batch.kernels`; ``--fresh-kernels``: a new kernel per run).

The kernels see ``DML_RUNS_ROOT`` (the runs root of this batch) and, with ``--data-root``,
``DML_DATA_ROOT``. The kernel is ``--kernel`` / ``$DML_KERNEL`` / ``python3``; a kernel spec whose
command is plain ``python`` runs the interpreter of this process (jupyter_client substitutes
``sys.executable``), i.e. the venv's ipykernel when the batch runs from the venv.

The layers: :mod:`dml_core.profiles` reads a profile (and the ``--set`` settings),
:mod:`dml_core.batch.execution` executes one run and decides whether it must run again,
:mod:`dml_core.batch.cluster` runs them as Slurm jobs; this module plans a batch, schedules it on this
machine or the cluster, and writes its report. It imports them; none of them imports it.

Read top down, :func:`run_profile` is: load the profile, :func:`plan_runs` (a
:class:`~dml_core.batch.execution.Plan` per run: parameters, fingerprint, skip or run), a dry run
stops there; check the kernel, take the profile's batch lock, execute the stages
(:class:`_Execution`: worker processes here, or Slurm jobs), then write ``index.html`` and
``batch_summary.json``.
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
from typing import Any, Callable, Iterator, Sequence

from dml_core.batch.execution import (Plan, code_fingerprint, execute_run, fingerprint_parts,
                                      inputs_of, notebook_fingerprint, sha256_of, skip_reason,
                                      stale_readers)
import dml_core.batch.kernels as kernels
from dml_core.core import io, paths
from dml_core.core.clock import fmt_time, now
from dml_core.core.run_folder import RunFolder
from dml_core.profiles import (BatchError, Profile, ProfileError, Run, apply_settings,
                               default_stage, effective_parameters, list_profiles, load_profile,
                               parse_settings, resolve_profile_path, run_dir_of, select_runs)
from dml_core.core.run_folder import MALFORMED

__all__ = ["RunResult", "BatchResult", "BatchOptions", "run_profile", "plan_runs", "gpu_for_slot",
           "main",
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
    except (ImportError, RuntimeError):  # no torch, or a CUDA driver that does not initialise
        return 0


# ------------------------------------------------------------------------------------------
# The batch, top down: run_profile and its steps
def run_profile(profile: str | os.PathLike | Profile, *, jobs: int = 1, force: bool = False,
                only: str | Sequence[str] | None = None, dry_run: bool = False,
                runs_root: str | os.PathLike | None = None,
                data_root: str | os.PathLike | None = None,
                kernel_name: str | None = None, progress: bool = True,
                profiles_dir: Path | None = None, quiet: bool = False,
                settings: dict[str, Any] | None = None, backend: str = "local",
                slurm: dict[str, Any] | None = None, reuse_kernels: bool = True) -> BatchResult:
    """Run a profile (name, path or :class:`Profile`); see the module docstring.

    ``settings`` (``--set KEY=VALUE``) are applied to every run by :func:`apply_settings`, take
    part in the fingerprint, and are recorded in each run folder and in ``batch_summary.json``.

    Raises :class:`BatchError` (:class:`ProfileError`) before executing anything when the profile,
    ``only`` or the kernel is bad. Failed runs do not raise: check ``result.ok`` /
    ``result.exit_code``. With ``jobs > 1`` the workers are *spawned* processes: call this from
    a script only under ``if __name__ == "__main__":`` (notebooks and ``-m`` are fine).

    ``reuse_kernels``: each local worker keeps its kernel from one run to the next, reset to a new
    kernel's state (:mod:`dml_core.batch.kernels`; a run's ``status.json`` says ``kernel``: new or
    reused); False starts a new kernel for every run. Slurm jobs always start their own.

    ``backend="slurm"`` submits each run to execute as a Slurm job through submitit
    (:mod:`dml_core.batch.cluster`; ``slurm``: overrides of the profile's ``slurm:`` settings, keys of
    :class:`dml_core.profiles.slurm.SlurmOptions`); ``jobs`` is then ignored.
    """
    t0 = time.time()
    prof = profile if isinstance(profile, Profile) else load_profile(profile, profiles_dir)
    runs_root = Path(runs_root).expanduser().resolve() if runs_root else paths.runs_root().resolve()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    slurm_opts = _slurm_options(prof, backend, slurm)
    options = BatchOptions(
        jobs=1 if slurm_opts else max(1, int(jobs)),  # on Slurm, the job array is the parallelism
        kernel_name=kernel_name or os.environ.get("DML_KERNEL") or DEFAULT_KERNEL,
        data_root=data_root, settings=settings, slurm=slurm_opts,
        progress=progress and not quiet, say=say, reuse_kernels=reuse_kernels)

    plans = plan_runs(prof, runs_root, only=only, data_root=data_root, settings=settings,
                      force=force)
    if dry_run:
        return _dry_run(prof, runs_root, plans, say)
    if any(not p.skip for p in plans):
        _check_kernel(options.kernel_name)
    batch = _Execution(prof, runs_root, plans, options)
    batch.announce()
    with _batch_lock(prof, runs_root):
        batch.run_stages()
    result = BatchResult(prof.name, runs_root, batch.ordered(), elapsed_s=time.time() - t0)
    write_index(prof, runs_root, batch.results)
    _write_batch_summary(result, prof, options, force=force, only=only, backend=backend)
    say(format_table(result))
    say(f"report: {result.index_html}")
    return result


@dataclasses.dataclass
class BatchOptions:
    """How the runs of one batch execute (what :func:`run_profile` was asked)."""

    jobs: int                                  # runs at once on this machine
    kernel_name: str
    data_root: str | os.PathLike | None = None
    settings: dict[str, Any] | None = None     # --set KEY=VALUE
    slurm: Any = None                          # SlurmOptions: run as Slurm jobs
    progress: bool = True                      # epoch and batch lines
    say: Callable[..., None] = print
    reuse_kernels: bool = True                 # a worker keeps its kernel between runs


def jobs_sharing_this_machine(options: BatchOptions) -> int:
    """How many runs share this machine's cores at once: ``--jobs`` locally, the array's
    parallelism under submitit's local executor (its jobs are processes here, and each would
    otherwise take every core: 2 jobs of 2 threads and a loader worker each made the smoke
    profile's 2-step runs 2x slower), 1 on Slurm (a job gets the CPUs it asked for)."""
    if options.slurm is None:
        return options.jobs
    return int(options.slurm.array_parallelism) if options.slurm.executor == "local" else 1


def _slurm_options(prof: Profile, backend: str, overrides: dict[str, Any] | None):
    """The Slurm settings for ``backend="slurm"`` (the profile's, then ``overrides``); None for
    a local batch."""
    if backend not in ("local", "slurm"):
        raise BatchError(f"backend {backend!r} must be 'local' or 'slurm'")
    if backend == "local":
        return None
    from dml_core.batch import cluster

    try:
        return cluster.slurm_options(prof.slurm, **(overrides or {}))
    except (ValueError, TypeError) as exc:
        raise BatchError(f"Slurm settings: {exc}") from exc


def plan_runs(prof: Profile, runs_root: Path, *, only: str | Sequence[str] | None = None,
              data_root: str | os.PathLike | None = None,
              settings: dict[str, Any] | None = None, force: bool = False) -> list[Plan]:
    """A :class:`Plan` for every selected run of ``prof`` (``only``), in profile order: its
    complete parameters, its fingerprint and whether it is skipped (:func:`skip_reason`,
    :func:`stale_readers`; ``force`` reruns what would be skipped as unchanged)."""
    code = code_fingerprint(paths.PACKAGE_DIR, prof.notebooks_dir)
    plans = []
    for run in select_runs(prof.runs, only):
        rdir = run_dir_of(runs_root, prof.name, run.id)
        params = apply_settings(run, effective_parameters(run, prof.name, rdir, data_root),
                                settings)
        parts = fingerprint_parts(run, params, code)
        skip, reason = skip_reason(rdir, parts)
        if force and skip:
            skip, reason = False, "forced"
        plans.append(Plan(run, rdir, params, parts, sha256_of(parts), skip, reason))
    return stale_readers(plans, prof, runs_root)


def _result(plan: Plan, status: str, **kw: Any) -> RunResult:
    folder = plan.folder
    return RunResult(id=plan.id, notebook=plan.run.notebook.name, status=status,
                     run_dir=str(plan.run_dir), log=str(folder.log), html=str(folder.html),
                     stage=plan.run.stage, reason=kw.pop("reason", plan.reason),
                     elapsed_s=float(kw.pop("elapsed_s", None) or 0.0), **kw)


def _dry_run(prof: Profile, runs_root: Path, plans: list[Plan], say) -> BatchResult:
    """What would run or be skipped; nothing executes."""
    results = [_result(p, "would-skip" if p.skip else "would-run") for p in plans]
    batch = BatchResult(prof.name, runs_root, results, dry_run=True)
    say(f"profile {prof.name}: dry run, nothing executed (runs root {runs_root})")
    say(format_table(batch, dry_run=True))
    return batch


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


#: The lock file of a profile's runs folder: one batch per profile at a time.
BATCH_LOCK = ".batch.lock"


@contextlib.contextmanager
def _batch_lock(prof: Profile, runs_root: Path) -> Iterator[None]:
    """Hold the profile's batch lock; a second batch on the same profile is refused."""
    from dml_core.core.locks import FileLock, LockError

    lock = FileLock(runs_root / prof.name / BATCH_LOCK, timeout=0,
                    what=f"the batch of profile {prof.name!r} ({runs_root / prof.name})")
    try:
        lock.acquire()
    except LockError as exc:  # held by another batch, or no working flock here
        raise BatchError(str(exc)) from None
    io.remove_temporaries(runs_root / prof.name)  # a killed batch's index.html, summary temps
    try:
        yield
    finally:
        lock.release()


class _Execution:
    """The runs of one batch: those to execute, stage by stage, here or on Slurm, and a
    :class:`RunResult` for each (the skipped ones from their last status). Prints a line as
    each run starts and finishes, and rewrites ``index.html`` after each."""

    def __init__(self, prof: Profile, runs_root: Path, plans: list[Plan], options: BatchOptions):
        self.prof, self.runs_root, self.plans, self.options = prof, runs_root, plans, options
        self.to_run = [p for p in plans if not p.skip]
        self.results: dict[str, RunResult] = {p.id: self._skipped(p) for p in plans if p.skip}
        self.env = {"DML_RUNS_ROOT": str(runs_root)}
        if options.data_root is not None:
            self.env["DML_DATA_ROOT"] = str(Path(options.data_root).expanduser().resolve())
        self.gpus = _cuda_device_count() if options.jobs > 1 else 0
        self.visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.n_started = 0
        self.monitor = None

    @staticmethod
    def _skipped(plan: Plan) -> RunResult:
        prev = plan.folder.read_status()
        return _result(plan, "skipped", elapsed_s=prev.get("elapsed_s"),
                       started_at=prev.get("started_at"), finished_at=prev.get("finished_at"))

    def ordered(self) -> list[RunResult]:
        return [self.results[p.id] for p in self.plans]

    def announce(self) -> None:
        o = self.options
        o.say(f"profile {self.prof.name}: {len(self.plans)} run(s) selected, {len(self.to_run)} "
              f"to execute, {len(self.plans) - len(self.to_run)} unchanged (skipped); "
              f"jobs={o.jobs}; kernel={o.kernel_name}; runs root {self.runs_root}")
        for r in self.results.values():
            o.say(f"  skip  {r.id} ({r.reason})")

    def run_stages(self) -> None:
        """Execute the runs stage by stage (a stage starts when the previous one has ended)."""
        o = self.options
        self.monitor = self._start_monitor()
        if o.slurm is not None:
            from dml_core.batch import cluster

            o.say(f"backend slurm: {o.slurm.describe()}; submitit folder "
                  f"{self.runs_root / self.prof.name / cluster.SLURM_DIR}")
        pool = (_Pool(min(o.jobs, len(self.to_run)))
                if o.jobs > 1 and len(self.to_run) > 1 and o.slurm is None else None)
        try:
            if pool is not None:  # here, in parallel: each run as soon as what it needs is done
                _run_parallel(sorted(self.to_run, key=lambda p: p.run.stage), pool,
                              self.task_for, self.started, self.finished, self.waits())
            else:
                for stage in sorted({p.run.stage for p in self.to_run}):
                    self._run_stage(stage, [p for p in self.to_run if p.run.stage == stage])
        finally:
            if pool is not None:
                pool.shutdown()  # its workers shut their kernels down as they exit
            kernels.close_kernels()  # the kernel of runs executed in this process (--jobs 1)
            if self.monitor is not None:
                self.monitor.stop()

    def waits(self) -> dict[str, set[str]]:
        """For each run to execute, the runs to execute that it waits for: its ``needs``, by
        default every run of the earlier stages (a skipped run is done already)."""
        ids = {p.id for p in self.to_run}
        return {p.id: ({q.id for q in self.to_run if q.run.stage < p.run.stage}
                       if p.run.needs is None else set(p.run.needs) & ids)
                for p in self.to_run}

    def _run_stage(self, stage: int, plans: list[Plan]) -> None:
        """One stage, one run after another here or as a Slurm job array."""
        if self.options.slurm is not None:
            from dml_core.batch import cluster

            cluster.run_stage(plans, [self.task_for(p, 0) for p in plans], self.options.slurm,
                              self.runs_root / self.prof.name / cluster.SLURM_DIR, self.finished,
                              self.options.say, on_start=lambda plan: self.started(plan, 0),
                              job_name=f"dml-{self.prof.name}-s{stage}")
        else:
            for plan in plans:
                self.started(plan, 0)
                self.finished(plan, execute_run(self.task_for(plan, 0)))

    def _start_monitor(self):
        """Epoch and batch lines (:class:`dml_core.batch.progress.BatchProgress`), or None."""
        if not (self.options.progress and self.to_run):
            return None
        from dml_core.batch.progress import BatchProgress

        slots = self.options.slurm.array_parallelism if self.options.slurm else self.options.jobs
        monitor = BatchProgress(slots, self.options.say)
        for plan in self.to_run:
            prev = plan.folder.read_status()
            monitor.add(plan.id, plan.run_dir, kind=plan.run.notebook.name,
                        expected_s=prev.get("elapsed_s") if prev.get("status") == "done" else None)
        return monitor.start()

    def task_for(self, plan: Plan, slot: int) -> dict[str, Any]:
        """What :func:`execute_run` needs, as plain data (it pickles to workers and Slurm jobs);
        records the run's ``--set`` values in its folder."""
        o = self.options
        plan.folder.write_settings(o.settings, written_at=now())
        env = dict(self.env)
        gpu = gpu_for_slot(slot, self.gpus, self.visible)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        sharing = jobs_sharing_this_machine(o)
        threads = cpu_threads_per_job(sharing, self.gpus, os.environ.get("OMP_NUM_THREADS"))
        if threads is not None:
            env["OMP_NUM_THREADS"] = threads
        workers = loader_workers_per_job(sharing, os.environ.get("DML_NUM_WORKERS"))
        if workers is not None:  # None on Slurm: a job has the CPUs it asked for
            env["DML_NUM_WORKERS"] = workers
        run = plan.run
        return {"id": run.id, "notebook": run.notebook.name, "notebook_path": str(run.notebook),
                "run_dir": str(plan.run_dir), "parameters": plan.parameters,
                "kernel_name": o.kernel_name, "cwd": str(run.notebook.parent),
                "fingerprint": plan.fingerprint, "parts": plan.parts,
                "inputs": inputs_of(run, self.prof, self.runs_root),
                "env": env, "progress_bar": False,  # tqdm bars would mix with epoch lines
                "reuse_kernel": o.reuse_kernels and o.slurm is None,
                "cell_lines": o.progress and o.slurm is None}

    def started(self, plan: Plan, slot: int) -> None:
        self.n_started += 1
        gpu = gpu_for_slot(slot, self.gpus, self.visible)
        self.options.say(f"[{self.n_started}/{len(self.to_run)}] start {plan.id} "
                         f"({plan.run.notebook.name}, stage {plan.run.stage}, {plan.reason}"
                         f"{', GPU ' + gpu if gpu else ''}) {now()}")
        if self.monitor is not None:
            self.monitor.started(plan.id)

    def finished(self, plan: Plan, status: dict[str, Any]) -> None:
        res = _result(plan, status["status"], elapsed_s=status.get("elapsed_s"),
                      error=status.get("error"), started_at=status.get("started_at"),
                      finished_at=status.get("finished_at"))
        self.results[plan.id] = res
        word = "done  " if res.status == "done" else "FAILED"
        self.options.say(f"        {word} {plan.id} in {fmt_time(res.elapsed_s)}"
                         + (f": {res.error.splitlines()[0]} (log: {res.log})" if res.error else ""))
        if self.monitor is not None:
            self.monitor.finished(plan.id, res.status, res.elapsed_s)
        write_index(self.prof, self.runs_root, self.results)


def _write_batch_summary(result: BatchResult, prof: Profile, options: BatchOptions, *,
                         force: bool, only, backend: str) -> None:
    """``runs/<profile>/batch_summary.json``: the batch's options, counts and every run."""
    io.write_json(result.summary_json, {
        "profile": prof.name, "description": prof.description,
        "profile_file": str(prof.path) if prof.path else None,
        "runs_root": str(result.runs_root), "finished_at": now(), "elapsed_s": result.elapsed_s,
        "jobs": options.jobs, "force": force, "backend": backend, "only": only,
        "settings": options.settings or {}, "kernel_name": options.kernel_name,
        "exit_code": result.exit_code,
        "counts": {s: sum(r.status == s for r in result.results)
                   for s in ("done", "skipped", "failed")},
        "runs": [r.to_json() for r in result.results]})


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


def _run_parallel(plans: list[Plan], pool: _Pool, task_for, started, finished,
                  waits: dict[str, set[str]] | None = None) -> None:
    """Run ``plans`` on ``pool``: whenever a worker is free, the first plan (in the given order)
    whose ``waits[id]`` have all finished (failed ones included); each worker slot owns one GPU
    where several exist."""
    queue = list(plans)
    waits = waits or {}
    unfinished = {p.id for p in plans}
    free_slots = list(range(pool.workers))
    running: dict[cf.Future, tuple[Plan, int]] = {}
    while queue or running:
        while free_slots:
            plan = next((p for p in queue if not waits.get(p.id, set()) & unfinished), None)
            if plan is None:
                break
            queue.remove(plan)
            slot = free_slots.pop(0)
            started(plan, slot)
            running[pool.submit(execute_run, task_for(plan, slot))] = (plan, slot)
        if not running:  # cannot happen: a run waits only for runs of earlier stages
            raise BatchError(f"runs wait for each other: {[p.id for p in queue]}")
        done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            plan, slot = running.pop(fut)
            unfinished.discard(plan.id)
            free_slots.append(slot)
            try:
                status = fut.result()
            except Exception as exc:  # noqa: BLE001 - the worker died (BrokenProcessPool) or
                # raised what execute_run could not catch: this run failed, the batch goes on
                status = {"status": "failed", "elapsed_s": 0.0,
                          "error": f"worker crashed: {type(exc).__name__}: {exc}",
                          "started_at": None, "finished_at": now()}
                with contextlib.suppress(OSError):
                    plan.folder.write_status({"id": plan.id, **status})
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
        folder = RunFolder(run_dir_of(runs_root, prof.name, run.id))
        res = results.get(run.id)
        st = folder.read_status()
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
        has_html = folder.html.is_file()
        link = (f'<a href="{html.escape(run.id)}/{folder.html.name}">{html.escape(run.id)}</a>'
                if has_html else html.escape(run.id))
        log = (f'<a href="{html.escape(run.id)}/{folder.log.name}">log</a>'
               if folder.log.is_file() else "")
        nb = (f'<a href="{html.escape(run.id)}/{folder.notebook.name}">'
              f'{html.escape(run.notebook.name)}</a>' if folder.notebook.is_file()
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
    p.add_argument("--fresh-kernels", action="store_true",
                   help="a new kernel for every run (default: each worker keeps its kernel, "
                        "reset to a new kernel's state, from one run to the next: saves the "
                        "kernel start and the torch imports, seconds per run)")
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
                             slurm=_slurm_overrides(args),
                             reuse_kernels=not args.fresh_kernels)
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except io.DiskFullError as exc:  # the driver's own files (report, summary): one clear line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return result.exit_code

