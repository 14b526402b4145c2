"""``prepare(dataset, data_root)``: raw data → ``<data_root>/<ds>/index.csv`` + report.

Steps: read the raw annotations (:mod:`.raw`, :mod:`.stl10`), check that every listed image
exists (ONE :class:`~dml_core.data.raw.MissingRawDataError` listing all missing files), check
the images (:mod:`.verify`), assign labels (:func:`~dml_core.data.index.assign_labels`), compare
split sizes with the standard ones (a warning), then write ``bad_images.txt`` (when any),
``prepare_report.json`` and LAST, atomically, ``index.csv``, the completeness marker: an
interrupted run never leaves an index that looks complete, and a run that finds the index does
nothing unless ``force=True`` (an index that fails its integrity check, see
:mod:`.index`, is prepared again). One preparation per data set at a time: a second one (another
process, another notebook of a ``--jobs 2`` batch) waits for the lock ``<ds>/.prepare.lock``
(:mod:`dml_core.core.locks`) and then finds the data prepared.

Unreadable or truncated images are listed in ``bad_images.txt`` and the report, counted, and
EXCLUDED from the index (never silently). The originals are never re-encoded or copied (the
original repositories re-saved every image as JPEG quality 75); the index points at the raw files.
"""
from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

from dml_core.core import io, paths
from dml_core.core.locks import FileLock

from . import raw, stl10
from .demo import NUM_TRAIN_CLASSES as DEMO_TRAIN_CLASSES
from .demo import VALIDATION_FILE as DEMO_VALIDATION_FILE
from .demo import demo_raw_exists, remove_stale_demo, write_demo_raw
from .index import (IndexIntegrityError, Record, assign_labels, index_bytes, integrity_record,
                    read_index, split_summary, write_index)
from .layout import (BAD_IMAGES_FILE, BOX_CONVENTIONS, DATASETS, EXPECTED_SIZES, INDEX_FILE,
                     LOCK_FILE, MISSING_FILES_FILE, REPORT_FILE, VERIFY_MODES, check_dataset,
                     dataset_dir)
from .boxes import box_inside
from .verify import check_images


def index_path(dataset: str, data_root: Optional[str | os.PathLike] = None) -> Path:
    """Path of the prepared index of ``dataset``."""
    return dataset_dir(dataset, data_root) / INDEX_FILE


def is_prepared(dataset: str, data_root: Optional[str | os.PathLike] = None) -> bool:
    return index_path(dataset, data_root).is_file()


def prepared_splits(dataset: str, data_root: Optional[str | os.PathLike] = None) -> list[str]:
    """The splits of the prepared ``dataset`` (from its integrity record), e.g. ``["train",
    "test", "val"]`` for the demo; IndexIntegrityError when it has none."""
    from .index import read_integrity

    return list(read_integrity(index_path(dataset, data_root))["splits"])


def read_raw(dataset: str, folder: Path, box_convention: str = "corrected") -> list[Record]:
    """Records of ``dataset`` read from its raw folder (labels unassigned)."""
    if dataset == "car":
        return raw.read_car(folder, box_convention)
    if dataset in ("cub", "demo"):
        n = DEMO_TRAIN_CLASSES if dataset == "demo" else 100
        return raw.read_cub(folder, box_convention, num_train_classes=n, dataset=dataset,
                            validation_file=DEMO_VALIDATION_FILE if dataset == "demo" else None)
    if dataset == "sop":
        return raw.read_sop(folder)
    if dataset == "isc":
        return raw.read_isc(folder)
    return stl10.read_stl10(folder)


def size_differences(dataset: str, summary: dict) -> dict[str, dict[str, int]]:
    """``{split: {"expected": e, "found": f}}`` for splits whose size differs from the standard."""
    diffs = {}
    for split, expected in EXPECTED_SIZES.get(dataset, {}).items():
        found = summary.get(split, {}).get("images", 0)
        if found != expected:
            diffs[split] = {"expected": expected, "found": found}
    return diffs


def prepare(dataset: str, data_root: Optional[str | os.PathLike] = None, *, force: bool = False,
            box_convention: str = "corrected", verify_images: str = "full",
            workers: Optional[int] = None, verbose: bool = True, with_standin: bool = False
            ) -> Path:
    """Prepare ``dataset`` under ``data_root`` and return the path of its ``index.csv``.

    dataset: car | cub | sop | isc | stl10 | demo (demo writes its raw files first if absent).
    box_convention: "corrected" (default) or "original" (see :mod:`dml_core.data.boxes`).
    verify_images: "full" (default) | "header" | "none" (see :mod:`dml_core.data.verify`).
    force: redo even if the index exists. Without it, an existing index is kept (and asking for
    different options than it was made with is an error that says to pass force=True).
    with_standin: demo only: also build the demo's stand-in weights when missing
    (:mod:`dml_core.models.standin`), in a second process while the images are written.
    """
    check_dataset(dataset)
    root = Path(data_root if data_root is not None else paths.data_root())
    if dataset != "demo" and not root.is_dir():
        raise FileNotFoundError(
            f"the data root {root} does not exist (a typo in --data-root / $DML_DATA_ROOT?); "
            f"expected the raw {dataset!r} files in {root / dataset} (see docs/DATA.md)")
    with FileLock(dataset_dir(dataset, data_root) / LOCK_FILE, what=f"the data set {dataset!r} "
                  f"in {root}"):
        build = _start_standin(verbose) if with_standin and dataset == "demo" else None
        try:
            index = _prepare(dataset, data_root, force=force, box_convention=box_convention,
                             verify_images=verify_images, workers=workers, verbose=verbose)
        except BaseException:
            if build is not None:
                build.cancel()
            raise
        if build is not None:
            path = build.wait()
            if verbose:
                print(f"demo: stand-in weights {path}")
        return index


def _start_standin(verbose: bool):
    """The demo's stand-in build, started (None when its file exists); under the demo's lock."""
    from dml_core.models.standin import standin_files, start_standin_build

    if standin_files(paths.torch_checkpoint_dir()):
        return None
    return start_standin_build(say=print if verbose else (lambda *_: None))



def _prepare(dataset: str, data_root, *, force: bool, box_convention: str, verify_images: str,
             workers: Optional[int], verbose: bool) -> Path:
    if box_convention not in BOX_CONVENTIONS:
        raise ValueError(f"box_convention must be one of {list(BOX_CONVENTIONS)}, got {box_convention!r}")
    if verify_images not in VERIFY_MODES:
        raise ValueError(f"verify_images must be one of {list(VERIFY_MODES)}, got {verify_images!r}")
    say = print if verbose else (lambda *a, **k: None)
    folder = dataset_dir(dataset, data_root)
    index_file, report_file = folder / INDEX_FILE, folder / REPORT_FILE
    has_boxes = dataset in ("car", "cub", "demo")

    io.remove_temporaries(folder)  # what a killed preparation left (dml_core.core.io)
    removed = remove_stale_demo(folder) if dataset == "demo" else None
    if removed:
        say(f"demo: removed {removed} in {folder}; writing it anew")
        for stale in (index_file, report_file):
            stale.unlink(missing_ok=True)
    if index_file.is_file() and not force:
        try:
            read_index(index_file)
        except IndexIntegrityError as exc:
            say(f"{dataset}: {str(exc).split('; run `')[0]}; preparing it again")
            force = True
    if index_file.is_file() and not force:
        if has_boxes and report_file.is_file():
            made_with = io.read_json(report_file).get("options", {}).get("box_convention")
            if made_with not in (None, box_convention):
                raise ValueError(
                    f"{index_file} was prepared with box_convention={made_with!r}, not "
                    f"{box_convention!r}; pass force=True (CLI: --force) to prepare it again")
        say(f"{dataset}: already prepared ({index_file}); use force=True / --force to redo")
        return index_file
    if index_file.exists():
        index_file.unlink()  # force: no stale index may survive an interrupted re-run

    start = time.time()
    if dataset == "demo" and not demo_raw_exists(folder):
        say(f"demo: writing two-digit numbers of scikit-learn digits in the CUB layout to {folder}")
        write_demo_raw(folder)
    records = read_raw(dataset, folder, box_convention)
    if not records:
        raise ValueError(f"{dataset}: the annotation files in {folder} list no images")
    raw.refuse_unsafe_paths(dataset, folder, records)  # before any file is opened

    bad: list[dict] = []
    boxes_outside = 0
    if dataset != "stl10":
        files = [folder / r.path for r in records]
        missing = [r.path for r, f in zip(records, files) if not f.is_file()]
        if missing:
            listed = folder / MISSING_FILES_FILE
            io.write_text(listed, "\n".join(missing) + "\n")
            raise raw.MissingRawDataError(dataset, folder, missing, listed_in=listed)
        results = check_images(files, verify_images, workers=workers, progress=verbose)
        kept = []
        for r, (error, size) in zip(records, results):
            if error is not None:
                bad.append({"path": r.path, "error": error})
                continue
            if r.box is not None and size is not None and not box_inside(r.box, *size):
                boxes_outside += 1
            kept.append(r)
        records = kept
    assign_labels(records)
    summary = split_summary(records)
    diffs = size_differences(dataset, summary)
    for split, d in diffs.items():  # printed as one line, without a source line of this module
        warnings.warn_explicit(f"{dataset} {split}: {d['found']} images, the standard split has "
                               f"{d['expected']}", UserWarning, filename="dml_core.data",
                               lineno=0, module="dml_core.data")
    if bad:
        io.write_text(folder / BAD_IMAGES_FILE, "".join(f"{b['path']}\t{b['error']}\n" for b in bad))
        say(f"{dataset}: {len(bad)} unreadable image(s) EXCLUDED from the index, listed in "
            f"{folder / BAD_IMAGES_FILE}")
    elif (folder / BAD_IMAGES_FILE).exists():
        (folder / BAD_IMAGES_FILE).unlink()

    data = index_bytes(records)
    report = {
        "dataset": dataset,
        "folder": str(folder),
        "options": {"box_convention": box_convention if has_boxes else None,
                    "verify_images": verify_images if dataset != "stl10" else "binary-structure"},
        "splits": summary,
        "index": integrity_record(data, records),
        "expected_sizes": EXPECTED_SIZES.get(dataset, {}),
        "size_differences": diffs,
        "bad_images": {"count": len(bad), "excluded_from_index": True,
                       "file": BAD_IMAGES_FILE if bad else None, "items": bad[:1000]},
        "boxes_outside_image": boxes_outside if has_boxes else None,
        "originals_reencoded": False,
        "notes": ("index paths point at the original files (relative to the data-set folder); "
                  "nothing is re-encoded (the original repositories re-saved JPEGs at quality 75)."
                  + (" stl10 paths are '<file>.bin#<record>' (0-based record number)."
                     if dataset == "stl10" else "")),
        "seconds": round(time.time() - start, 2),
        "python": platform.python_version(),
    }
    io.write_json(report_file, report)
    write_index(index_file, records, data)  # last: the completeness marker
    parts = ", ".join(f"{s} {v['images']} images / {v['classes']} classes" for s, v in summary.items())
    say(f"{dataset}: prepared {index_file} ({parts})")
    return index_file


def main(argv: Optional[list[str]] = None) -> int:
    """CLI: ``python -m dml_core.data DATASET [DATASET ...] [--data-root DIR] [--force] ...``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dml_core.data",
                                     description="Prepare raw data sets into <data_root>/<ds>/index.csv.")
    parser.add_argument("datasets", nargs="+", choices=list(DATASETS),
                        metavar="DATASET", help="car, cub, sop, isc, stl10, demo")
    parser.add_argument("--data-root", default=None, help=f"default: $DML_DATA_ROOT or {paths.data_root()}")
    parser.add_argument("--force", action="store_true", help="prepare again even if index.csv exists")
    parser.add_argument("--box-convention", default="corrected", choices=list(BOX_CONVENTIONS))
    parser.add_argument("--verify-images", default="full", choices=list(VERIFY_MODES),
                        help="full (default): decode every image; header: structure only; none")
    parser.add_argument("--workers", type=int, default=None, help="threads for image checks")
    args = parser.parse_args(argv)
    failed = []
    for name in dict.fromkeys(args.datasets):  # every named set, even after a failure
        try:
            prepare(name, args.data_root, force=args.force, box_convention=args.box_convention,
                    verify_images=args.verify_images, workers=args.workers, with_standin=True)
            if name == "demo":  # the demo's stand-in for ImageNet weights, built once
                from dml_core.models.standin import ensure_standin

                print(f"demo: stand-in weights {ensure_standin(args.data_root)}")
        except (OSError, ValueError, RuntimeError) as exc:  # a clear message, no traceback
            print(f"error: {name}: {exc}", file=sys.stderr)
            failed.append(name)
    if failed and len(args.datasets) > 1:
        print(f"error: {len(failed)} of {len(dict.fromkeys(args.datasets))} data set(s) failed: "
              f"{', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
