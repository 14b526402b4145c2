"""Progress of a batch that a user can follow: one line per epoch per run, and a batch line.

The batch driver (:mod:`dml_core.batch`) knows when runs start and finish; the training engine
rewrites the run's metrics after every epoch (:class:`dml_core.core.run_folder.RunFolder`). A
:class:`BatchProgress` watches the run folders of the runs that are executing (a background
thread polling every ``poll_s`` seconds; nothing changes in the notebooks or the engine, so it
works the same for local worker processes and for Slurm jobs on a shared file system) and prints

    [01_normsoftmax] epoch 3/20  loss 2.3142  R@1 45.2%  1234 img/s
    [batch] 3/9 runs finished (1 failed), 2 running, 4 queued; elapsed 2m 10s; ~4m 30s left

Time left (:func:`estimate_time_left`): each unfinished run's expected remaining seconds,
summed and divided by the number of runs that can execute at once (``min(slots, unfinished)``),
and at least the longest of them:

* a run with epochs in its metrics and its recipe's ``epochs`` in its config:
  ``(epochs − done) ×`` the wall time per epoch since the run started (evaluation and start-up
  included; the mean ``epoch_time_s`` of its metrics when the start is unknown);
* otherwise its expected duration minus the time it has been running: the duration of its last
  execution (its status from an earlier batch, when it finished), else the mean duration of
  the runs of the same notebook that finished (done) in this batch, else of all runs done in this
  batch, else the projected duration (elapsed + left) of the trainings running now; unknown (no
  estimate printed) before any of these exists.

A coarse estimate: stages, queue waits and the evaluation after the last epoch are ignored.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable

from dml_core.core.clock import fmt_time
from dml_core.core.run_folder import RunFolder

__all__ = ["RunProgress", "BatchProgress", "estimate_time_left", "epoch_line", "batch_line",
           "SELECTION_COLUMN"]

#: The metrics column shown as R@1 (a fraction; printed in %).
SELECTION_COLUMN = "test/dense/R@1"


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None  # NaN → None


def _recipe_epochs(run_dir: Path) -> int | None:
    """``epochs`` of the run's recipe (its config, written before the first epoch)."""
    value = (RunFolder(run_dir).read_config() or {}).get("epochs")
    return value if isinstance(value, int) and value > 0 else None


def epoch_line(run_id: str, row: dict[str, Any], epochs: int | None = None) -> str:
    """``[run] epoch E/N  loss L  R@1 x%  n img/s`` from one row of the metrics (``-`` where a
    value is missing, e.g. R@1 on an epoch without evaluation)."""
    epoch = row.get("epoch", "?")
    loss, r1, ips = (_float(row.get(k)) for k in ("train_loss", SELECTION_COLUMN, "images_per_s"))
    return (f"[{run_id}] epoch {epoch}{f'/{epochs}' if epochs else ''}  "
            f"loss {'-' if loss is None else f'{loss:.4f}'}  "
            f"R@1 {'-' if r1 is None else f'{100 * r1:.1f}%'}  "
            f"{'-' if ips is None else f'{ips:.0f}'} img/s")


@dataclasses.dataclass
class RunProgress:
    """What the monitor knows about one run of the batch."""

    id: str
    run_dir: Path
    kind: str = ""  # the notebook: runs of one notebook take similar times
    state: str = "queued"  # queued | running | done | failed
    started: float | None = None  # time.time() when it started (or was submitted)
    elapsed_s: float | None = None  # when finished
    expected_s: float | None = None  # its duration last time (an earlier batch), if known
    epochs: int | None = None  # the recipe's epochs (its config)
    epoch_times: list[float] = dataclasses.field(default_factory=list)
    last_epoch: int = 0  # the last epoch printed
    first_epoch: int = 0  # last_epoch when it started (a resumed run has done some before)
    metrics_mtime: float = 0.0

    def remaining_s(self, now: float, mean_run_s: float | dict | None) -> float | None:
        """Expected seconds until this run finishes (None: no basis for a guess yet)."""
        if self.state in ("done", "failed"):
            return 0.0
        if self.epochs and self.epoch_times:
            left = max(0, self.epochs - self.last_epoch)
            done = self.last_epoch - self.first_epoch
            if self.started is not None and done > 0 and self.metrics_mtime > self.started:
                return left * (self.metrics_mtime - self.started) / done
            return left * sum(self.epoch_times) / len(self.epoch_times)
        if isinstance(mean_run_s, dict):  # {kind: mean, "": mean of all}
            mean_run_s = mean_run_s.get(self.kind, mean_run_s.get(""))
        expected = self.expected_s if self.expected_s is not None else mean_run_s
        if expected is None:
            return None
        ran = now - self.started if self.state == "running" and self.started is not None else 0.0
        return max(0.0, expected - ran)


def estimate_time_left(runs: list[RunProgress], slots: int, now: float | None = None
                       ) -> float | None:
    """Seconds until every run of ``runs`` has finished, ``slots`` runs executing at once
    (see the module docstring); None when some unfinished run has no basis for a guess."""
    now = time.time() if now is None else now
    done = [r for r in runs if r.state == "done" and r.elapsed_s]  # failures end early
    means: dict[str, float] = {}
    for kind in {r.kind for r in done} | {""}:
        times = [r.elapsed_s for r in done if kind in ("", r.kind)]
        if times:
            means[kind] = sum(times) / len(times)
    # before any run is done: the projected durations of the running trainings (elapsed + left)
    projected = [(r, now - r.started + r.remaining_s(now, None)) for r in runs
                 if r.state == "running" and r.started is not None and r.epochs and r.epoch_times]
    for kind in {r.kind for r, _ in projected} | {""}:
        times = [t for r, t in projected if kind in ("", r.kind)]
        if times and kind not in means:
            means[kind] = sum(times) / len(times)
    left = [r.remaining_s(now, means) for r in runs if r.state not in ("done", "failed")]
    if not left:
        return 0.0
    if any(v is None for v in left):
        return None
    # no batch ends before its longest run: a queued run may end up alone after the others
    return max(sum(left) / max(1, min(int(slots), len(left))), max(left))


def batch_line(runs: list[RunProgress], elapsed_s: float, left_s: float | None) -> str:
    """``[batch] F/T runs finished (k failed), r running, q queued; elapsed E; ~L left``."""
    n = {s: sum(r.state == s for r in runs) for s in ("queued", "running", "done", "failed")}
    text = f"[batch] {n['done'] + n['failed']}/{len(runs)} runs finished"
    if n["failed"]:
        text += f" ({n['failed']} failed)"
    text += f", {n['running']} running, {n['queued']} queued; elapsed {fmt_time(elapsed_s)}"
    if n["running"] or n["queued"]:
        text += "; time left: estimating" if left_s is None else f"; ~{fmt_time(left_s)} left"
    return text


class BatchProgress:
    """Watches the runs of one batch; thread-safe. ``say`` prints one line.

    ``add`` every run to execute first (state ``queued``), then call ``started`` / ``finished``
    as the driver learns of them; ``start()`` launches the polling thread, ``stop()`` ends it.
    ``poll()`` (also called by the thread) prints the new epochs of the running runs, and a batch
    line at most every ``batch_every_s`` seconds while epochs arrive, and after every finished run.
    """

    def __init__(self, slots: int, say: Callable[[str], None] = print, poll_s: float = 5.0,
                 batch_every_s: float = 60.0, clock: Callable[[], float] = time.time):
        self.slots, self.say, self.poll_s, self.batch_every_s = slots, say, poll_s, batch_every_s
        self.clock = clock
        self.t0 = clock()
        self.runs: dict[str, RunProgress] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_batch_line = self.t0

    # --- the driver's events
    def add(self, run_id: str, run_dir: str | Path, expected_s: float | None = None,
            kind: str = "") -> None:
        with self._lock:
            rp = RunProgress(run_id, Path(run_dir), kind=kind, expected_s=expected_s)
            # epochs already in its metrics (a resumed run) are not printed again
            rows = RunFolder(rp.run_dir).read_metrics()
            rp.last_epoch = max((r["epoch"] for r in rows), default=0)
            self.runs[run_id] = rp

    def started(self, run_id: str) -> None:
        with self._lock:
            rp = self.runs[run_id]
            rp.state, rp.started, rp.first_epoch = "running", self.clock(), rp.last_epoch

    def finished(self, run_id: str, status: str, elapsed_s: float | None) -> None:
        with self._lock:
            rp = self.runs[run_id]
            for line in self._read_epochs(rp):
                self.say(line)
            rp.state = "done" if status == "done" else "failed"
            rp.elapsed_s = elapsed_s if elapsed_s else (
                self.clock() - rp.started if rp.started is not None else None)
            self._say_batch_line()

    # --- reading the run folders
    def _read_epochs(self, rp: RunProgress) -> list[str]:
        run = RunFolder(rp.run_dir)
        try:
            mtime = run.metrics.stat().st_mtime
        except OSError:
            return []
        if mtime == rp.metrics_mtime:
            return []
        rp.metrics_mtime = mtime
        rows = run.read_metrics()
        if rows and rows[-1]["epoch"] < rp.last_epoch:
            rp.last_epoch, rp.first_epoch, rp.epoch_times = 0, 0, []  # started afresh
        if rp.epochs is None:
            rp.epochs = _recipe_epochs(rp.run_dir)
        lines = []
        for row in rows:
            epoch = row["epoch"]
            if epoch <= rp.last_epoch:
                continue
            rp.last_epoch = epoch
            t = _float(row.get("epoch_time_s"))
            if t is not None:
                rp.epoch_times.append(t)
            lines.append(epoch_line(rp.id, row, rp.epochs))
        return lines

    def poll(self) -> None:
        with self._lock:
            new = []
            for rp in self.runs.values():
                if rp.state == "running":
                    new.extend(self._read_epochs(rp))
            for line in new:
                self.say(line)
            if new and self.clock() - self._last_batch_line >= self.batch_every_s:
                self._say_batch_line()

    def _say_batch_line(self) -> None:
        now = self.clock()
        runs = list(self.runs.values())
        self.say(batch_line(runs, now - self.t0, estimate_time_left(runs, self.slots, now)))
        self._last_batch_line = now

    # --- the thread
    def start(self) -> "BatchProgress":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="batch-progress", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - progress lines must never break a batch (a
                pass  # say() to a closed stream, a run folder removed under us, ...)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            try:
                for rp in self.runs.values():
                    if rp.state == "running":
                        for line in self._read_epochs(rp):
                            self.say(line)
            except Exception:  # noqa: BLE001 - the last progress lines must never break the
                pass  # end of a batch (as in _loop)
