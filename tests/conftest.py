"""Shared pytest fixtures."""
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


@pytest.fixture(scope="session", autouse=True)
def session_torch_home(tmp_path_factory):
    """One private torch cache for the session (``$TORCH_HOME``, inherited by the batch's
    subprocesses): the demo's stand-in trunk (dml_core.models.standin, ~1 min to build) is
    built there once, by the first test that needs it, and the user's cache is never touched.
    Tests that need an empty or fake cache set their own with ``monkeypatch.setenv``."""
    import os

    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    yield Path(os.environ["TORCH_HOME"])
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
