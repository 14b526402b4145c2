"""Names, raw layouts and standard split sizes of the data sets (the facts, no logic).

Raw data of data set ``ds`` lives in ``<data_root>/<ds>/`` exactly as the original archives unpack
(see ``docs/DATA.md``); the prepared index is ``<data_root>/<ds>/index.csv``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from dml_core.core import paths

DATASETS = ("car", "cub", "sop", "isc", "stl10", "demo")
CROPPABLE = ("car", "cub", "demo")  # data sets with bounding boxes
BOX_CONVENTIONS = ("corrected", "original")
VERIFY_MODES = ("header", "full", "none")

INDEX_FILE = "index.csv"
LOCK_FILE = ".prepare.lock"  # one preparation of a data-set folder at a time
REPORT_FILE = "prepare_report.json"
BAD_IMAGES_FILE = "bad_images.txt"
MISSING_FILES_FILE = "missing_files.txt"
INDEX_COLUMNS = ("path", "class_name", "label", "split", "x1", "y1", "x2", "y2")

# Standard split sizes (images) from the specs; differences are warned about, never an error.
EXPECTED_SIZES: dict[str, dict[str, int]] = {
    "car": {"train": 8054, "test": 8131},
    "cub": {"train": 5864, "test": 5924},
    "sop": {"train": 59551, "test": 60502},
    "isc": {"train": 25882, "query": 14218, "gallery": 12612},
    # STL-10 toy split: fold 0 of train restricted to classes 0-6 depends on fold_indices.txt,
    # so only the test part (3 classes x first 60) is fixed.
    "stl10": {"test": 180},
    # two-digit numbers (dml_core.data.demo): 50 classes x 30 images per split.
    "demo": {"train": 1500, "val": 1500, "test": 1500},
}

EXPECTED_LAYOUT: dict[str, str] = {
    "car": """\
<data_root>/car/
    cars_annos.mat          # struct array 'annotations': relative_im_path, bbox_x1, bbox_y1,
                            #   bbox_x2, bbox_y2, class, test
    car_ims/000001.jpg ... 016185.jpg""",
    "cub": """\
<data_root>/cub/            # the CUB_200_2011/ folder of CUB_200_2011.tgz
    images.txt              # '<id> <relative path>'
    image_class_labels.txt  # '<id> <class 1..200>'
    bounding_boxes.txt      # '<id> <x> <y> <w> <h>' (floats)
    images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg ...""",
    "sop": """\
<data_root>/sop/            # the Stanford_Online_Products/ folder
    Ebay_train.txt          # header line, then 'image_id class_id super_class_id path'
    Ebay_test.txt
    bicycle_final/111085122871_0.JPG ...""",
    "isc": """\
<data_root>/isc/            # In-shop Clothes Retrieval Benchmark
    Eval/list_eval_partition.txt   # line 1: count, line 2: header, then
                                   #   'image_name item_id evaluation_status'
    Img/img/WOMEN/Dresses/id_00000002/02_1_front.jpg ...   # from img.zip""",
    "stl10": """\
<data_root>/stl10/          # stl10_binary.tar.gz unpacked
    stl10_binary/train_X.bin  train_y.bin  test_X.bin  test_y.bin  fold_indices.txt""",
    "demo": """\
<data_root>/demo/           # written by dml_core.data.demo.write_demo_raw (CUB layout)
    images.txt  image_class_labels.txt  bounding_boxes.txt  images/<NNN.number_XY>/<file>.png
    validation_images.txt   # '<id>': validation images of training classes (split 'val')""",
}


def check_dataset(name: str) -> str:
    """Return ``name`` if it is a known data set, else raise a ValueError listing the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {list(DATASETS)}")
    return name


def dataset_dir(dataset: str, data_root: Optional[str | os.PathLike] = None) -> Path:
    """``<data_root>/<dataset>`` (default data root: :func:`dml_core.core.paths.data_root`)."""
    return Path(data_root if data_root is not None else paths.data_root()) / check_dataset(dataset)
