"""``RetrievalDataset``: one split of a prepared data set (``<data_root>/<ds>/index.csv``)."""
from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .boxes import clip_box
from .index import read_index
from .layout import CROPPABLE, check_dataset
from .preparation import dataset_dir


class ImageLoadError(OSError):
    """An image cannot be read (missing, truncated, not an image, a decompression bomb, ...);
    the message names the file, the cause and the fix."""


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB (greyscale/palette/CMYK → RGB). ``<file>.bin#<k>`` reads STL-10
    record ``k`` from a binary file. EVERY failure — a missing or truncated file, a format PIL
    does not know, PIL's ``DecompressionBombError`` (more pixels than ``Image.MAX_IMAGE_PIXELS``
    × 2), any decoder error — raises :class:`ImageLoadError` naming the file and the cause."""
    path = str(path)
    try:
        if ".bin#" in path:
            from .stl10 import RECORD_BYTES, decode_records

            file, record = path.rsplit("#", 1)
            raw = np.fromfile(file, dtype=np.uint8, count=RECORD_BYTES,
                              offset=int(record) * RECORD_BYTES)
            return Image.fromarray(decode_records(raw)[0])
        with Image.open(path) as img:
            return img.convert("RGB")
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, DecompressionBombError, ...
        raise ImageLoadError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc


class RetrievalDataset(Dataset):
    """One split of a prepared data set.

    dataset: car | cub | sop | isc | stl10 | demo; split: train | test (| query | gallery for isc,
    | val for the demo).
    transform: applied to the RGB PIL image (default: ``ToTensor``, RGB in [0, 1]).
    crop: crop to the bounding box (clipped to the image) before the transform; car, cub, demo only.
    Attributes: ``labels`` (int64, (N,)), ``paths`` (absolute str), ``class_names`` (raw, per
    image), ``boxes`` (list of boxes or None), ``num_classes``.
    ``__getitem__(i) -> (transform(image), label)``.
    """

    def __init__(self, dataset: str, split: str, transform: Optional[Callable] = None,
                 crop: bool = False, data_root: Optional[str | os.PathLike] = None):
        check_dataset(dataset)
        folder = dataset_dir(dataset, data_root)
        index = folder / "index.csv"
        if not index.is_file():
            root_arg = f" --data-root {data_root}" if data_root is not None else ""
            raise FileNotFoundError(
                f"{dataset!r} is not prepared: {index} does not exist; run "
                f"`python -m dml_core.data {dataset}{root_arg}` (or dml_core.data.prepare) first")
        if crop and dataset not in CROPPABLE:
            raise ValueError(f"crop=True needs bounding boxes; only {list(CROPPABLE)} have them, not {dataset!r}")
        records = read_index(index)
        available = sorted({r.split for r in records})
        records = [r for r in records if r.split == split]
        if not records:
            raise ValueError(f"{dataset!r} has no split {split!r}; available: {available}")
        if crop and any(r.box is None for r in records):
            raise ValueError(f"{index} has no boxes for split {split!r}; prepare it again with --force")
        if transform is None:
            from torchvision.transforms import ToTensor

            transform = ToTensor()
        self.dataset, self.split, self.crop, self.transform = dataset, split, crop, transform
        self._root_arg = f" --data-root {data_root}" if data_root is not None else ""
        self.paths = [str(folder / r.path) for r in records]
        self.labels = np.array([r.label for r in records], dtype=np.int64)
        self.class_names = [r.class_name for r in records]
        self.boxes = [r.box for r in records]
        self.num_classes = int(len(np.unique(self.labels)))

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, i: int) -> Image.Image:
        """The RGB PIL image ``i``, cropped to its box when ``crop=True`` (for pictures too).
        A file that cannot be read raises :class:`ImageLoadError` naming it and the fix."""
        try:
            img = load_image(self.paths[i])
        except ImageLoadError as exc:
            raise ImageLoadError(
                f"{exc}; it is listed in the prepared {self.dataset!r} index ({self.split}): "
                "check every image and exclude the bad ones with `python -m dml_core.data "
                f"{self.dataset}{self._root_arg} --force --verify-images full`") from exc.__cause__
        if self.crop:
            img = img.crop(clip_box(self.boxes[i], *img.size))
        return img

    def __getitem__(self, i: int):
        return self.transform(self.load_image(i)), int(self.labels[i])

    def __repr__(self) -> str:
        return (f"RetrievalDataset({self.dataset!r}, {self.split!r}, crop={self.crop}, "
                f"images={len(self)}, classes={self.num_classes})")
