"""A run folder is reused only for the same recipe, code and data (issue: stale results).

``train`` records ``provenance.json`` (code fingerprint, data fingerprint, git commit); a change
of the training code or a re-prepared data set retrains from scratch, removing every file of the
old run; a damaged ``checkpoints/last.pt`` is named, moved aside, and the run restarts.
Tiny CUB-layout data (12 + 12 images of 16 px), ResNet-18 from scratch, one step per epoch.
"""
from __future__ import annotations

import json
import warnings

import pytest

from data_factories import make_cub_raw


@pytest.fixture()
def cub_root(tmp_path):
    make_cub_raw(tmp_path / "data" / "cub", classes=(1, 2, 3, 101, 102, 103), per_class=4)
    _prepare(tmp_path / "data")
    return tmp_path / "data"


def _prepare(root, **kw):
    from dml_core.data import prepare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny sets differ from the standard sizes
        return prepare("cub", root, verbose=False, **kw)


def _recipe():
    from dml_core.methods.recipes import get_recipe

    recipe = get_recipe("normsoftmax", "demo", "resnet18_s2")
    recipe.update(dataset="cub", epochs=1, max_steps_per_epoch=1, pretrained=False, num_workers=0,
                  crop_size=16, resize_size=18, validation_fraction=0.0, batch_size=4,
                  samples_per_class=2, eval_batch_size=64)
    return recipe


def _train(recipe, run_dir, root):
    from dml_core.training import train

    return train(recipe, run_dir, data_root=root, device="cpu", progress=False)


def test_changed_code_or_data_retrains_and_removes_the_old_files(cub_root, tmp_path, capsys,
                                                                  monkeypatch):
    from dml_core.training import trainer

    run_dir, recipe = tmp_path / "run", _recipe()
    first = _train(recipe, run_dir, cub_root)
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert set(prov) >= {"code", "data", "git_commit"} and first["provenance"] == prov
    # unchanged: reused as it is (same summary, no training)
    assert _train(recipe, run_dir, cub_root) == first
    assert "training from scratch" not in capsys.readouterr().out

    # a file the old run "wrote" (e.g. a figure) must not survive a restart
    (run_dir / "figures").mkdir()
    (run_dir / "figures" / "old.png").write_bytes(b"x")
    (run_dir / "notebook.ipynb").write_text("{}")  # the batch's own file stays

    # a changed loss = a changed training-code fingerprint: retrained, not reused
    monkeypatch.setattr(trainer, "code_fingerprint", lambda: "another loss")
    second = _train(recipe, run_dir, cub_root)
    out = capsys.readouterr().out
    assert "training from scratch" in out and "the training code changed" in out
    assert second["provenance"]["code"] == "another loss"
    assert not (run_dir / "figures" / "old.png").exists()
    assert (run_dir / "notebook.ipynb").is_file()
    assert not list(run_dir.glob(".old-*"))
    assert second["status"] == "complete" and second["train_time_s"] > 0

    # re-prepared data (an image dropped by `prepare --force`): retrained on the new test set
    bad = sorted((cub_root / "cub" / "images").rglob("*.jpg"))[-1]
    bad.write_bytes(bad.read_bytes()[:50])  # truncated: excluded by the full check
    _prepare(cub_root, force=True, verify_images="full")
    third = _train(recipe, run_dir, cub_root)
    out = capsys.readouterr().out
    assert "the prepared data changed (cub)" in out
    assert third["data"]["test_images"] == first["data"]["test_images"] - 1
    assert third["provenance"]["data"] != first["provenance"]["data"]


def test_interrupted_run_resumes_only_with_the_same_code(cub_root, tmp_path, capsys, monkeypatch):
    from dml_core.core.io import read_json, write_json
    from dml_core.training import trainer

    run_dir, recipe = tmp_path / "run", _recipe()
    _train(recipe, run_dir, cub_root)
    summary = read_json(run_dir / "summary.json")
    write_json(run_dir / "summary.json", dict(summary, status="failed"))  # as after a kill
    # the same code: resumes (last.pt is at the last epoch, nothing left to train)
    resumed = _train(recipe, run_dir, cub_root)
    assert resumed["status"] == "complete" and "training from scratch" not in capsys.readouterr().out
    write_json(run_dir / "summary.json", dict(summary, status="failed"))
    monkeypatch.setattr(trainer, "code_fingerprint", lambda: "changed")
    _train(recipe, run_dir, cub_root)
    assert "the training code changed" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_damaged_last_checkpoint_is_named_moved_aside_and_the_run_restarts(cub_root, tmp_path,
                                                                           capsys, content):
    from dml_core.core.io import read_json, write_json
    from dml_core.core import checkpoint

    run_dir, recipe = tmp_path / "run", _recipe()
    _train(recipe, run_dir, cub_root)
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(content)
    write_json(run_dir / "summary.json", dict(read_json(run_dir / "summary.json"), status="failed"))
    with pytest.raises(checkpoint.CorruptCheckpointError, match="last.pt"):
        checkpoint.load(last)
    summary = _train(recipe, run_dir, cub_root)
    out = capsys.readouterr().out
    assert str(last) in out and "moved aside" in out
    assert (run_dir / "last.pt.corrupt").read_bytes() == content
    assert summary["status"] == "complete" and checkpoint.load(last)["epoch"] == 1


def test_stale_temp_files_and_half_cleared_folders_are_removed_on_start(cub_root, tmp_path):
    run_dir, recipe = tmp_path / "run", _recipe()
    (run_dir / "checkpoints").mkdir(parents=True)
    tmp = run_dir / "checkpoints" / ".last.pt.abc123.tmp"
    tmp.write_bytes(b"half")
    (run_dir / ".old-20260101T000000-1" / "features").mkdir(parents=True)
    _train(recipe, run_dir, cub_root)
    assert not tmp.exists() and not list(run_dir.glob(".old-*"))


@pytest.mark.parametrize("key,value", [("epochs", 0), ("epochs", -1), ("crop_size", 0)])
def test_non_positive_epochs_or_crop_size_are_refused(tmp_path, key, value):
    from dml_core.training import train

    recipe = dict(_recipe(), **{key: value})
    with pytest.raises(ValueError, match=f"{key} must be a positive integer"):
        train(recipe, tmp_path / "run", data_root=tmp_path, device="cpu", progress=False)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_code_fingerprint_covers_the_training_code_only(tmp_path):
    import shutil

    from dml_core.training.provenance import _PACKAGE, code_fingerprint

    pkg = tmp_path / "dml_core"
    shutil.copytree(_PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_fingerprint(pkg)
    (pkg / "batch.py").write_text("# the batch runner changed\n")  # not training code
    assert code_fingerprint(pkg) == before
    loss = pkg / "losses" / "proxy.py"
    loss.write_text(loss.read_text() + "\n# a fixed loss\n")
    assert code_fingerprint(pkg) != before


def test_a_second_trainer_of_the_same_folder_waits_for_the_first(cub_root, tmp_path, capfd):
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom dml_core.training import RunFolder\n"
         f"l = RunFolder({str(run_dir)!r}).lock().acquire()\nprint('held', flush=True)\n"
         "time.sleep(1.5)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        summary = _train(_recipe(), run_dir, cub_root)
    finally:
        holder.wait(30)
    assert summary["status"] == "complete"
    assert f"waiting for the run folder {run_dir}: in use by pid {holder.pid}" in capfd.readouterr().err
