"""benchmarks/gpu_check.py in its --dry-run mode (CPU, tiny sizes): every section runs and the
JSON has the fields the README and the GPU session read."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from dml_core.core.paths import REPO_ROOT


def test_gpu_check_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # no time budget here: the GPU run's budget skips sections on a slow or busy CPU
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--dry-run",
                           "--out", str(out), "--budget-s", "3600"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["dry_run"] is True and res["device"] == "cpu" and res["errors"] == {}
    assert {"resnet50/bs8/64px/bf16_channels_last", "resnet50/bs8/64px/fp32"} <= set(res["backbone"])
    methods = {k.split("/")[0] for k in res["methods"]}
    assert {"normsoftmax", "cgd", "asymptotic_proxy", "dynamic_margin"} <= methods
    for name, row in res["methods"].items():
        assert row["images_per_s"] > 0 and row["ratio"] > 0, name
    for name, row in res["loss_agreement"].items():
        assert 0 <= row["rel_diff"] < 1.0, (name, row)  # measured, not judged: random weights, batch 8
    assert res["loader_loop"]["pil_images_per_s"] > 0 and res["loader_loop"]["cached_images_per_s"] > 0
    assert res["evaluation"]["seconds"] > 0 and res["evaluation"]["n"] == 1000


def test_gpu_check_imports_without_the_pinned_extras():
    """The GPU machine has torch, torchvision, numpy and PIL only: what gpu_check imports must
    not need pandas, scipy, PyYAML, matplotlib, tqdm or the notebook stack."""
    code = ("import sys\n"
            "for m in ['pandas', 'scipy', 'yaml', 'matplotlib', 'tqdm', 'sklearn', 'papermill', "
            "'nbformat', 'pytorch_metric_learning', 'faiss']:\n"
            "    sys.modules[m] = None\n"
            "import dml_core.methods.recipes, dml_core.methods, dml_core.evaluation, tools.rehearsal\n"
            "import dml_core.data.cache, dml_core.data.preparation, dml_core.data.loaders\n"
            "from dml_core.data import RetrievalDataset\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(REPO_ROOT), timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
