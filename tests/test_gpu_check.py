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
                           "--out", str(out), "--budget-s", "3600", "--sections",
                           "backbone,methods,loss_agreement,loader_loop,evaluation"],
                          capture_output=True, text=True, env=env, timeout=600)
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


def test_gpu_check_dry_run_vit_section(tmp_path):
    """The ViT track's section: both bare trunks and the methods' steps on them, in bf16 and fp32
    (the dry run splits the methods between the two trunks; on a GPU each trunk runs all)."""
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--dry-run",
                           "--out", str(out), "--sections", "vit"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["errors"] == {} and res["timm"]
    vit = res["vit"]  # the ViT trunks (2 patches a side) and each method's step, bf16 and fp32
    assert {f"{bb}/bs8/{px}px/{mode}" for bb, px in (("vit_s16_dino", 32), ("vit_s14_dinov2", 28))
            for mode in ("bf16_channels_last", "fp32")} == set(vit["backbone"])
    assert {k.split("/")[0] for k in vit["methods"]} == {"normsoftmax", "asymptotic_proxy", "pp_on",
                                                         "cgd", "dynamic_margin", "proxy_anchor"}
    assert {k.rsplit("/", 1)[1] for k in vit["methods"]} == {"bf16", "fp32"}
    assert {k.split("/")[2] for k in vit["methods"]} == {"vit_s16_dino", "vit_s14_dinov2"}
    for name, row in vit["methods"].items():
        assert row["images_per_s"] > 0 and row["ratio"] > 0, name
    assert set(vit["loss_agreement"]) == {k.rsplit("/", 1)[0] for k in vit["methods"]}


def test_gpu_check_imports_without_the_pinned_extras():
    """The GPU machine has torch, torchvision, numpy and PIL only: what gpu_check imports must
    not need pandas, scipy, PyYAML, matplotlib, tqdm, timm (vendored for the vit section) or the
    notebook stack."""
    code = ("import sys\n"
            "for m in ['pandas', 'scipy', 'yaml', 'matplotlib', 'tqdm', 'sklearn', 'papermill', "
            "'nbformat', 'pytorch_metric_learning', 'faiss', 'timm']:\n"
            "    sys.modules[m] = None\n"
            "import dml_core.methods.recipes, dml_core.methods, dml_core.evaluation, tools.rehearsal\n"
            "import dml_core.methods.fair, dml_core.models.backbones\n"
            "import dml_core.data.cache, dml_core.data.preparation, dml_core.data.loaders\n"
            "from dml_core.data import RetrievalDataset\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(REPO_ROOT), timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
