"""The prepared index ``<data_root>/<ds>/index.csv``: records, label maps, reading and writing.

Columns (docs/ARCHITECTURE.md): ``path`` (relative to ``<data_root>/<ds>/``), ``class_name`` (raw
label string), ``label`` (int), ``split`` (train | val | test | query | gallery), ``x1, y1, x2,
y2`` (int PIL box, empty when the set has no boxes). ``val`` (the demo only): images of training
classes kept for validation, made of scans no training image uses.

Labels: dense ``0..C-1`` over the sorted class names of ``train`` (``val`` shares that map: its
classes are training classes), and separately dense over the
sorted class names of the UNION of the evaluation splits (``test``, or ``query`` ∪ ``gallery`` with
ONE shared map). Names sort numerically when they are all integers (``"2" < "10"``), otherwise as
strings. (The original repositories sort strings per split, so their label ints differ from ours; retrieval metrics
do not depend on the ints, and for In-shop the original code's separate query/gallery maps are a bug,
see :func:`assign_labels`.)

Integrity: ``prepare`` writes ``prepare_report.json`` (key ``index``: the SHA-256 of the index
file's bytes, its row count and :data:`PREPARE_VERSION`; key ``splits``: images and classes per
split) BEFORE the index, and every reader (:func:`read_index`, hence ``RetrievalDataset``)
checks the index against it: a truncated or edited index is an :class:`IndexIntegrityError`
naming the file and the fix (``python -m dml_core.data DATASET --force``), never data.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from dml_core.core.io import write_bytes

from .boxes import Box
from .layout import INDEX_COLUMNS, INDEX_FILE, REPORT_FILE

#: Version of the prepared format and of the preparation rules; part of every run's data
#: fingerprint (a change re-trains). 2: the index's integrity record in prepare_report.json.
PREPARE_VERSION = 2

TRAIN_SPLITS = ("train", "val")  # one label map: the training classes
EVAL_SPLITS = ("test", "query", "gallery")


@dataclass
class Record:
    """One image: ``path`` relative to the data-set folder, raw ``class_name``, ``split``, ``box``."""

    path: str
    class_name: str
    split: str
    box: Optional[Box] = None
    label: int = -1


def sort_class_names(names: Iterable[str]) -> list[str]:
    """Unique names, sorted numerically when all are integers, else as strings."""
    unique = set(names)
    try:
        return sorted(unique, key=int)
    except ValueError:
        return sorted(unique)


def label_map(names: Iterable[str]) -> dict[str, int]:
    """``{class_name: 0..C-1}`` over the sorted unique names."""
    return {name: i for i, name in enumerate(sort_class_names(names))}


def assign_labels(records: list[Record]) -> list[Record]:
    """Set ``record.label`` in place: one map for ``train`` (and ``val``), ONE shared map for all
    eval splits.

    In-shop: query and gallery share one item-id map built over query ∪ gallery. The original repositories build
    a separate sorted map per split, which is only correct because both splits happen to hold the
    same 3,985 ids; here a query and a gallery image of the same item always get the same label.
    """
    unknown = {r.split for r in records} - set(TRAIN_SPLITS) - set(EVAL_SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected train/val/test/query/gallery")
    for group in (TRAIN_SPLITS, EVAL_SPLITS):
        members = [r for r in records if r.split in group]
        mapping = label_map(r.class_name for r in members)
        for r in members:
            r.label = mapping[r.class_name]
    return records


class IndexIntegrityError(ValueError):
    """``index.csv`` does not match its integrity record (truncated, edited, or prepared by an
    older version); the message names the file and says to run ``prepare --force``."""


def index_bytes(records: list[Record]) -> bytes:
    """The exact bytes of ``index.csv`` for ``records`` (CSV, ``\r\n`` line ends)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(INDEX_COLUMNS)
    for r in records:
        box = list(r.box) if r.box is not None else ["", "", "", ""]
        writer.writerow([r.path, r.class_name, r.label, r.split, *box])
    return buf.getvalue().encode("utf-8")


def integrity_record(data: bytes, records: list[Record]) -> dict:
    """The ``index`` entry of prepare_report.json for an index with bytes ``data``."""
    return {"file": INDEX_FILE, "sha256": hashlib.sha256(data).hexdigest(), "rows": len(records),
            "prepare_version": PREPARE_VERSION}


def write_index(path: str | os.PathLike, records: list[Record], data: bytes | None = None) -> None:
    """Write ``records`` as ``index.csv`` atomically (this file is the completeness marker).
    ``data``: the bytes from :func:`index_bytes` when the caller has them already."""
    write_bytes(path, index_bytes(records) if data is None else data)


def unsafe_path(relpath: str) -> bool:
    """True when ``relpath`` (a path from an annotation file or an index, relative to the
    data-set folder) is empty, absolute (``/x``) or climbs out of the folder with ``..`` (``\\``
    counts as a separator too); such an entry would read a file outside the data root."""
    text = str(relpath).replace("\\", "/")
    if not text or text.startswith("/") or "\0" in text:
        return True
    depth = 0
    for part in text.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return depth <= 0


def _fix(path: Path) -> str:
    return f"run `python -m dml_core.data {path.parent.name} --force` to prepare it again"


def _parse(path: Path, data: bytes) -> list[Record]:
    """Records from the index bytes; a malformed line (wrong fields, a CSV error such as an
    over-long field, a path that is absolute or leaves the data-set folder) is an
    IndexIntegrityError naming it."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
    try:
        return _parse_rows(path, reader)
    except csv.Error as exc:
        raise IndexIntegrityError(f"{path}, line {reader.line_num}: not readable as CSV ({exc}); "
                                  f"the file is damaged or edited; {_fix(path)}") from None


def _parse_rows(path: Path, reader: csv.DictReader) -> list[Record]:
    if tuple(reader.fieldnames or ()) != INDEX_COLUMNS:
        raise IndexIntegrityError(
            f"{path} has columns {reader.fieldnames}, expected {list(INDEX_COLUMNS)}; {_fix(path)}")
    records = []
    for row in reader:
        try:
            if row.get("path") is not None and unsafe_path(row["path"]):
                raise ValueError(f"path {row['path']!r} is absolute or leaves the data-set folder")
            if None in row or any(row[k] is None for k in INDEX_COLUMNS):
                raise ValueError("too few or too many fields")
            box = None
            if row["x1"] != "":
                box = tuple(int(row[k]) for k in ("x1", "y1", "x2", "y2"))
            records.append(Record(row["path"], row["class_name"], row["split"], box, int(row["label"])))
        except (TypeError, ValueError) as exc:
            raise IndexIntegrityError(f"{path}, line {reader.line_num}: malformed ({exc}); the file "
                                      f"is truncated or edited; {_fix(path)}") from None
    return records


def read_integrity(path: str | os.PathLike) -> dict:
    """The integrity record of the index at ``path`` (from ``prepare_report.json`` beside it):
    ``{"sha256", "rows", "prepare_version", "splits"}``; IndexIntegrityError when absent."""
    path = Path(path)
    report = path.parent / REPORT_FILE
    try:
        data = json.loads(report.read_text())
        record = dict(data["index"])
        record["splits"] = data["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        raise IndexIntegrityError(
            f"{path} has no integrity record ({report} is missing, unreadable or from an older "
            f"version of dml_core); {_fix(path)}") from None
    return record


def read_index(path: str | os.PathLike, verify: bool = True) -> list[Record]:
    """Read ``index.csv`` back into records, checked against its integrity record (module
    docstring) unless ``verify=False``; a mismatch raises :class:`IndexIntegrityError`."""
    path = Path(path)
    data = path.read_bytes()
    if not verify:
        return _parse(path, data)
    record = read_integrity(path)
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        try:
            found = split_summary(_parse(path, data))
            what = "; ".join(f"{s}: {v['images']} images / {v['classes']} classes"
                             for s, v in found.items()) or "no rows"
        except IndexIntegrityError as exc:
            what = str(exc).split(";")[0]
        expected = "; ".join(f"{s}: {v['images']} images / {v['classes']} classes"
                             for s, v in record["splits"].items())
        raise IndexIntegrityError(
            f"{path} does not match its integrity record in {REPORT_FILE} (checksum differs; "
            f"found {what}; prepared: {expected}): the file was truncated or edited; {_fix(path)}")
    records = _parse(path, data)
    if split_summary(records) != record["splits"] or len(records) != record.get("rows"):
        raise IndexIntegrityError(f"{path}: split sizes differ from {REPORT_FILE}; {_fix(path)}")
    return records


def index_fingerprint(path: str | os.PathLike) -> str:
    """``"v<PREPARE_VERSION>:<sha256 of the index bytes>"``: what a run records about its data."""
    return f"v{PREPARE_VERSION}:{hashlib.sha256(Path(path).read_bytes()).hexdigest()}"


def split_summary(records: list[Record]) -> dict[str, dict[str, int]]:
    """``{split: {"images": n, "classes": c}}`` in the order splits first appear."""
    summary: dict[str, dict[str, int]] = {}
    classes: dict[str, set] = {}
    for r in records:
        summary.setdefault(r.split, {"images": 0, "classes": 0})["images"] += 1
        classes.setdefault(r.split, set()).add(r.class_name)
    for split, names in classes.items():
        summary[split]["classes"] = len(names)
    return summary
