"""Readers of the raw annotation files, one per data set, exactly as the specs describe them.

Each reader returns :class:`~dml_core.data.index.Record` s (labels not yet assigned) with paths
relative to the data-set folder. Missing annotation files raise ONE :class:`MissingRawDataError`
that lists them all and shows the expected layout; a path that is absolute or leaves the folder
is refused (:func:`refuse_unsafe_paths`). Nothing here opens an image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .boxes import mat_box, xywh_box
from .index import Record, unsafe_path
from .layout import EXPECTED_LAYOUT


class MissingRawDataError(FileNotFoundError):
    """Raw files are missing; the message lists every one and shows the expected layout."""

    def __init__(self, dataset: str, folder: Path, missing: list[str], listed_in: Path | None = None):
        self.dataset, self.folder, self.missing = dataset, Path(folder), list(missing)
        self.hint = layout_hint(dataset, self.folder)
        shown = "\n".join(f"  - {m}" for m in self.missing[:50])
        more = f"\n  ... and {len(self.missing) - 50} more" if len(self.missing) > 50 else ""
        where = f"\nThe full list is in {listed_in}." if listed_in else ""
        super().__init__(
            f"raw data of {dataset!r} is incomplete in {folder}: {len(self.missing)} missing "
            f"file(s):\n{shown}{more}{where}\n"
            + (f"Hint: {self.hint}\n" if self.hint else "")
            + f"Expected layout:\n{EXPECTED_LAYOUT.get(dataset, '')}\n"
            "See docs/DATA.md for how to obtain it."
        )


def layout_hint(dataset: str, folder: Path) -> str | None:
    """A sentence about a common mis-layout found in ``folder`` (a nested archive folder, the
    Cars devkit layout, a folder that does not exist), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} does not exist; unpack the raw files there (or pass --data-root)"
    nested = {"cub": "CUB_200_2011", "sop": "Stanford_Online_Products"}.get(dataset)
    if nested and (folder / nested).is_dir():
        inner = folder / nested
        return (f"found a nested {inner.name}/ folder: move its contents up into {folder} "
                f"(or use {inner} as the {dataset} folder)")
    if dataset == "car":
        devkit = [n for n in ("devkit", "cars_train", "cars_test", "cars_meta.mat")
                  if (folder / n).exists()]
        if devkit and not (folder / "cars_annos.mat").exists():
            return (f"found the Cars devkit layout ({', '.join(devkit)}); this project reads "
                    "cars_annos.mat and car_ims/ (car_ims.tgz + cars_annos.mat of the same "
                    "release), see docs/DATA.md")
    if dataset == "isc" and (folder / "img").is_dir() and not (folder / "Img").is_dir():
        return "found img/ at the top: it belongs inside Img/ (Img/img/...)"
    return None


#: The annotation files whose image paths a reader returns (for messages).
ANNOTATION_FILES = {"car": "cars_annos.mat", "cub": "images.txt", "demo": "images.txt",
                    "sop": "Ebay_train.txt / Ebay_test.txt", "isc": "Eval/list_eval_partition.txt",
                    "stl10": "stl10_binary/"}


def refuse_unsafe_paths(dataset: str, folder: Path, records: Iterable[Record]) -> None:
    """Raise ONE ValueError listing every image path read from the annotations that is absolute
    or leaves the data-set folder (:func:`~dml_core.data.index.unsafe_path`): preparation reads
    only files inside ``<data_root>/<ds>/``."""
    bad = [r.path for r in records if unsafe_path(r.path)]
    if bad:
        shown = ", ".join(repr(b) for b in bad[:10]) + (f" and {len(bad) - 10} more"
                                                        if len(bad) > 10 else "")
        raise ValueError(
            f"raw data of {dataset!r}: {len(bad)} image path(s) in "
            f"{Path(folder) / ANNOTATION_FILES.get(dataset, '')} are absolute or leave the "
            f"folder {folder} ({shown}); every image must lie inside it, under a relative path. "
            "Fix the annotation file (or copy the images into the folder) and prepare again")


def require_files(dataset: str, folder: Path, relpaths: Iterable[str]) -> None:
    """Raise one MissingRawDataError naming every file of ``relpaths`` absent from ``folder``."""
    missing = [p for p in relpaths if not (folder / p).is_file()]
    if missing:
        raise MissingRawDataError(dataset, folder, missing)


def _split_lines(path: Path, skip: int) -> list[list[str]]:
    lines = path.read_text().splitlines()[skip:]
    return [line.split() for line in lines if line.strip()]


def _expect_columns(path: Path, rows: list[list[str]], n: int, what: str) -> None:
    for lineno, row in enumerate(rows, 1):
        if len(row) < n:
            raise ValueError(f"{path}: data line {lineno} has {len(row)} columns, expected {n} ({what})")


def read_car(folder: Path, box_convention: str = "corrected") -> list[Record]:
    """CARS196 from ``cars_annos.mat``: ``annotations[0]`` records read BY POSITION (0 path,
    1-4 bbox x1,y1,x2,y2, 5 class 1..196; 6 ``test`` is ignored). Classes 1-98 → train,
    99-196 → test, as the original code does (the official train/test flag is not used)."""
    import scipy.io

    folder = Path(folder)
    require_files("car", folder, ["cars_annos.mat"])
    mat = scipy.io.loadmat(folder / "cars_annos.mat")
    if "annotations" not in mat:
        raise ValueError(f"{folder / 'cars_annos.mat'} has no 'annotations' array; keys: {sorted(mat)}")
    records = []
    for rec in mat["annotations"][0]:
        if len(rec) < 6:
            raise ValueError(f"cars_annos.mat record has {len(rec)} fields, expected >= 6 "
                             "(relative_im_path, bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, test)")
        path = str(rec[0].ravel()[0]).strip()
        x1, y1, x2, y2, cls = (int(rec[i].ravel()[0]) for i in range(1, 6))
        split = "train" if cls <= 98 else "test"
        records.append(Record(path, str(cls), split, mat_box(x1, y1, x2, y2, box_convention)))
    return records


def read_cub(folder: Path, box_convention: str = "corrected", num_train_classes: int = 100,
             dataset: str = "cub", validation_file: str | None = None) -> list[Record]:
    """CUB-200-2011 (and the demo, which uses the same layout): ``images.txt`` (id path),
    ``image_class_labels.txt`` (id label), ``bounding_boxes.txt`` (id x y w h floats), images in
    ``images/``. Labels ``<= num_train_classes`` → train (100 for CUB, 50 for the demo), rest →
    test. ``validation_file`` (the demo's ``validation_images.txt``, one image id per line): those
    images of training classes form the split ``val``."""
    folder = Path(folder)
    names = ["images.txt", "image_class_labels.txt", "bounding_boxes.txt"]
    require_files(dataset, folder, names + ([validation_file] if validation_file else []))
    val_ids = ({row[0] for row in _split_lines(folder / validation_file, 0)} if validation_file
               else set())
    images, labels, boxes = (_split_lines(folder / n, 0) for n in names)
    for n, rows, k in zip(names, (images, labels, boxes), (2, 2, 5)):
        _expect_columns(folder / n, rows, k, "see docs/DATA.md")
    label_of = {row[0]: row[1] for row in labels}
    box_of = {row[0]: row[1:5] for row in boxes}
    lacking = [row[0] for row in images if row[0] not in label_of or row[0] not in box_of]
    if lacking:
        raise ValueError(f"{folder}: image ids {lacking[:10]} (of {len(lacking)}) have no class label "
                         "or bounding box in image_class_labels.txt / bounding_boxes.txt")
    records = []
    for image_id, relpath in ((row[0], row[1]) for row in images):
        cls = label_of[image_id]
        split = "train" if int(cls) <= num_train_classes else "test"
        if image_id in val_ids:
            if split != "train":
                raise ValueError(f"{folder / validation_file}: image {image_id} is of class {cls}, "
                                 f"not a training class (1-{num_train_classes}); validation "
                                 "images must belong to training classes")
            split = "val"
        box = xywh_box(*box_of[image_id], box_convention=box_convention)
        records.append(Record(f"images/{relpath}", cls, split, box))
    return records


def read_sop(folder: Path) -> list[Record]:
    """Stanford Online Products: ``Ebay_train.txt`` / ``Ebay_test.txt``, header skipped, columns
    ``image_id class_id super_class_id path``; label = ``class_id``; the official split."""
    folder = Path(folder)
    require_files("sop", folder, ["Ebay_train.txt", "Ebay_test.txt"])
    records = []
    for split in ("train", "test"):
        path = folder / f"Ebay_{split}.txt"
        rows = _split_lines(path, 1)
        _expect_columns(path, rows, 4, "image_id class_id super_class_id path")
        records += [Record(row[3], row[1], split) for row in rows]
    return records


def read_isc(folder: Path) -> list[Record]:
    """In-shop Clothes: ``Eval/list_eval_partition.txt``, first TWO lines skipped (count, header),
    columns ``image_name item_id evaluation_status``; images in ``Img/<image_name>`` (low-res
    ``img/``). Splits train / query / gallery; label = item id (one shared map over query ∪
    gallery, see :func:`~dml_core.data.index.assign_labels`)."""
    folder = Path(folder)
    rel = "Eval/list_eval_partition.txt"
    require_files("isc", folder, [rel])
    rows = _split_lines(folder / rel, 2)
    _expect_columns(folder / rel, rows, 3, "image_name item_id evaluation_status")
    bad = sorted({row[2] for row in rows} - {"train", "query", "gallery"})
    if bad:
        raise ValueError(f"{folder / rel}: unknown evaluation_status {bad}; expected train/query/gallery")
    return [Record(f"Img/{row[0]}", row[1], row[2]) for row in rows]
