"""Batch progress: the per-epoch line, the time-left estimate, and the monitor reading the
metrics.csv that the training engine rewrites every epoch (no training here: files written)."""
from __future__ import annotations

import os

import pytest

from dml_core.batch import progress
from dml_core.batch.progress import BatchProgress, RunProgress, batch_line, epoch_line, estimate_time_left
from dml_core.core.run_folder import metrics_csv


def test_epoch_line_formats_loss_recall_and_rate():
    row = {"epoch": 3, "train_loss": 2.314159, "test/dense/R@1": 0.4523, "images_per_s": 1234.4}
    assert epoch_line("01_x", row, 20) == "[01_x] epoch 3/20  loss 2.3142  R@1 45.2%  1234 img/s"
    # an epoch without evaluation (eval_every > 1) and unknown total epochs
    row = {"epoch": "4", "train_loss": "1.5", "test/dense/R@1": "", "images_per_s": "nan"}
    assert epoch_line("r", row) == "[r] epoch 4  loss 1.5000  R@1 -  - img/s"


def test_time_left_from_epochs_then_previous_durations_then_batch_mean():
    now = 1000.0
    # running, 2 of 10 epochs done at 30 s each (start unknown): 8 × 30 = 240 s left
    a = RunProgress("a", None, state="running", epochs=10, epoch_times=[20, 40], last_epoch=2)
    assert a.remaining_s(now, None) == pytest.approx(240)
    # the same, started at 900 and epoch 2 written at 980: 40 s of wall time per epoch (start-up,
    # evaluation included); resumed at epoch 1, so 1 epoch in 80 s: 8 × 80 s
    w = RunProgress("w", None, state="running", started=900.0, epochs=10, epoch_times=[20, 40],
                    last_epoch=2, metrics_mtime=980.0)
    assert w.remaining_s(now, None) == pytest.approx(320)
    w.first_epoch = 1
    assert w.remaining_s(now, None) == pytest.approx(640)
    a.started = 900.0
    # running, no epoch yet, took 300 s last time, running for 100 s: 200 s left
    b = RunProgress("b", None, state="running", started=900.0, expected_s=300.0)
    # queued, never ran: the mean of the done runs of its notebook (60 and 120 s → 90 s); a
    # failed run (it ended early) and runs of another notebook do not count
    c = RunProgress("c", None, kind="01.ipynb", state="queued")
    d1 = RunProgress("d1", None, kind="01.ipynb", state="done", elapsed_s=60.0)
    d2 = RunProgress("d2", None, kind="01.ipynb", state="done", elapsed_s=120.0)
    f = RunProgress("f", None, kind="01.ipynb", state="failed", elapsed_s=1.0)
    p = RunProgress("p", None, kind="00.ipynb", state="done", elapsed_s=6.0)
    runs = [a, b, c, d1, d2, f, p]
    # (240 + 200 + 90) s over min(2 slots, 3 unfinished) = 265 s
    assert estimate_time_left(runs, slots=2, now=now) == pytest.approx(265)
    # 530 s / 3 runs at once < the longest run (240 s): 240 s
    assert estimate_time_left(runs, slots=8, now=now) == pytest.approx(240)
    # nothing finished and no history: no basis for a guess
    assert estimate_time_left([RunProgress("c", None)], slots=1, now=now) is None
    # ... until a training runs: its projected duration, 100 s elapsed + 240 s left = 340 s
    q = RunProgress("q", None, kind="01.ipynb")
    r = RunProgress("r", None, kind="01.ipynb", state="running", started=900.0, epochs=10,
                    epoch_times=[30.0], last_epoch=2)
    assert estimate_time_left([q, r], slots=1, now=now) == pytest.approx(340 + 240)
    assert estimate_time_left([q, r], slots=2, now=now) == pytest.approx(340)
    assert estimate_time_left([d1, d2], slots=1, now=now) == 0.0
    # a notebook that never finished yet: the mean of every done run, (60 + 120 + 6) / 3
    e = RunProgress("e", None, kind="04.ipynb")
    assert estimate_time_left([e, d1, d2, p], slots=1, now=now) == pytest.approx(62)
    # a run past its expected duration has 0 left, not a negative time
    late = RunProgress("l", None, state="running", started=0.0, expected_s=10.0)
    assert late.remaining_s(now, None) == 0.0


def test_batch_line():
    runs = [RunProgress("a", None, state="done", elapsed_s=5), RunProgress("b", None,
                                                                           state="failed"),
            RunProgress("c", None, state="running"), RunProgress("d", None)]
    assert batch_line(runs, 130.0, 270.0) == (
        "[batch] 2/4 runs finished (1 failed), 1 running, 1 queued; elapsed 2m 10s; ~4m 30s left")
    assert batch_line(runs, 5.0, None).endswith("; time left: estimating")
    assert batch_line(runs[:2], 5.0, 0.0) == "[batch] 2/2 runs finished (1 failed), 0 running, " \
                                             "0 queued; elapsed 5.0 s"


def _write_epochs(run_dir, n, mtime):
    rows = [{"epoch": e, "lr": 0.1, "train_loss": 3.0 / e, "train_accuracy": 0.1,
             "images_per_s": 100.0 * e, "epoch_time_s": 10.0, "test/dense/R@1": 0.1 * e}
            for e in range(1, n + 1)]
    path, tmp = run_dir / "metrics.csv", run_dir / "metrics.csv.tmp"
    tmp.write_text(metrics_csv(rows))  # atomically, as the engine writes it
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def test_monitor_prints_each_new_epoch_once_and_the_batch_line(tmp_path):
    lines: list[str] = []
    clock = {"t": 100.0}
    mon = BatchProgress(slots=1, say=lines.append, batch_every_s=1e9, clock=lambda: clock["t"])
    run = tmp_path / "r1"
    run.mkdir()
    (run / "config.yaml").write_text("epochs: 3\nbatch_size: 8\n")
    _write_epochs(run, 1, 1.0)  # a previous, interrupted execution: epoch 1 is not reprinted
    mon.add("r1", run)
    mon.add("r2", tmp_path / "r2", expected_s=50.0)
    mon.started("r1")
    mon.poll()
    assert lines == []
    _write_epochs(run, 2, 2.0)
    mon.poll()
    mon.poll()  # unchanged file: nothing new
    assert lines == ["[r1] epoch 2/3  loss 1.5000  R@1 20.0%  200 img/s"]
    _write_epochs(run, 3, 3.0)
    clock["t"] = 160.0
    mon.finished("r1", "done", 60.0)
    assert lines[1] == "[r1] epoch 3/3  loss 1.0000  R@1 30.0%  300 img/s"
    # r2 queued with 50 s expected (its last duration), one slot
    assert lines[2] == ("[batch] 1/2 runs finished, 0 running, 1 queued; elapsed 1m 00s; "
                        "~50.0 s left")
    # a run folder started afresh (recipe changed): epochs count from 1 again
    _write_epochs(run, 1, 4.0)
    mon.started("r1")
    mon.poll()
    assert lines[-1].startswith("[r1] epoch 1/3")


def test_monitor_thread_starts_and_stops(tmp_path):
    lines: list[str] = []
    mon = BatchProgress(slots=1, say=lines.append, poll_s=0.01).start()
    mon.add("r", tmp_path)
    mon.started("r")
    _write_epochs(tmp_path, 1, 5.0)
    mon.stop()
    assert lines == ["[r] epoch 1  loss 3.0000  R@1 10.0%  100 img/s"]
    assert progress.fmt_time(3725) == "1h 02m 05s"
