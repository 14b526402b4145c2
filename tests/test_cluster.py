"""``--backend slurm`` without a cluster: submitit's local executor runs study notebooks end to
end, and a fake Slurm (``sbatch``/``srun``/``sacct``/``squeue``/``scontrol``/``scancel`` as shell
scripts on ``PATH`` that run the job scripts on this machine) checks the generated job scripts
(GPU, array range and parallelism, time, partition, extra flags), the requeue after a
preemption (the job resumes in its run folder) and the Slurm log named for a failed run."""
from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from dml_core.batch import driver as batch  # noqa: E402

from dml_core.batch import cluster  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_batch import WRITE_JSON, make_notebook, write_profile  # noqa: E402

# ------------------------------------------------------------------------------ options
def test_options_profile_block_then_command_line():
    opts = cluster.slurm_options({"partition": "gpu", "time_min": 600, "sbatch": {"qos": "low"}},
                                 time_min=30, sbatch={"account": "abc"}, partition=None)
    assert (opts.partition, opts.time_min, opts.gpus) == ("gpu", 30, 1)
    assert opts.sbatch == {"qos": "low", "account": "abc"}
    assert cluster.parse_sbatch_flags(["--account=x", "exclusive"]) == {"account": "x",
                                                                        "exclusive": True}
    problems = cluster.validate_slurm_block({"partiton": "gpu", "time_min": "2h", "gpus": -1})
    assert any("unknown key 'partiton'" in p for p in problems)
    assert any("time_min" in p and "int" in p for p in problems)
    assert any("gpus" in p and "positive" in p for p in problems)


def test_bad_slurm_block_is_a_profile_error(tmp_path):
    make_notebook(tmp_path / "nb" / "00_a.ipynb", WRITE_JSON)
    path = write_profile(tmp_path, "bad", [{"id": "a", "notebook": "00_a.ipynb"}],
                         slurm={"time": 30})
    with pytest.raises(batch.ProfileError, match="slurm: unknown key 'time'"):
        batch.load_profile(path)


# ------------------------------------------------------------------------------ fake Slurm
FAKE_RUN = r"""#!/bin/bash
# fake_run JOB TASK SCRIPT: run one (array task of a) job script as Slurm would, in the background
job="$1"; task="$2"; script="$3"
(
  export SLURM_JOB_ID="$job" SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 SLURM_NODEID=0 SLURM_PROCID=0 \
         SLURM_LOCALID=0 SLURM_JOB_NODELIST=fakenode
  if [ -n "$task" ]; then export SLURM_ARRAY_JOB_ID="$job" SLURM_ARRAY_TASK_ID="$task"; fi
  bash "$script"
) </dev/null >/dev/null 2>&1
"""
SBATCH = r"""#!/bin/bash
script="$1"
n=$(cat "$FAKE_SLURM/next_id" 2>/dev/null || echo 4242); echo $((n + 1)) > "$FAKE_SLURM/next_id"
cp "$script" "$FAKE_SLURM/job_$n.sh"
range=$(sed -n 's/^#SBATCH --array=\([0-9]*\)-\([0-9]*\).*/\1 \2/p' "$script")
if [ -n "$range" ]; then
  set -- $range
  ( for i in $(seq "$1" "$2"); do "$FAKE_SLURM/bin/fake_run" "$n" "$i" "$FAKE_SLURM/job_$n.sh"
    done ) </dev/null >/dev/null 2>&1 &
else
  "$FAKE_SLURM/bin/fake_run" "$n" "" "$FAKE_SLURM/job_$n.sh" </dev/null >/dev/null 2>&1 &
fi
echo "Submitted batch job $n"
"""
SRUN = r"""#!/bin/bash
out=/dev/null; err=/dev/null
while [ $# -gt 0 ]; do
  case "$1" in --output) out="$2"; shift 2;; --error) err="$2"; shift 2;; --*) shift;; *) break;; esac
done
x() { local s="$1"; s="${s//%A/$SLURM_ARRAY_JOB_ID}"; s="${s//%a/$SLURM_ARRAY_TASK_ID}";
      s="${s//%j/$SLURM_JOB_ID}"; echo "${s//%t/0}"; }
exec "$@" >>"$(x "$out")" 2>>"$(x "$err")"
"""
SCONTROL = r"""#!/bin/bash
echo "$@" >> "$FAKE_SLURM/scontrol.log"
if [ "$1" = requeue ]; then
  job="${2%%_*}"; task=""; case "$2" in *_*) task="${2#*_}";; esac
  ( sleep 1; "$FAKE_SLURM/bin/fake_run" "$job" "$task" "$FAKE_SLURM/job_$job.sh" ) </dev/null >/dev/null 2>&1 &
fi
"""
SACCT = '#!/bin/bash\necho "JobID|State|NodeList"\n'  # no information: submitit waits for results
RECORD = '#!/bin/bash\necho "$(basename "$0") $@" >> "$FAKE_SLURM/calls.log"\n'

PREEMPT_ONCE = """\
import os, pathlib, signal, time
marker = pathlib.Path(run_dir) / "preempted_once"
if not marker.exists():  # the first attempt: Slurm preempts the job (USR2 to the submitit process)
    marker.write_text("x")
    os.kill(os.getppid(), signal.SIGUSR2)
    time.sleep(20)
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    home = tmp_path / "fake_slurm"
    bindir = home / "bin"
    bindir.mkdir(parents=True)
    scripts = {"fake_run": FAKE_RUN, "sbatch": SBATCH, "srun": SRUN, "scontrol": SCONTROL,
               "sacct": SACCT, "squeue": RECORD, "scancel": RECORD}
    for name, text in scripts.items():
        f = bindir / name
        f.write_text(text)
        f.chmod(f.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("FAKE_SLURM", str(home))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(batch, "code_fingerprint", lambda *dirs: "pinned")
    return home


def test_fake_slurm_job_scripts_requeue_and_failure_log(tmp_path, fake_slurm, capsys):
    make_notebook(tmp_path / "nb" / "00_pre.ipynb", PREEMPT_ONCE + WRITE_JSON)
    make_notebook(tmp_path / "nb" / "01_a.ipynb", WRITE_JSON)
    make_notebook(tmp_path / "nb" / "01_fail.ipynb", "raise RuntimeError('boom-17')")
    profile = write_profile(tmp_path, "fake", [
        {"id": "pre", "notebook": "00_pre.ipynb", "parameters": {"value": 1}},
        {"id": "a", "notebook": "01_a.ipynb", "parameters": {"value": 2}},
        {"id": "fail", "notebook": "01_fail.ipynb"}],
        slurm={"partition": "from-profile", "time_min": 600, "cpus_per_task": 6, "mem_gb": 24,
               "array_parallelism": 4, "poll_s": 0.5, "setup": ["echo setup-line"]})
    root = tmp_path / "runs"
    code = batch.main(["--profile", str(profile), "--runs-root", str(root), "--backend", "slurm",
                       "--slurm-partition", "gpu-test", "--slurm-time", "45",
                       "--slurm-array-parallelism", "1", "--slurm-sbatch", "account=proj1"])
    cap = capsys.readouterr()
    out = cap.out + cap.err
    assert code == 1, out  # the failing run
    summary = json.loads((root / "fake" / "batch_summary.json").read_text())
    status = {r["id"]: r for r in summary["runs"]}
    assert summary["backend"] == "slurm"
    assert {k: v["status"] for k, v in status.items()} == {"pre": "done", "a": "done",
                                                           "fail": "failed"}, out

    # the job scripts: stage 0 a single job, stage 1 an array of 2, one at a time
    single, array = (fake_slurm / "job_4242.sh").read_text(), (fake_slurm / "job_4243.sh").read_text()
    for script in (single, array):
        for flag in ("--gpus-per-node=1", "--partition=gpu-test", "--time=45",
                     "--cpus-per-task=6", "--mem=24GB", "--account=proj1", "--signal=USR2@120"):
            assert f"#SBATCH {flag}\n" in script, (flag, script)
        assert "echo setup-line" in script and "submitit.core._submit" in script
    assert "--array" not in single
    assert "#SBATCH --array=0-1%1\n" in array

    # the requeue: the preempted job checkpointed, was requeued and executed the run again
    assert "requeue 4242" in (fake_slurm / "scontrol.log").read_text()
    pre = root / "fake" / "pre"
    assert (pre / "preempted_once").is_file() and (pre / "count.txt").read_text() == "x"
    assert json.loads((pre / "status.json").read_text())["status"] == "done"
    slurm_dir = root / "fake" / cluster.SLURM_DIR
    log = (slurm_dir / "4242_0_log.err").read_text() + (slurm_dir / "4242_0_log.out").read_text()
    assert "preempted" in log and "Requeued job 4242" in log, log

    # the failed run names its Slurm log, which exists
    error = status["fail"]["error"]
    assert "boom-17" in error and "Slurm log: " in error
    assert Path(error.split("Slurm log: ")[1].split(")")[0]).is_file()
    assert json.loads((root / "fake" / "a" / "out.json").read_text())["value"] == 2


def test_without_srun_the_slurm_backend_says_how_to_fix_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(batch, "code_fingerprint", lambda *dirs: "pinned")
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)
    make_notebook(tmp_path / "nb" / "00_a.ipynb", WRITE_JSON)
    profile = write_profile(tmp_path, "nos", [{"id": "a", "notebook": "00_a.ipynb"}])
    code = batch.main(["--profile", str(profile), "--runs-root", str(tmp_path / "runs"),
                       "--backend", "slurm"])
    assert code == 2
    assert "srun" in capsys.readouterr().err


# ------------------------------------------------------------------------------ local executor
def test_smoke_profile_through_submitit_local_executor(smoke):
    """The whole smoke profile ran end to end through ``--backend slurm`` on submitit's local
    executor (the session fixture ``smoke``, tests/conftest.py): every run a submitit job."""
    out, result = smoke["out"], smoke["result"]
    failed = [f"{r.id}: {r.error}" for r in result.failed]
    assert not failed, "\n".join(failed) + out
    assert result.results and all(r.status == "done" for r in result.results)
    for r in result.results:  # each run was submitted as a job of its own
        assert f"submitted {r.id} as job" in out, out
    run = smoke["profile_dir"] / "01_normsoftmax"
    assert (run / "metrics.csv").is_file() and (run / "notebook.html").is_file()
    # progress: per-epoch lines of the training runs and the batch line with the time left
    assert "[01_normsoftmax] epoch 1/1  loss " in out, out
    n = len(result.results)
    assert f"[batch] {n}/{n} runs finished" in out, out
    assert "without encryption" not in out
    # the submitit folder holds each job's logs
    assert list((smoke["profile_dir"] / "_slurm").glob("*_log.out"))


def test_local_jobs_share_the_dataloader_workers():
    assert batch.loader_workers_per_job(2, None, cpus=8) == "3"  # 4 cores each, 1 for the run
    assert batch.loader_workers_per_job(4, None, cpus=2) == "0"
    assert batch.loader_workers_per_job(1, None, cpus=8) is None  # the loader decides
    assert batch.loader_workers_per_job(2, "5", cpus=8) is None  # the user's setting stands


def test_jobs_of_submitit_s_local_executor_share_this_machine_s_cores():
    """Local executor: its array's jobs are processes on this machine, so the cores are shared
    out as for --jobs (each job taking every core oversubscribed the smoke profile); on Slurm
    a job has the CPUs it asked for."""
    from dml_core.batch.cluster import slurm_options
    from dml_core.batch.driver import BatchOptions, jobs_sharing_this_machine

    local = BatchOptions(jobs=1, kernel_name="python3",
                         slurm=slurm_options({}, executor="local", array_parallelism=2))
    assert jobs_sharing_this_machine(local) == 2
    assert batch.cpu_threads_per_job(jobs_sharing_this_machine(local), 0, None, cpus=2) == "1"
    on_slurm = BatchOptions(jobs=1, kernel_name="python3",
                            slurm=slurm_options({}, executor="slurm", array_parallelism=8))
    assert jobs_sharing_this_machine(on_slurm) == 1
    assert jobs_sharing_this_machine(BatchOptions(jobs=3, kernel_name="python3")) == 3
