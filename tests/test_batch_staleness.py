"""The batch's skip-when-done follows the data a training read and the runs a table reads;
one batch per profile; Ctrl-C is recorded. Tiny generated notebooks (a kernel start each)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from dml_core.batch import driver as batch

# a "training" notebook: writes summary.json and a provenance.json naming the index it read
TRAIN = """\
import json, pathlib
out = pathlib.Path(run_dir)
(out / "summary.json").write_text(json.dumps({"value": value}))
(out / "provenance.json").write_text(json.dumps({"data_index": {"x": index}}))
(out / "count.txt").open("a").write("x")
"""
TABLE = """\
import pathlib
out = pathlib.Path(run_dir)
(out / "count.txt").open("a").write("x")
"""


def _notebook(path: Path, body: str) -> None:
    params = new_code_cell("profile = None\nrun_dir = None\nvalue = 0\nindex = ''")
    params.metadata["tags"] = ["parameters"]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[params, new_code_cell(body)]), str(path))


def _count(run_dir: Path) -> int:
    f = run_dir / "count.txt"
    return len(f.read_text()) if f.exists() else 0


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "code_fingerprint", lambda *dirs: "pinned")
    index = tmp_path / "data" / "x" / "index.csv"
    index.parent.mkdir(parents=True)
    index.write_text("path,class_name\na.png,1\n")
    _notebook(tmp_path / "nb" / "01_train.ipynb", TRAIN)
    _notebook(tmp_path / "nb" / "06_table.ipynb", TABLE)
    profile = tmp_path / "profiles" / "tiny.yaml"
    profile.parent.mkdir()
    profile.write_text(yaml.safe_dump({"name": "tiny", "notebooks_dir": "../nb", "runs": [
        {"id": "train", "notebook": "01_train.ipynb", "parameters": {"value": 1, "index": str(index)}},
        {"id": "table", "notebook": "06_table.ipynb"}]}, sort_keys=False))
    return tmp_path, profile, index


def _statuses(res):
    return {r.id: (r.status, r.reason) for r in res.results}


def test_changed_data_reruns_the_training_and_a_new_run_reruns_the_table(study):
    tmp, profile, index = study
    root = tmp / "runs"
    assert batch.run_profile(profile, runs_root=root, quiet=True).ok
    res = batch.run_profile(profile, runs_root=root, quiet=True)
    assert [r.status for r in res.results] == ["skipped", "skipped"]

    index.write_text("path,class_name\na.png,1\nb.png,2\n")  # `prepare --force` changed the data
    res = batch.run_profile(profile, runs_root=root, quiet=True)
    st = _statuses(res)
    assert st["train"] == ("done", "changed: prepared data or pretrained weights")
    assert st["table"][0] == "done" and "train executes now" in st["table"][1]
    assert [r.status for r in batch.run_profile(profile, runs_root=root, quiet=True).results] \
        == ["skipped", "skipped"]

    # the training alone re-executed (e.g. --force --only): the table is stale afterwards
    batch.run_profile(profile, runs_root=root, quiet=True, force=True, only="train")
    st = _statuses(batch.run_profile(profile, runs_root=root, quiet=True))
    assert st["train"][0] == "skipped"
    assert st["table"] == ("done", "changed: inputs (train)")
    assert _count(root / "tiny" / "table") == 3 and _count(root / "tiny" / "train") == 3


def test_a_second_batch_on_the_same_profile_is_refused_naming_the_holder(study, capsys):
    tmp, profile, _ = study
    root = tmp / "runs"
    lock = root / "tiny" / batch.BATCH_LOCK
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom dml_core.core.locks import FileLock\n"
         f"l = FileLock({str(lock)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = batch.main(["--profile", str(profile), "--runs-root", str(root), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and f"pid {holder.pid}" in err and "in use" in err
        assert not (root / "tiny" / "train" / "done.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert batch.run_profile(profile, runs_root=root, quiet=True).ok  # a dead holder blocks nobody


def test_ctrl_c_records_interrupted_in_status_json(study, monkeypatch):
    import papermill

    tmp, profile, _ = study
    root = tmp / "runs"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    monkeypatch.setattr(batch, "_check_kernel", lambda name: None)
    with pytest.raises(KeyboardInterrupt):
        batch.run_profile(profile, runs_root=root, quiet=True)
    status = json.loads((root / "tiny" / "train" / "status.json").read_text())
    assert status["status"] == "interrupted" and status["finished_at"]
    # the batch lock was released: another process takes it at once
    lock = root / "tiny" / batch.BATCH_LOCK
    subprocess.run([sys.executable, "-c", "from dml_core.core.locks import FileLock\n"
                    f"FileLock({str(lock)!r}, timeout=0).acquire()"], check=True)
