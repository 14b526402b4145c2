"""Shared pytest fixtures."""
import time
from pathlib import Path

import pytest
import torch


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
    into a temporary runs root and data root; read by test_study_smoke.py and test_book.py."""
    from dml_core import paths
    from dml_core.batch import code_fingerprint, run_profile

    root = tmp_path_factory.mktemp("study_smoke")
    figures_before = {p: p.stat().st_mtime for p in paths.FIGURES_DIR.rglob("*")} \
        if paths.FIGURES_DIR.is_dir() else {}
    t0 = time.time()
    code = code_fingerprint(Path(paths.REPO_ROOT) / "dml_core", paths.NOTEBOOKS_DIR)
    result = run_profile("smoke", runs_root=root / "runs", data_root=root / "data",
                         progress=False, quiet=True)
    elapsed = time.time() - t0
    return {"result": result, "root": root, "profile_dir": root / "runs" / "smoke",
            "elapsed": elapsed, "figures_before": figures_before, "code": code}
