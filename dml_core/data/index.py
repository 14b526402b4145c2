"""The prepared index ``<data_root>/<ds>/index.csv``: records, label maps, reading and writing.

Columns (docs/ARCHITECTURE.md): ``path`` (relative to ``<data_root>/<ds>/``), ``class_name`` (raw
label string), ``label`` (int), ``split`` (train | test | query | gallery), ``x1, y1, x2, y2``
(int PIL box, empty when the set has no boxes).

Labels: dense ``0..C-1`` over the sorted class names of ``train``, and separately dense over the
sorted class names of the UNION of the evaluation splits (``test``, or ``query`` ∪ ``gallery`` with
ONE shared map). Names sort numerically when they are all integers (``"2" < "10"``), otherwise as
strings. (The seeds sort strings per split, so their label ints differ from ours; retrieval metrics
do not depend on the ints, and for In-shop the seeds' separate query/gallery maps are a bug,
see :func:`assign_labels`.)
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from dml_core.io import atomic_path

from .boxes import Box
from .layout import INDEX_COLUMNS

TRAIN_SPLITS = ("train",)
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
    """Set ``record.label`` in place: one map for ``train``, ONE shared map for all eval splits.

    In-shop: query and gallery share one item-id map built over query ∪ gallery. The seeds build
    a separate sorted map per split, which is only correct because both splits happen to hold the
    same 3,985 ids; here a query and a gallery image of the same item always get the same label.
    """
    unknown = {r.split for r in records} - set(TRAIN_SPLITS) - set(EVAL_SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected train/test/query/gallery")
    for group in (TRAIN_SPLITS, EVAL_SPLITS):
        members = [r for r in records if r.split in group]
        mapping = label_map(r.class_name for r in members)
        for r in members:
            r.label = mapping[r.class_name]
    return records


def write_index(path: str | os.PathLike, records: list[Record]) -> None:
    """Write ``records`` as ``index.csv`` atomically (this file is the completeness marker)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(INDEX_COLUMNS)
            for r in records:
                box = list(r.box) if r.box is not None else ["", "", "", ""]
                writer.writerow([r.path, r.class_name, r.label, r.split, *box])


def read_index(path: str | os.PathLike) -> list[Record]:
    """Read ``index.csv`` back into records."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != INDEX_COLUMNS:
            raise ValueError(
                f"{path} has columns {reader.fieldnames}, expected {list(INDEX_COLUMNS)}; "
                "re-create it with `python -m dml_core.prepare DATASET --force`"
            )
        records = []
        for row in reader:
            box = None
            if row["x1"] != "":
                box = tuple(int(row[k]) for k in ("x1", "y1", "x2", "y2"))
            records.append(Record(row["path"], row["class_name"], row["split"], box, int(row["label"])))
    return records


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
