"""Shared pytest fixtures."""
import os
import time
from pathlib import Path

import pytest
import torch


def pytest_report_header(config):
    """The free space where pytest writes its temporary folders: demo training runs write
    checkpoints of ~180 MB, and a full disk fails tests with 'No space left on device'."""
    import shutil
    import tempfile

    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free / 1e9
    line = f"temporary folders under {tmp}: {free:.1f} GB free (the suite needs ~{PEAK_GB} GB)"
    if free < PEAK_GB:
        line += " -- TOO LITTLE: free some space or set TMPDIR to a bigger disk"
    return line


#: Peak disk use of the suite's temporary folders (passed tests' folders are deleted at once,
#: pyproject.toml), measured on a fresh clone.
PEAK_GB = 3


#: ``make test`` runs the suite in ``pytest-xdist`` workers, one per core (``-n auto``); each
#: worker's torch (and the notebooks and builders it starts) gets its share of the cores, so
#: that two workers do not oversubscribe a 2-core machine.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)


def _usable_cpus() -> int:
    """The CPUs this process may use (its affinity; the machine's count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


if XDIST_WORKERS > 1:
    _threads = max(1, _usable_cpus() // XDIST_WORKERS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per CPU this process may use (a 2-vCPU VM reports 1 physical
    core on some hosts), at most 4: beyond that the suite's serial smoke batch dominates."""
    return max(1, min(_usable_cpus(), 4))


#: The test files that read the session's ``smoke`` batch (fixture below): under xdist they run
#: on one worker, so that the batch (~1.5 min) runs once. A test elsewhere that asks for
#: ``smoke`` is refused at collection (add its file here).
SMOKE_FILES = ("tests/test_book.py", "tests/test_cluster.py", "tests/test_query.py",
               "tests/test_study_smoke.py")


def _xdist_scope(nodeid: str) -> str:
    """The worker-sharing unit of a test: its file, or "smoke" for :data:`SMOKE_FILES`."""
    path = nodeid.split("::", 1)[0]
    return "smoke" if path in SMOKE_FILES else path


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``, with the smoke batch's readers as one unit (:func:`_xdist_scope`):
    each file's module fixtures (prepared demo data, a trained run) are built once. (xdist's
    own ``loadgroup`` cannot regroup tests under pytest 9: it renames node ids.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _xdist_scope(nodeid)

    return FileScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """The smoke batch's readers first (the longest unit starts first under xdist); a test
    outside :data:`SMOKE_FILES` that asks for ``smoke`` is a usage error."""
    stray = [i.nodeid for i in items if "smoke" in getattr(i, "fixturenames", ())
             and _xdist_scope(i.nodeid) != "smoke"]
    if stray:
        raise pytest.UsageError(f"{stray[0]} reads the smoke batch: add its file to "
                                "SMOKE_FILES in tests/conftest.py")
    items.sort(key=lambda i: _xdist_scope(i.nodeid) != "smoke")  # stable: file order kept


@pytest.fixture(scope="session", autouse=True)
def session_torch_home(tmp_path_factory):
    """One private torch cache for the session (``$TORCH_HOME``, inherited by the batch's
    subprocesses): the demo's stand-in trunk (dml_core.models.standin, ~1 min to build) is
    built there once, by the first test that needs it, and the user's cache is never touched.
    The ``pytest-xdist`` workers of one session share it (the builder's lock in the cache makes
    a second worker wait and take the first's file). Tests that need an empty or fake cache set
    their own with ``monkeypatch.setenv``."""
    old = os.environ.get("TORCH_HOME")
    if XDIST_WORKERS > 1:  # the session's folder, above each worker's own
        home = tmp_path_factory.getbasetemp().parent / "torch_home"
        home.mkdir(exist_ok=True)
    else:
        home = tmp_path_factory.mktemp("torch_home")
    os.environ["TORCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny forwards: one intra-op thread avoids OpenMP oversubscription on a small shared CPU
    (thread start-up costs more than it saves on tensors this small)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The ``smoke`` profile run once per session through the real batch runner (papermill, CPU)
    into a temporary runs root and data root; read by test_study_smoke.py, test_book.py and
    test_cluster.py.

    It goes through the Slurm backend (``--backend slurm``) on submitit's local executor: every
    run is a submitit job on this machine, so the whole profile end to end is also the backend's
    test. The local backend's end-to-end path is tested by test_batch.py, and
    test_study_smoke.py's second batch (local backend) must find every run up to date. The
    driver's console output is kept (key ``out``) for the progress assertions."""
    import contextlib
    import io

    from dml_core.core import paths
    from dml_core.batch import code_fingerprint, run_profile

    root = tmp_path_factory.mktemp("study_smoke")
    figures_before = {p: p.stat().st_mtime for p in paths.FIGURES_DIR.rglob("*")} \
        if paths.FIGURES_DIR.is_dir() else {}
    t0 = time.time()
    code = code_fingerprint(Path(paths.REPO_ROOT) / "dml_core", paths.NOTEBOOKS_DIR)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = run_profile("smoke", runs_root=root / "runs", data_root=root / "data",
                             backend="slurm", progress=True,
                             slurm={"executor": "local", "array_parallelism": 2, "poll_s": 1})
    elapsed = time.time() - t0
    return {"result": result, "root": root, "profile_dir": root / "runs" / "smoke",
            "elapsed": elapsed, "figures_before": figures_before, "code": code,
            "out": out.getvalue()}
