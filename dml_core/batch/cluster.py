"""The batch's runs as Slurm jobs, submitted with submitit (``--backend slurm``).

Planning, skip-when-done, progress and the report stay in the driver (:mod:`dml_core.batch`);
each run to execute becomes one Slurm job: one job array per stage (``executor.map_array``),
``array_parallelism`` of its tasks at once (``#SBATCH --array=0-N%P``), one GPU each. A job calls
:func:`dml_core.batch.execution.execute_run` on the cluster node — the same function a local worker
calls — so the run folder (``runs/<profile>/<id>/``, on a file system the nodes share) is the same.

Preemption and time-outs: Slurm signals the job (``USR2``, ``signal_delay_s`` before the end);
submitit calls :meth:`NotebookJob.checkpoint`, which marks the run's status ``requeued`` and asks
for the same call again; submitit writes it back into the job's pickle and requeues the job
(``scontrol requeue``, at most ``max_requeues`` time-outs; preemptions do not count). The
requeued job executes the notebook again with the same ``run_dir``, where the training engine
resumes from its last checkpoint. A job that fails (an exception, killed, out of memory, out of
requeues) is reported with the path of its Slurm log.

Settings (:class:`SlurmOptions`, in :mod:`dml_core.profiles.slurm`): the profile's optional
``slurm:`` mapping (``profiles/README.md``), overridden by the ``--slurm-*`` options of the
command line. The submitit folder (scripts, pickles, logs ``%j_0_log.out/err``) is
``runs/<profile>/_slurm/``.

``executor: local`` or ``debug`` run the same jobs with submitit's local executor (subprocesses
on this machine, ``array_parallelism`` at a time) or in this process: for tests, no cluster
needed.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

try:  # optional: pip install -e '.[cluster]'
    import submitit
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - exercised only without the extra
    submitit = None
    Checkpointable = object  # type: ignore[assignment,misc]

from dml_core.core.clock import now
from dml_core.core.run_folder import RunFolder
from dml_core.profiles.slurm import (EXECUTORS, SlurmOptions, parse_sbatch_flags, slurm_options,
                                     validate_slurm_block)

__all__ = ["SlurmOptions", "NotebookJob", "slurm_options", "validate_slurm_block",
           "make_executor", "run_stage", "parse_sbatch_flags", "EXECUTORS", "SLURM_DIR"]

#: The submitit folder inside ``runs/<profile>/``.
SLURM_DIR = "_slurm"


# ------------------------------------------------------------------------------------------
# The job
def _granted_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class NotebookJob(Checkpointable):
    """One run as a submitit job: ``NotebookJob()(task)`` executes it on the node.

    ``task`` is the plain dict the batch driver builds for :func:`dml_core.batch.execution.execute_run`.
    On the node the job uses the CPUs it was granted: ``OMP_NUM_THREADS`` and
    ``DML_NUM_WORKERS`` (DataLoader workers per loader) follow ``os.sched_getaffinity``, unless
    set already.
    """

    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        from dml_core.batch.execution import execute_run

        cpus = _granted_cpus()
        env = dict(task.get("env") or {})
        env.setdefault("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS") or str(cpus))
        env.setdefault("DML_NUM_WORKERS", os.environ.get("DML_NUM_WORKERS")
                       or str(max(0, cpus - 1)))
        task = {**task, "env": env}
        job_id = os.environ.get("SLURM_JOB_ID")
        if job_id:
            print(f"run {task['id']} in Slurm job {job_id} on {os.uname().nodename}, "
                  f"{cpus} CPUs, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}",
                  flush=True)
        return execute_run(task)

    def checkpoint(self, task: dict[str, Any]):  # noqa: D401 - submitit's hook
        """Preempted or timed out: the same task again (the run folder holds the progress)."""
        run = RunFolder(task["run_dir"])
        status = run.read_status() or {"id": task["id"]}
        try:
            requeues = int(status.get("requeues") or 0) + 1
        except (TypeError, ValueError):
            requeues = 1
        status.update(status="requeued", requeued_at=now(), requeues=requeues,
                      slurm_job_id=os.environ.get("SLURM_JOB_ID"))
        try:
            run.write_status(status)
        except OSError:  # a full or vanished disk must not block the requeue
            pass
        return submitit.helpers.DelayedSubmission(self, task)


# ------------------------------------------------------------------------------------------
# The driver's side
def _require_submitit() -> None:
    if submitit is None:
        from dml_core.profiles import BatchError

        raise BatchError("--backend slurm needs submitit: "
                         f"`{sys.executable} -m pip install -e '.[cluster]'`")


def make_executor(options: SlurmOptions, folder: Path, job_name: str = "dml"):
    """A submitit executor with ``options`` applied (its ``folder``: scripts, pickles, logs)."""
    _require_submitit()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if options.executor == "debug":
        return submitit.DebugExecutor(folder)
    if options.executor == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=options.max_requeues)
        ex.update_parameters(timeout_min=options.time_min, signal_delay_s=options.signal_delay_s)
        return ex
    if options.executor != "slurm":
        raise ValueError(f"executor {options.executor!r} must be one of {list(EXECUTORS)}")
    from submitit.slurm.slurm import SlurmExecutor

    try:
        ex = SlurmExecutor(folder, max_num_timeout=options.max_requeues)
    except RuntimeError as exc:  # no srun on PATH
        from dml_core.profiles import BatchError

        raise BatchError(f"--backend slurm: {exc} (run the batch on a login node of the "
                         "cluster, or use --backend local)") from exc
    params: dict[str, Any] = dict(
        job_name=job_name, time=int(options.time_min), cpus_per_task=int(options.cpus_per_task),
        mem=f"{int(options.mem_gb)}GB" if float(options.mem_gb).is_integer()
        else f"{int(options.mem_gb * 1024)}MB",
        array_parallelism=int(options.array_parallelism),
        signal_delay_s=int(options.signal_delay_s), stderr_to_stdout=False)
    if options.gpus:
        params["gpus_per_node"] = int(options.gpus)
    if options.partition:
        params["partition"] = options.partition
    if options.setup:
        params["setup"] = list(options.setup)
    if options.sbatch:
        params["additional_parameters"] = {k.replace("_", "-") if isinstance(k, str) else k: v
                                           for k, v in options.sbatch.items()}
    ex.update_parameters(**params)
    return ex


def _log_of(job) -> str:
    """The Slurm log of ``job`` (stderr: the traceback; stdout beside it)."""
    try:
        return str(job.paths.stderr)
    except (AttributeError, OSError, ValueError):  # a job without a folder (debug executor)
        return "(unknown)"


def _job_status(job) -> dict[str, Any]:
    """The status dict of a finished job: what ``execute_run`` returned, or a failure naming
    the Slurm log (the job died before or after ``execute_run``: killed, OOM, no requeue)."""
    try:
        status = job.result()
        if isinstance(status, dict):
            if status.get("status") != "done":
                status = {**status, "error": f"{status.get('error')} (Slurm log: {_log_of(job)})"}
            return {**status, "slurm_job_id": job.job_id}
        raise RuntimeError(f"unexpected job result {status!r}")
    except Exception as exc:  # noqa: BLE001 - job.result() re-raises whatever ended the job
        # (submitit's FailedJobError, UncompletedJobError, any error of the job itself)
        first = str(exc).strip().splitlines()
        reason = next((line for line in reversed(first) if line.strip()), type(exc).__name__)
        return {"status": "failed", "elapsed_s": 0.0, "started_at": None,
                "finished_at": now(),
                "error": f"Slurm job {job.job_id} failed: {reason[:300]} (Slurm log: "
                         f"{_log_of(job)})", "slurm_job_id": job.job_id}


def run_stage(plans: list, tasks: list[dict[str, Any]], options: SlurmOptions, folder: Path,
              finished: Callable[[Any, dict[str, Any]], None],
              say: Callable[[str], None] = print,
              on_start: Callable[[Any], None] | None = None, job_name: str = "dml") -> None:
    """Submit one stage's runs (``plans[i]`` ↔ ``tasks[i]``, :class:`dml_core.batch.execution.Plan`)
    and wait for all of them.

    Slurm: one job array. Local/debug executors: one job each, ``array_parallelism`` at a time.
    ``on_start(plan)`` is called when a run's job starts (its status says running, or at
    submission for the debug executor); ``finished(plan, status)`` when its job ends.
    """
    if not plans:
        return
    ex = make_executor(options, folder, job_name)
    fn = NotebookJob()
    pending = list(zip(plans, tasks))
    running: list[tuple[Any, Any, float]] = []  # (plan, job, submitted at)

    def submit(batch):
        if options.executor == "slurm":
            jobs = ex.map_array(fn, [t for _p, t in batch])
        else:
            jobs = [ex.submit(fn, t) for _p, t in batch]
        now = time.time()
        for (plan, task), job in zip(batch, jobs):
            running.append((plan, job, now))
            say(f"        submitted {task['id']} as job {job.job_id} (log: {_log_of(job)})")

    try:
        _wait_for(ex, fn, pending, running, submit, options, finished, on_start)
    except KeyboardInterrupt:  # Ctrl-C: the batch's jobs are cancelled, not left behind
        for _plan, job, _t in running:
            try:
                job.cancel(check=False)
            except (OSError, RuntimeError):  # scancel missing or refused: cancel the others
                pass
        say(f"        cancelled {len(running)} job(s): "
            + " ".join(str(job.job_id) for _p, job, _t in running))
        raise


def _wait_for(ex, fn, pending, running, submit, options, finished, on_start) -> None:
    seen_start: set[int] = set()
    if options.executor == "slurm":
        submit(pending)
        pending = []
    poll = options.poll_s if options.executor == "slurm" else min(options.poll_s, 1.0)
    while pending or running:
        slots = max(1, int(options.array_parallelism)) - len(running)
        if pending and slots > 0:
            batch, pending = pending[:slots], pending[slots:]
            if options.executor == "debug":  # runs in this process, at result()
                for plan, task in batch:
                    if on_start:
                        on_start(plan)
                    job = ex.submit(fn, task)
                    running.append((plan, job, time.time()))
            else:
                submit(batch)
        still = []
        for plan, job, t_sub in running:
            if on_start and id(plan) not in seen_start and _has_started(plan, t_sub):
                seen_start.add(id(plan))
                on_start(plan)
            if job.done():
                if on_start and id(plan) not in seen_start:
                    seen_start.add(id(plan))
                    on_start(plan)
                finished(plan, _job_status(job))
            else:
                still.append((plan, job, t_sub))
        running[:] = still
        if running or pending:
            time.sleep(poll)


def _has_started(plan, submitted_at: float) -> bool:
    """Whether the run's status was (re)written since its job was submitted."""
    try:
        return plan.folder.status.stat().st_mtime >= submitted_at - 1
    except OSError:
        return False
