"""The run folder's owner (dml_core.core.run_folder): typed readers, the reuse rule, the finder.
Files are written by hand or by RunFolder itself; no training here."""
from __future__ import annotations

import math

import pytest
import torch

from dml_core.core.run_folder import RunFolder, find_runs

RECIPE = {"name": "x", "lr": 0.1, "epochs": 2}
PROVENANCE = {"code": "c1", "data": {"cub": "v1:aaa"}, "git_commit": "abc",
              "data_index": {"cub": "/data/cub/index.csv"}}


def _finished(run: RunFolder, provenance: dict = PROVENANCE) -> None:
    run.write_config(RECIPE)
    run.write_provenance(provenance)
    run.write_summary({"status": "complete", "epochs_completed": 2})
    run.write_metrics([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}])


def test_metrics_come_back_typed_with_nan_for_empty_cells(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_metrics() == []  # no file yet
    run.write_metrics([{"epoch": 1, "train_loss": 1 / 3}, {"epoch": 2, "test/dense/R@1": 0.5}])
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2] and all(isinstance(r["epoch"], int) for r in rows)
    assert rows[0]["train_loss"] == 1 / 3  # full precision
    assert math.isnan(rows[0]["test/dense/R@1"]) and math.isnan(rows[1]["train_loss"])
    run.metrics.write_text("epoch,train_loss\n1,")  # cut short: the row still reads
    assert len(run.read_metrics()) == 1


def test_unreadable_json_and_yaml_read_as_missing_and_a_bad_status_as_malformed(tmp_path):
    run = RunFolder(tmp_path)
    run.summary.write_text("{not json")
    run.status.write_text("[1, 2")
    run.config.write_text("a: [unclosed")
    assert run.read_summary() is None and run.read_config() is None
    # a damaged status.json is reported for its run (the batch and the book say so), not hidden
    assert run.read_status()["status"] == "malformed" and "not JSON" in run.read_status()["error"]
    assert run.recipe_changes(RECIPE) == ["<unreadable config.yaml>"]


def test_a_changed_provenance_key_restarts_and_an_informational_one_does_not(tmp_path, capsys):
    run = RunFolder(tmp_path)
    _finished(run)
    # git commit and the index path are for the reader: the run is reused
    same = dict(PROVENANCE, git_commit="def", data_index={"cub": "/elsewhere/index.csv"})
    with run.open(RECIPE, same, epochs=2) as resume:
        assert resume and run.is_complete(2)
    assert run.read_provenance()["git_commit"] == "abc"  # a reused run keeps its record
    # a new kind of input (e.g. pretrained weights) is one more key, compared like the others
    with run.open(RECIPE, dict(PROVENANCE, pretrained={"resnet50": "sha:1"}), epochs=2) as resume:
        assert not resume
    out = capsys.readouterr().out
    assert "training from scratch" in out and "pretrained changed (resnet50)" in out
    assert not run.summary.exists() and not run.metrics.exists()
    assert run.read_provenance()["pretrained"] == {"resnet50": "sha:1"}


def test_restart_names_the_changed_data_set(tmp_path):
    run = RunFolder(tmp_path)
    _finished(run)
    changed = dict(PROVENANCE, data={"cub": "v1:bbb"})
    assert run.restart_reasons(RECIPE, changed) == ["the prepared data changed (cub)"]
    assert run.restart_reasons(dict(RECIPE, lr=0.2), PROVENANCE) == ["the recipe changed (lr)"]


def test_a_restart_clears_the_toy_history_too(tmp_path):
    run = RunFolder(tmp_path)
    _finished(run)
    run.toy_history("moving").write_bytes(b"old pictures")
    run.notebook.write_text("{}")  # the batch's file stays
    run.clear()
    assert not run.toy_history("moving").exists() and run.notebook.is_file()


def test_saved_features_have_one_reader_with_the_gallery_part(tmp_path):
    run = RunFolder(tmp_path)
    run.write_features("best", {"features": torch.ones(3, 2), "labels": torch.tensor([0, 1, 1]),
                                "paths": ["a", "b", "c"], "gallery_features": torch.zeros(2, 2),
                                "gallery_labels": [1, 0], "gallery_paths": ["g", "h"]}, epoch=4)
    f = run.read_features("best")
    assert f.epoch == 4 and f.features.shape == (3, 2) and f.labels.dtype == torch.int64
    assert f.paths == ["a", "b", "c"]
    assert f.searched() is f.gallery and f.gallery.paths == ["g", "h"]
    with pytest.raises(FileNotFoundError):
        run.read_features("last")
    with pytest.raises(ValueError, match="which must be one of"):
        run.features_file("other")


def test_find_runs_lists_the_training_runs_below_a_folder(tmp_path):
    for sub in ("a", "toy/moving", "toy/learnable"):
        RunFolder(tmp_path / sub).write_summary({"status": "complete"})
    (tmp_path / "notes").mkdir()
    assert [r.root.relative_to(tmp_path).as_posix() for r in find_runs(tmp_path)] == \
        ["a", "toy/learnable", "toy/moving"]
    assert RunFolder(tmp_path / "toy").holds_results() and not RunFolder(tmp_path / "notes").holds_results()
