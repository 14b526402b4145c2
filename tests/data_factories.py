"""Tiny raw data sets in every real on-disk format, for the data-layer tests.

Each ``make_<ds>_raw(folder, ...)`` writes ``folder`` (normally ``<data_root>/<ds>``) in the exact
layout of the real download and returns a description of what it wrote.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size=(40, 30), color=(200, 100, 50), mode="RGB", fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 128).save(path, format=fmt)


def make_car_raw(folder: Path, classes=(1, 2, 98, 99, 100, 196), per_class=2, size=(40, 30)) -> list[dict]:
    """``cars_annos.mat`` (struct array ``annotations`` with the real field names) + ``car_ims/``."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    names = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    rows = []
    for cls in classes:
        for j in range(per_class):
            i = len(rows) + 1
            rows.append({"relative_im_path": f"car_ims/{i:06d}.jpg", "bbox_x1": 3 + j, "bbox_y1": 5,
                         "bbox_x2": 20 + j, "bbox_y2": 25, "class": cls, "test": i % 2})
    arr = np.zeros((1, len(rows)), dtype=[(n, object) for n in names])
    for k, row in enumerate(rows):
        for n in names:
            arr[0, k][n] = np.array(row[n]) if n == "relative_im_path" else np.array([[row[n]]], dtype=np.uint16)
        write_image(folder / row["relative_im_path"], size)
    scipy.io.savemat(folder / "cars_annos.mat", {"annotations": arr})
    return rows


def make_cub_raw(folder: Path, classes=(1, 2, 100, 101, 150, 200), per_class=2, size=(40, 30)) -> list[dict]:
    """``images.txt``, ``image_class_labels.txt``, ``bounding_boxes.txt`` (floats), ``images/``."""
    rows = []
    for cls in classes:
        for j in range(per_class):
            i = len(rows) + 1
            rows.append({"id": i, "path": f"{cls:03d}.Bird_{cls}/Bird_{cls}_{i:04d}.jpg", "class": cls,
                         "box": (2.0 + j, 4.5, 10.0, 12.25)})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images.txt").write_text("".join(f"{r['id']} {r['path']}\n" for r in rows))
    (folder / "image_class_labels.txt").write_text("".join(f"{r['id']} {r['class']}\n" for r in rows))
    (folder / "bounding_boxes.txt").write_text(
        "".join(f"{r['id']} " + " ".join(str(v) for v in r["box"]) + "\n" for r in rows))
    for r in rows:
        write_image(folder / "images" / r["path"], size)
    return rows


def make_sop_raw(folder: Path, train_classes=(1, 2, 3), test_classes=(11319, 11320), per_class=2) -> dict:
    """``Ebay_train.txt`` / ``Ebay_test.txt`` with their header line, images under ``<super>_final/``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    i = 0
    for split, classes in (("train", train_classes), ("test", test_classes)):
        lines = ["image_id class_id super_class_id path"]
        for cls in classes:
            for j in range(per_class):
                i += 1
                rel = f"bicycle_final/{cls}_{j}.JPG"
                lines.append(f"{i} {cls} 1 {rel}")
                write_image(folder / rel, fmt="JPEG")
        (folder / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
        written[split] = len(lines) - 1
    return written


def make_isc_raw(folder: Path) -> list[tuple[str, str, str]]:
    """``Eval/list_eval_partition.txt`` (count line + header line) and ``Img/img/...`` images.

    Query and gallery hold DIFFERENT id sets here (ids 10 and 12 only in the gallery), which is
    what breaks the seeds' separate per-split maps."""
    rows = []
    for item, status, n in [("id_00000001", "train", 2), ("id_00000003", "train", 1),
                            ("id_00000010", "gallery", 1), ("id_00000011", "query", 2),
                            ("id_00000011", "gallery", 1), ("id_00000012", "gallery", 1),
                            ("id_00000013", "query", 1), ("id_00000013", "gallery", 2)]:
        for j in range(n):
            rows.append((f"img/WOMEN/Dresses/{item}/{status}_{j:02d}_1_front.jpg", item, status))
    lines = [str(len(rows)), "image_name item_id evaluation_status"]
    lines += [f"{p}      {i}       {s}" for p, i, s in rows]
    (folder / "Eval").mkdir(parents=True, exist_ok=True)
    (folder / "Eval/list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    for p, _, _ in rows:
        write_image(folder / "Img" / p, fmt="JPEG")
    return rows


def make_stl10_raw(folder: Path, train_per_class=4, test_per_class=62) -> dict:
    """``stl10_binary/{train,test}_{X,y}.bin`` (column-major 3x96x96 uint8, labels 1..10) and
    ``fold_indices.txt``. Returns the (H, W, 3) images and 0-based labels it wrote."""
    out = folder / "stl10_binary"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {}
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        labels = np.tile(np.arange(10), per)  # interleaved classes, file order matters
        images = rng.integers(0, 256, size=(len(labels), 96, 96, 3), dtype=np.uint8)
        images.transpose(0, 3, 2, 1).astype(np.uint8).tofile(out / f"{split}_X.bin")  # (C, W, H)
        (labels + 1).astype(np.uint8).tofile(out / f"{split}_y.bin")
        data[split] = (images, labels)
    n = len(data["train"][1])
    folds = [" ".join(str(k) for k in range(f, n, 2)) for f in range(2)] + ["0"] * 8  # fold 0: even
    (out / "fold_indices.txt").write_text("\n".join(folds) + "\n")
    return data
