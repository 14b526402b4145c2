"""The run folder: the one owner of its layout, its lock, its reuse rule and every file in it.

Every module that reads or writes a run folder goes through :class:`RunFolder`; no other module
spells a file name of it. Every write is atomic (:mod:`dml_core.core.io`). Layout::

    <run_dir>/config.yaml            the resolved recipe                          (training)
    <run_dir>/metrics.csv            one row per epoch, rewritten every epoch     (training)
    <run_dir>/summary.json           status, best and last epoch, timing, ...     (training)
    <run_dir>/provenance.json        what produced the run: code, data, ...       (training)
    <run_dir>/checkpoints/last.pt    the resume point (end of the last epoch)     (training)
    <run_dir>/checkpoints/best.pt    model + criterion of the selected epoch      (training)
    <run_dir>/features/best.pt       test features of the selected epoch          (training)
    <run_dir>/features/last.pt       test features of the last epoch              (training)
    <run_dir>/figures/               the run's figures                            (notebook)
    <run_dir>/toy_<variant>_history.pt  the toy's per-epoch pictures              (the toy)
    <run_dir>/toy_study.json         the toy notebook's results                   (the toy)
    <run_dir>/notebook.ipynb         the executed notebook (notebook.running.ipynb while it runs)
    <run_dir>/notebook.html          the executed notebook as HTML                (batch)
    <run_dir>/log.txt                the execution's log                          (batch)
    <run_dir>/status.json            running | done | failed | interrupted | ...  (batch)
    <run_dir>/done.json              the fingerprint of the last success          (batch)
    <run_dir>/batch_settings.json    the ``--set`` values it ran with             (batch)
    <run_dir>/.lock                  held while a process trains into the folder

A notebook that trains several runs keeps them in folders below its own (the toy:
``moving/``, ``learnable/``, ``sweep/m<m>/``); each of them is a run folder too.

**Reuse.** :meth:`RunFolder.open` is how a training enters a folder: it takes the lock,
removes what a killed process left, and reuses a complete run or resumes an interrupted one only
when the recipe (``epochs`` aside: more epochs continue) and the provenance match; otherwise every
output of the old run (:data:`OUTPUTS`) is moved aside and deleted, saying why. The provenance is
a plain dict that the caller builds (:func:`dml_core.training.trainer.train`: training-code and
data fingerprints); every key counts, except the informational ones of :data:`PROVENANCE_INFO`,
so a new kind of input (pretrained weights, say) is one more key, compared like the others.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, TypedDict

from dml_core.core import io as dio

if TYPE_CHECKING:  # the checkpoint format needs torch: imported where a .pt file is touched
    from dml_core.core.checkpoint import SavedFeatures

__all__ = ["RunFolder", "read_status", "MALFORMED", "STATUS_FIELDS", "find_runs", "metrics_csv", "metric_columns", "plain", "BASE_COLUMNS",
           "CHECKPOINTS", "FIGURES", "OUTPUTS", "RESULTS", "PROVENANCE_INFO", "Summary", "Status"]

#: The leading columns of metrics.csv, in this order; then test/*, val/*, then the method's own.
BASE_COLUMNS = ["epoch", "lr", "train_loss", "train_accuracy", "images_per_s", "epoch_time_s"]

#: The figures folder of a run, relative to it (also the default ``output_dir`` of 08_figures).
FIGURES = "figures"

#: What a training run writes into its folder (glob patterns); :meth:`RunFolder.clear` moves
#: exactly these aside (the batch's files in the same folder, the executed notebook, its log and
#: status, stay).
OUTPUTS = ("config.yaml", "metrics.csv", "summary.json", "provenance.json", "checkpoints",
           "features", FIGURES, "toy_*_history.pt")

#: What makes a folder the result of a run that other runs read (tables, figures): the folder
#: or one of the folders one level below holds one of these.
RESULTS = ("summary.json", "provenance.json", "toy_study.json", FIGURES)

#: Provenance keys kept for the reader only: a difference there does not make a run stale
#: (``git_commit``: a dirty tree has the same commit; the others restate ``code`` and ``data``).
PROVENANCE_INFO = ("git_commit", "training_code", "data_index")

#: How a restart names a changed provenance key (any other key by its own name).
PROVENANCE_WORDS = {"code": "the training code", "data": "the prepared data"}

CHECKPOINTS = ("best", "last")


class Summary(TypedDict, total=False):
    """``summary.json`` (docs/ARCHITECTURE.md): written by the training engine every epoch."""

    status: str                # running | complete | failed
    recipe: dict
    protocol: str | None       # evaluation protocol (dml_core.evaluation.PROTOCOLS)
    selection: str             # test | validation
    selection_metric: str      # e.g. val/dense/R@1
    epochs: int
    untrained: dict | None     # {"epoch": 0, "metrics": {...}}: the network before training
    best: dict | None          # {"epoch", "metrics"} of the selected epoch
    last: dict | None          # {"epoch", "metrics"} of the last evaluated epoch
    epochs_completed: int
    train_time_s: float
    images_per_s: float | None
    num_parameters: int
    num_classes: int
    data: dict                 # image and class counts
    complexity: dict           # parameters and MACs
    provenance: dict
    hardware: dict
    versions: dict
    git_commit: str | None
    message: str | None        # the error of a failed run


class Status(TypedDict, total=False):
    """``status.json``: one execution of the run's notebook (:mod:`dml_core.batch.execution`)."""

    id: str
    notebook: str
    status: str                # running | done | failed | interrupted | requeued
    started_at: str | None     # dml_core.core.clock.now()
    finished_at: str | None
    elapsed_s: float | None
    error: str | None
    fingerprint: str


class RunFolder:
    """The paths, readers and writers of one run folder (see the module docstring).

    Readers return None (``read_status``: ``{}``; ``read_metrics``: ``[]``) when the file is
    missing or cannot be read; checkpoints and features raise instead (FileNotFoundError,
    :class:`dml_core.core.checkpoint.CorruptCheckpointError`), since a run must not go on without
    them. Their format is :mod:`dml_core.core.checkpoint`'s (imported on use: it needs torch).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.root = Path(run_dir)
        # training
        self.config = self.root / "config.yaml"
        self.metrics = self.root / "metrics.csv"
        self.summary = self.root / "summary.json"
        self.provenance = self.root / "provenance.json"
        self.last_checkpoint = self.checkpoint_file("last")
        self.best_checkpoint = self.checkpoint_file("best")
        self.best_features = self.features_file("best")
        self.last_features = self.features_file("last")
        self.figures = self.root / FIGURES
        self.lock_file = self.root / ".lock"
        # the toy
        self.toy_study = self.root / "toy_study.json"
        # the batch's execution of the run's notebook
        self.notebook = self.root / "notebook.ipynb"
        self.running_notebook = self.root / "notebook.running.ipynb"
        self.html = self.root / "notebook.html"
        self.log = self.root / "log.txt"
        self.status = self.root / "status.json"
        self.done = self.root / "done.json"
        self.settings = self.root / "batch_settings.json"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def checkpoint_file(self, which: str) -> Path:
        """``checkpoints/<which>.pt``, ``which`` in :data:`CHECKPOINTS`."""
        return self.root / "checkpoints" / f"{_which(which)}.pt"

    def features_file(self, which: str) -> Path:
        """``features/<which>.pt``, ``which`` in :data:`CHECKPOINTS`."""
        return self.root / "features" / f"{_which(which)}.pt"

    def toy_history(self, variant: str) -> Path:
        """``toy_<variant>_history.pt`` (:mod:`dml_core.study.toy`)."""
        return self.root / f"toy_{variant}_history.pt"

    # ---------------------------------------------------------------- config, metrics, summary
    def write_config(self, recipe: dict) -> None:
        dio.write_yaml(self.config, plain(recipe))

    def read_config(self) -> dict | None:
        """The recipe in ``config.yaml``; None when missing or unreadable."""
        import yaml

        value = _tolerant(dio.read_yaml, self.config, (yaml.YAMLError,))
        return value if isinstance(value, dict) else None

    def write_metrics(self, rows: list[dict]) -> None:
        dio.write_text(self.metrics, metrics_csv(rows))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.csv``, one per epoch: ``epoch`` an int, every other cell a float
        (NaN where it is empty: an epoch without evaluation); a cell that is not a number stays
        a string. ``[]`` when the file is missing, empty or unreadable."""
        try:
            text = self.metrics.read_text(encoding="utf-8")
            rows = list(csv.DictReader(io.StringIO(text)))
        except (OSError, csv.Error, UnicodeDecodeError):
            return []
        out = []
        for row in rows:
            if not row.get("epoch"):
                continue
            typed = {k: _number(v) for k, v in row.items() if k is not None}
            try:
                typed["epoch"] = int(float(row["epoch"]))
            except ValueError:
                continue
            out.append(typed)
        return out

    def write_summary(self, summary: Summary | dict) -> None:
        dio.write_json(self.summary, summary)

    def read_summary(self) -> Summary | None:
        """``summary.json``; None when missing or unreadable."""
        value = _tolerant(dio.read_json, self.summary)
        return value if isinstance(value, dict) else None

    def is_complete(self, epochs: int) -> bool:
        """True when summary.json says the run finished ``epochs`` (or more) epochs."""
        summary = self.read_summary()
        try:
            return bool(summary and summary.get("status") == "complete"
                        and int(summary.get("epochs_completed", 0)) >= int(epochs))
        except (TypeError, ValueError):
            return False

    # ---------------------------------------------------------------- checkpoints and features
    def write_last(self, *, epoch: int, method_state: dict, rng: dict, history: list[dict],
                   best: dict | None, totals: dict, loader_rng: dict | None = None,
                   untrained: dict | None = None) -> None:
        """The resume point at the end of ``epoch`` (:func:`dml_core.core.checkpoint.save_last`)."""
        from dml_core.core import checkpoint

        checkpoint.save_last(self.last_checkpoint, epoch=epoch, method_state=method_state, rng=rng,
                             history=history, best=best, totals=totals, loader_rng=loader_rng,
                             untrained=untrained)

    def write_best(self, *, epoch: int, method: Any, metrics: dict) -> None:
        """The selected epoch's weights (:func:`dml_core.core.checkpoint.save_best`)."""
        from dml_core.core import checkpoint

        checkpoint.save_best(self.best_checkpoint, epoch=epoch, method=method, metrics=metrics)

    def read_checkpoint(self, which: str = "last") -> dict:
        """``checkpoints/<which>.pt`` on the CPU; FileNotFoundError when absent,
        :class:`~dml_core.core.checkpoint.CorruptCheckpointError` when damaged."""
        from dml_core.core import checkpoint

        return checkpoint.load(self.checkpoint_file(which))

    def write_features(self, which: str, features: dict, epoch: int) -> None:
        """Test features (``features, labels, paths`` [+ ``gallery_*``]) of ``epoch``."""
        from dml_core.core import checkpoint

        checkpoint.save_features(self.features_file(which), features, epoch)

    def read_features(self, which: str = "best") -> "SavedFeatures":
        """``features/<which>.pt`` as :class:`~dml_core.core.checkpoint.SavedFeatures`;
        FileNotFoundError when absent, ``CorruptCheckpointError`` when damaged."""
        from dml_core.core import checkpoint

        return checkpoint.SavedFeatures.from_dict(checkpoint.load(self.features_file(which)))

    # ---------------------------------------------------------------- provenance and reuse
    def write_provenance(self, provenance: dict) -> None:
        dio.write_json(self.provenance, provenance)

    def read_provenance(self) -> dict | None:
        value = _tolerant(dio.read_json, self.provenance)
        return value if isinstance(value, dict) else None

    def provenances(self) -> list[dict]:
        """The provenance of this folder's training and of the run folders one level below
        (a notebook that trains several runs), in that order."""
        folders = [self] + [RunFolder(p.parent) for p in sorted(self.root.glob(
            f"*/{self.provenance.name}"))]
        return [p for p in (f.read_provenance() for f in folders) if p is not None]

    def holds_results(self) -> bool:
        """Whether this folder, or one folder below it, holds a run's results (:data:`RESULTS`):
        what the tables and figures of a later stage read."""
        return any((self.root / name).exists() or any(self.root.glob(f"*/{name}"))
                   for name in RESULTS)

    @contextlib.contextmanager
    def open(self, recipe: dict, provenance: dict, epochs: int,
             resume: bool = True) -> Iterator[bool]:
        """Enter the folder to train ``recipe`` (made from ``provenance``) for ``epochs``:
        hold its lock for the block, remove what a killed process left
        (:meth:`remove_leftovers`), clear an old run that cannot be reused
        (:meth:`reuse_or_restart`) and record the provenance. Yields the ``resume`` flag for
        :func:`dml_core.training.fit`: True when the old run may be reused (complete:
        :meth:`is_complete`) or resumed."""
        with self.lock():
            self.remove_leftovers()
            resume = self.reuse_or_restart(recipe, provenance, epochs, resume)
            if not (resume and self.is_complete(epochs)):
                self.write_provenance(provenance)
            yield resume

    def lock(self, timeout: float | None = None):
        """The folder's lock (:class:`dml_core.core.locks.FileLock`): one trainer at a time; a
        second one waits (``timeout=None``) and then finds the run complete or resumes it."""
        from dml_core.core.locks import FileLock

        return FileLock(self.lock_file, what=f"the run folder {self.root}", timeout=timeout)

    def recipe_changes(self, recipe: dict) -> list[str]:
        """Keys whose value differs from this folder's ``config.yaml`` (``epochs`` excepted: more
        epochs than before means "continue"). Empty when there is no config yet."""
        if not self.config.is_file():
            return []
        old = self.read_config()
        if old is None:
            return [f"<unreadable {self.config.name}>"]
        new = plain(recipe)
        return [k for k in sorted(set(old) | set(new)) if k != "epochs" and old.get(k) != new.get(k)]

    def restart_reasons(self, recipe: dict, provenance: dict) -> list[str]:
        """Why the run in this folder cannot be reused or resumed for ``recipe`` produced with
        ``provenance``: empty when it can, or when the folder holds no run. Every provenance key
        counts but :data:`PROVENANCE_INFO`; a dict-valued key names its changed entries."""
        if not self.has_outputs():
            return []
        reasons = []
        changes = self.recipe_changes(recipe)
        if changes:
            reasons.append(f"the recipe changed ({', '.join(changes)})")
        old = self.read_provenance()
        if old is None:
            reasons.append(f"it has no {self.provenance.name} (made by an older version)")
            return reasons
        for key in sorted(set(old) | set(provenance)):
            was, now = old.get(key), provenance.get(key)
            if key in PROVENANCE_INFO or was == now:
                continue
            what = f"{PROVENANCE_WORDS.get(key, key)} changed"
            if isinstance(was, dict) or isinstance(now, dict):
                was, now = was if isinstance(was, dict) else {}, now if isinstance(now, dict) else {}
                what += f" ({', '.join(sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k)))})"
            reasons.append(what)
        return reasons

    def reuse_or_restart(self, recipe: dict, provenance: dict, epochs: int,
                         resume: bool = True) -> bool:
        """Decide, holding :meth:`lock`, whether the run in this folder may be reused or resumed
        for ``recipe`` made with ``provenance``; return the ``resume`` flag for ``fit``. When
        :meth:`restart_reasons` gives reasons, or the resume point of an unfinished run cannot
        be read (it is moved to ``last.pt.corrupt``), every old output is removed
        (:meth:`clear`), the reasons are printed, and False is returned."""
        from dml_core.core import checkpoint

        reasons = self.restart_reasons(recipe, provenance)
        if not reasons and resume and self.last_checkpoint.exists() and not self.is_complete(epochs):
            problem = checkpoint.unreadable(self.last_checkpoint)
            if problem:
                aside = self.root / f"{self.last_checkpoint.name}.corrupt"
                os.replace(self.last_checkpoint, aside)
                reasons = [f"{self.last_checkpoint} cannot be read ({problem}); moved aside to "
                           f"{aside}, nothing to resume from"]
        if reasons:
            print(f"{self.root}: training from scratch, the old run's files are removed: "
                  + "; ".join(reasons), flush=True)
            self.clear()
            return False
        return resume

    def discard_progress(self) -> None:
        """Forget the progress of a previous run (summary, metrics, resume point) so that it
        is not resumed; :meth:`open` uses :meth:`clear`, which removes every output."""
        for path in (self.summary, self.metrics, self.last_checkpoint):
            path.unlink(missing_ok=True)

    def has_outputs(self) -> bool:
        return any(any(self.root.glob(name)) for name in OUTPUTS) if self.root.is_dir() else False

    def clear(self) -> Path | None:
        """Move every output of a previous run (:data:`OUTPUTS`) into ``.old-<time>/`` (renames,
        atomic each), then delete that folder. A kill in between leaves only ``.old-*``, which
        :meth:`remove_leftovers` deletes on the next start. Returns the aside folder or None."""
        present = [p for name in OUTPUTS for p in sorted(self.root.glob(name))] \
            if self.root.is_dir() else []
        if not present:
            return None
        aside = self.root / f".old-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        aside.mkdir(parents=True, exist_ok=True)
        for path in present:
            os.replace(path, aside / path.name)
        shutil.rmtree(aside, ignore_errors=True)
        return aside

    def remove_leftovers(self) -> list[Path]:
        """Delete what a killed process left behind: ``.*.tmp`` files of interrupted atomic
        writes (:mod:`dml_core.core.io`) in the folder and its checkpoints/features/figures, and
        ``.old-*`` folders of an interrupted :meth:`clear`. Call only while holding the lock."""
        removed = []
        for folder in (self.root, self.last_checkpoint.parent, self.best_features.parent,
                       self.figures):
            if folder.is_dir():
                for path in folder.glob(".*.tmp"):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        for path in self.root.glob(".old-*") if self.root.is_dir() else []:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        return removed

    # ---------------------------------------------------------------- the batch's files
    def write_status(self, status: Status | dict) -> None:
        dio.write_json(self.status, status)

    def read_status(self) -> Status | dict:
        """``status.json`` of the last execution: ``{}`` when there is none; its contents when
        every field of :data:`STATUS_FIELDS` has its type (or is null); else ``{"status":
        "malformed", "error": why}`` (a hand edit, a disk error): the readers (the batch's index,
        its progress, the book, the findings) report that run and go on with the others."""
        try:
            text = self.status.read_text(errors="replace")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            why = f"it cannot be read ({exc.strerror or exc})"
        else:
            try:
                data = json.loads(text)
            except ValueError as exc:
                why = f"it is not JSON ({exc})"
            else:
                why = _status_problem(data)
                if why is None:
                    return data
        return {"status": MALFORMED,
                "error": f"{self.status} is malformed: {why}. Run it again (python -m "
                         f"dml_core.batch --profile PROFILE --only {self.root.name} --force) or "
                         "delete the file"}

    def write_done(self, done: dict) -> None:
        dio.write_json(self.done, done)

    def read_done(self) -> dict | None:
        """``done.json`` (the fingerprint of the last successful execution); None when there is
        none (never done, failed, running) or it is unreadable."""
        value = _tolerant(dio.read_json, self.done)
        return value if isinstance(value, dict) else None

    def forget_done(self) -> None:
        """Not done until the execution that starts now succeeds."""
        self.done.unlink(missing_ok=True)

    def write_settings(self, settings: dict | None, written_at: str) -> None:
        """``batch_settings.json``: the ``--set`` values the run executes with; removed when
        there are none."""
        if settings:
            dio.write_json(self.settings, {"settings": settings, "shortened": True,
                                           "written_at": written_at})
        else:
            self.settings.unlink(missing_ok=True)


def find_runs(folder: str | os.PathLike) -> list[RunFolder]:
    """Every training run folder under ``folder`` (itself included, at any depth): the folders
    holding a summary, in path order."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    name = RunFolder(folder).summary.name
    return [RunFolder(p) for p in sorted({p.parent for p in folder.rglob(name)})]


def _which(which: str) -> str:
    if which not in CHECKPOINTS:
        raise ValueError(f"which must be one of {CHECKPOINTS}, got {which!r}")
    return which


#: The fields of status.json and their types (each may also be null).
STATUS_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "notebook": (str,), "status": (str,), "started_at": (str,),
    "finished_at": (str,), "elapsed_s": (int, float), "error": (str,), "fingerprint": (str,)}
#: The status of a run whose status.json cannot be used.
MALFORMED = "malformed"


def _status_problem(data: Any) -> str | None:
    """What is wrong with a status.json's contents, or None."""
    if not isinstance(data, dict):
        return f"it holds a {type(data).__name__}, not an object"
    for key, types in STATUS_FIELDS.items():
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            return (f"its field {key!r} is {value!r}, not "
                    + " or ".join("a number" if t in (int, float) else "a string" for t in types))
        if key == "elapsed_s" and not math.isfinite(value):
            return f"its field 'elapsed_s' is {value!r}, not a finite number"
    return None


def read_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """:meth:`RunFolder.read_status` of ``run_dir``."""
    return RunFolder(run_dir).read_status()


def _tolerant(read, path: Path, errors: tuple = ()) -> Any:
    """``read(path)``, or None when the file is missing or unreadable (OSError, ValueError: bad
    JSON or text, or one of ``errors``)."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except (OSError, ValueError, *errors):
        return None


def _number(cell: str | None) -> Any:
    if cell is None or cell == "":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        return cell


def metric_columns(rows: Iterable[dict]) -> list[str]:
    """Column order: BASE_COLUMNS, then test/*, val/*, then every other key as first seen."""
    seen: list[str] = []
    for row in rows:
        seen.extend(k for k in row if k not in seen)
    rest = [k for k in seen if k not in BASE_COLUMNS]
    return (BASE_COLUMNS + [k for k in rest if k.startswith("test/")]
            + [k for k in rest if k.startswith("val/")]
            + [k for k in rest if not k.startswith(("test/", "val/"))])


def metrics_csv(rows: list[dict]) -> str:
    """The CSV text of ``rows``; floats with full precision (``repr``), missing cells empty."""
    columns = metric_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def plain(obj: Any) -> Any:
    """Recipes as YAML-safe plain data (tuples → lists, numpy scalars → Python, paths → str)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
