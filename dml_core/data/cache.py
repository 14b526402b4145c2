"""The cached input pipeline: decode once, keep uint8, do only the random part per epoch.

Every transform style of :mod:`dml_core.data.transforms` starts with a deterministic prefix
(decode, RGB, the BN-Inception BGR swap, the bounding-box crop, the fixed resize). The cache runs
that prefix ONCE per image and stores the result as uint8 ``(H, W, 3)`` arrays, concatenated in
one memory-mapped file, with an index:

    <data_root>/<ds>/cache/<split>-<key>/images.u8   all arrays, back to back
                                        index.npy   (N, 3) int64: byte offset, H, W
                                        meta.json   written last: the build is complete

``key`` hashes the prepared data (``index.csv`` fingerprint), the split, the box crop and the
prefix, so a re-prepared data set or another recipe never reads a stale cache. Workers then do
only the random part (crop, flip) on uint8 tensors, with the same torchvision calls and hence the
same random draws as the PIL path; a batch travels to the device as uint8 (4× fewer bytes) and
:class:`DeviceNormalize` converts it to float and normalises it there (the engine applies the
dataset's ``device_transform`` to each batch: :func:`dml_core.training.engine.device_transform`).

What is cached per style (``r`` resize_size, ``c`` crop_size):

======================  ==========================  ==================================  ==========
style                   train prefix (cached)       random part (workers, on uint8)     identical
======================  ==========================  ==================================  ==========
squash_random_crop/cgd  Resize((r, r))              RandomCrop(c) → HFlip (tensor)      bit-exact
random_resized_crop     nothing: native resolution  RandomResizedCrop(c) → HFlip (PIL   bit-exact
                        (``cap``: shorter side ≤    on the cached pixels, no decoding)  (not with
                        cap, optional)                                                  a cap)
toy                     nothing (native)            HFlip                               bit-exact
every style, test       the whole pipeline          nothing                             bit-exact
======================  ==========================  ==================================  ==========

"bit-exact": for the same torch random state the tensors equal the PIL pipeline's
(``tests/test_data_cache.py``). Disk: one uint8 array per image, ``H × W × 3`` bytes
(:func:`cache_bytes`; ``meta.json`` records the real total). Test splits at 224 px: 150 KB per
image (SOP test, 60,502 images: 9.1 GB; CUB test 0.9 GB; Cars test 1.2 GB). Squash/cgd train
splits: r² × 3 (r = 256: 197 KB; SOP train 11.7 GB). RandomResizedCrop train splits at native
resolution: CUB ~500 × 375 → 563 KB per image, 3.3 GB for its 5,864 train images; Cars ~700 ×
470 → ~1 MB, ~8 GB; SOP train (59,551 images, mostly ≤ 640 px a side) tens of GB — there a cap
(``cap=256``: ~262 KB per 4:3 image, SOP train ~15.6 GB) trades exactness for disk. The default
is the native resolution (no cap): a cached run then reproduces the uncached one exactly, which
is what lets the cache be switched on without changing a single number; the cap's effect on
accuracy is not measured.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from dml_core.core.io import DiskFullError, atomic_path, remove_temporaries, write_json
from dml_core.models.conventions import input_convention

from .transforms import STYLES, SwapRGBtoBGR, ToRGB

CACHE_VERSION = 1
__all__ = ["CACHE_VERSION", "ImageCache", "CachedDataset", "DeviceNormalize", "prefix_steps",
           "random_steps", "cached_split", "cache_bytes", "sweep_caches",
           "estimate_cache_bytes"]


class CapShorterSide:
    """Downscale (never upscale) so that the shorter side is at most ``size`` (PIL, bilinear)."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        s = min(w, h)
        if self.size <= 0 or s <= self.size:
            return img
        return T.functional.resize(img, self.size)

    def __repr__(self) -> str:
        return f"CapShorterSide({self.size})"


def prefix_steps(style: str, train: bool, crop_size: int, resize_size: int, backbone: str,
                 cap: int | None = None) -> list:
    """The deterministic PIL steps cached for (style, train); see the module table."""
    if style not in STYLES:
        raise ValueError(f"unknown transform style {style!r}; expected one of {list(STYLES)}")
    r, c = resize_size, crop_size
    steps: list = [ToRGB()]
    if input_convention(backbone).bgr:
        steps.append(SwapRGBtoBGR())
    if style in ("squash_random_crop", "cgd"):
        if train:
            steps.append(T.Resize((r, r)))
        elif style == "cgd":
            steps.append(T.Resize((c, c)))
        else:
            steps += [T.Resize((r, r)), T.CenterCrop(c)]
    elif style == "random_resized_crop":
        if train:
            if cap:
                steps.append(CapShorterSide(cap))
        else:
            steps += [T.Resize(r), T.CenterCrop(c)]
    return steps


def random_steps(style: str, train: bool, crop_size: int, hflip: bool = True,
                 rrc_scale: tuple[float, float] = (0.08, 1.0)) -> list:
    """The random steps applied by the workers to a uint8 ``(3, H, W)`` tensor."""
    if not train:
        return []
    steps: list = []
    if style in ("squash_random_crop", "cgd"):
        steps.append(T.RandomCrop(crop_size))
    elif style == "random_resized_crop":  # PIL's resize, as the PIL path, on the cached uint8
        steps += [ArrayToPIL(), T.RandomResizedCrop(crop_size, scale=tuple(rrc_scale))]
        if hflip:
            steps.append(T.RandomHorizontalFlip())
        return steps + [PILToUint8()]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return steps


class ArrayToPIL:
    """uint8 ``(3, H, W)`` tensor → PIL image (no decoding: a copy of the pixels)."""

    def __call__(self, x: torch.Tensor) -> Image.Image:
        return Image.fromarray(x.permute(1, 2, 0).numpy())

    def __repr__(self) -> str:
        return "ArrayToPIL()"


class PILToUint8:
    """PIL RGB image → uint8 ``(3, H, W)`` tensor."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return "PILToUint8()"


class DeviceNormalize(torch.nn.Module):
    """uint8 ``(B, 3, H, W)`` (or ``(3, H, W)``) → float32 normalised, the same operations as
    ToTensor → [Scale(255)] → Normalize: ``x / 255`` [× 255], ``(x - mean) / std``."""

    def __init__(self, backbone: str):
        super().__init__()
        conv = input_convention(backbone)
        self.scale_255 = bool(conv.scale_255)
        self.register_buffer("mean", torch.tensor(conv.mean, dtype=torch.float32).view(3, 1, 1), False)
        self.register_buffer("std", torch.tensor(conv.std, dtype=torch.float32).view(3, 1, 1), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x
        y = x.to(torch.float32).div(255)
        if self.scale_255:
            y = y * 255.0
        mean, std = self.mean.to(y.device), self.std.to(y.device)
        return y.sub(mean).div(std)


class ImageCache:
    """The memory-mapped uint8 arrays of one split (``cache[i]`` → ``(H, W, 3)`` view)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta = self.folder / "meta.json"
        if not meta.is_file():
            raise FileNotFoundError(f"{self.folder} holds no complete image cache (no meta.json); "
                                    "build it with ImageCache.build")
        self.meta = json.loads(meta.read_text())
        self.index = np.load(self.folder / "index.npy")
        self._data: np.memmap | None = None

    @property
    def data(self) -> np.memmap:
        if self._data is None:  # opened lazily: each worker process maps the file itself
            self._data = np.memmap(self.folder / "images.u8", dtype=np.uint8, mode="r")
        return self._data

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        off, h, w = (int(v) for v in self.index[i])
        return self.data[off:off + h * w * 3].reshape(h, w, 3)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_data"] = None
        return state

    @classmethod
    def build(cls, folder: str | os.PathLike, n: int, load: Callable[[int], Image.Image],
              prefix: Callable[[Image.Image], Image.Image], key: dict,
              workers: int | None = None) -> "ImageCache":
        """Run ``prefix(load(i))`` for i < n (threads: PIL releases the GIL) and write the cache;
        an existing complete cache with the same ``key`` is reused. Every file is written
        atomically (:func:`dml_core.core.io.atomic_path`): a failure leaves no partial file, what
        a killed build left is removed by the next one, and a full disk is ONE
        :class:`~dml_core.core.io.DiskFullError` with the space the whole cache needs."""
        from dml_core.core.locks import FileLock

        folder = Path(folder)
        meta = folder / "meta.json"
        if _complete(folder, key):
            return cls(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # one builder at a time (two notebooks of a batch may need the same cache); the others
        # wait, then find it complete
        with FileLock(folder / LOCK_FILE, what=f"the image cache {folder}"):
            if _complete(folder, key):
                return cls(folder)
            meta.unlink(missing_ok=True)
            remove_temporaries(folder, ("*.tmp",))  # a killed build's (and older versions')
            return cls._build(folder, n, load, prefix, key, workers)

    @classmethod
    def _build(cls, folder: Path, n: int, load, prefix, key: dict, workers: int | None) -> "ImageCache":
        if not workers:
            from .loaders import available_cpus

            workers = available_cpus()
        index = np.zeros((n, 3), dtype=np.int64)
        offset, done = 0, 0

        def one(i: int) -> np.ndarray:
            arr = np.asarray(prefix(load(i)), dtype=np.uint8)
            return arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)

        data = folder / "images.u8"
        pool = cf.ThreadPoolExecutor(workers)
        try:
            with atomic_path(data) as tmp, open(tmp, "wb") as f:
                for i, arr in enumerate(pool.map(one, range(n), chunksize=16) if workers > 1
                                        else map(one, range(n))):
                    h, w = arr.shape[:2]
                    index[i] = (offset, h, w)
                    f.write(np.ascontiguousarray(arr).tobytes())
                    offset += h * w * 3
                    done = i + 1
        except DiskFullError as exc:  # say what the whole cache needs, not the part written
            need = offset * n // max(done, 1)
            raise DiskFullError(data, max(need, offset), exc.free, exc.written) from exc
        finally:  # on an error, the images not decoded yet are not decoded at all
            pool.shutdown(wait=True, cancel_futures=True)
        with atomic_path(folder / "index.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, index)
        write_json(folder / "meta.json", {"key": key, "images": n, "bytes": offset,
                                          "version": CACHE_VERSION})  # last: complete
        return cls(folder)


def _complete(folder: Path, key: dict) -> bool:
    """True when ``folder`` holds a complete cache (``meta.json``) made for ``key``."""
    try:
        return json.loads((folder / "meta.json").read_text()).get("key") == key
    except (OSError, ValueError, AttributeError):
        return False


#: The lock file of a cache folder (held while it is built).
LOCK_FILE = ".lock"


def sweep_caches(cache_root: str | os.PathLike, keep: Path | None = None) -> list[Path]:
    """Remove the leftovers under ``<data_root>/<ds>/cache/``: every cache folder that nobody
    is building (its lock is free) and that holds no complete cache (no ``meta.json``: a build
    that failed or was killed) is deleted, and the temporary files of the others. ``keep``: a
    folder to leave alone. Returns what was removed."""
    import shutil

    from dml_core.core.locks import FileLock, LockError

    removed: list[Path] = []
    root = Path(cache_root)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if keep is not None and folder.resolve() == Path(keep).resolve():
            continue
        try:
            with FileLock(folder / LOCK_FILE, what=f"the image cache {folder}", timeout=0):
                if (folder / "meta.json").is_file():
                    removed += remove_temporaries(folder, ("*.tmp",))
                else:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
        except LockError:  # being built by another process, or no locks here: leave it
            continue
    return removed


class CachedDataset(Dataset):
    """A split served from an :class:`ImageCache`: ``(tensor, label)`` where the tensor is uint8
    ``(3, H, W)`` when ``device_normalize`` (then ``device_transform`` converts the batch on the
    device), else float32 normalised on the CPU. Carries the source dataset's ``labels``,
    ``paths``, ``class_names``, ``boxes``, ``num_classes``, ``dataset``, ``split``, ``crop``."""

    def __init__(self, cache: ImageCache, labels, random: Sequence, backbone: str,
                 device_normalize: bool = True, source=None):
        self.cache = cache
        self.labels = np.asarray(labels, dtype=np.int64)
        self.random = T.Compose(list(random)) if random else None
        self.normalize = DeviceNormalize(backbone)
        self.device_transform = self.normalize if device_normalize else None
        for attr in ("paths", "class_names", "boxes", "num_classes", "dataset", "split", "crop"):
            if source is not None and hasattr(source, attr):
                setattr(self, attr, getattr(source, attr))
        if not hasattr(self, "num_classes"):
            self.num_classes = int(len(np.unique(self.labels)))

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.cache[i])).permute(2, 0, 1).contiguous()
        if self.random is not None:
            x = self.random(x)
        if self.device_transform is None:
            x = self.normalize(x)
        return x, int(self.labels[i])


def cache_key(index_fp: str, split: str, crop: bool, prefix: list) -> dict:
    return {"version": CACHE_VERSION, "index": index_fp, "split": split, "crop": bool(crop),
            "prefix": [repr(s) for s in prefix]}


def cache_folder(dataset_dir: Path, split: str, key: dict) -> Path:
    """``<data_root>/<ds>/cache/<split>-<16 hex digits of the key's hash>``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(dataset_dir) / "cache" / f"{split}-{digest}"


def cached_split(recipe: dict, split: str, train: bool, data_root=None, *, cap: int | None = None,
                 device_normalize: bool | None = None, workers: int | None = None) -> CachedDataset:
    """``split`` of ``recipe["dataset"]`` through the cache (built on first use).

    The training split yields uint8 batches normalised on the device; evaluation splits are
    normalised on the CPU (float32, like the PIL path) unless ``device_normalize`` says otherwise.
    """
    from .datasets import RetrievalDataset
    from .index import index_fingerprint
    from .preparation import dataset_dir, index_path

    src = RetrievalDataset(recipe["dataset"], split, crop=bool(recipe["crop"]), data_root=data_root)
    style, c, r, bb = recipe["transform"], int(recipe["crop_size"]), int(recipe["resize_size"]), recipe["backbone"]
    prefix = prefix_steps(style, train, c, r, bb, cap)
    key = cache_key(index_fingerprint(index_path(recipe["dataset"], data_root)), split, src.crop, prefix)
    folder = cache_folder(dataset_dir(recipe["dataset"], data_root), split, key)
    if not _complete(folder, key):  # about to build: first clear what failed builds left
        sweep_caches(folder.parent, keep=folder)
    cache = ImageCache.build(folder, len(src), src.load_image, T.Compose(prefix), key, workers)
    rnd = random_steps(style, train, c, recipe.get("hflip", True), tuple(recipe.get("rrc_scale", (0.08, 1.0))))
    return CachedDataset(cache, src.labels, rnd, bb, train if device_normalize is None else device_normalize,
                         source=src)


def cache_bytes(sizes: Sequence[tuple[int, int]], style: str, train: bool, crop_size: int = 224,
                resize_size: int = 256, cap: int | None = None) -> int:
    """Bytes the cache of images of ``sizes`` ((W, H) each) takes for (style, train)."""
    total = 0
    for w, h in sizes:
        if not train or style == "toy":
            ww, hh = (crop_size, crop_size) if style != "toy" else (w, h)
            if not train and style == "cgd":
                ww = hh = crop_size
        elif style in ("squash_random_crop", "cgd"):
            ww = hh = resize_size
        else:
            limit = cap or 0
            s = min(w, h)
            f = 1.0 if limit <= 0 or s <= limit else limit / s
            ww, hh = (round(w * f), round(h * f)) if f < 1 else (w, h)
        total += ww * hh * 3
    return total


#: Typical image size (W, H) per data set (see the module docstring), for estimates made before
#: a data set is prepared.
TYPICAL_SIZE = {"cub": (500, 375), "car": (700, 470), "sop": (400, 400), "isc": (256, 256),
                "demo": (48, 48), "stl10": (96, 96)}


def _image_size(folder: Path, record, crop: bool, dataset: str) -> tuple[int, int]:
    """(W, H) of a record's image as the cache's prefix sees it: its box when cropping, else
    the file's header; the data set's typical size when the header cannot be read."""
    if crop and record.box is not None:
        x1, y1, x2, y2 = record.box
        return max(1, x2 - x1), max(1, y2 - y1)
    try:
        if ".bin#" in record.path:
            return TYPICAL_SIZE["stl10"]
        with Image.open(folder / record.path) as img:
            return img.size
    except Exception:  # noqa: BLE001 - an estimate: a typical size stands in
        return TYPICAL_SIZE.get(dataset, (500, 375))


def estimate_cache_bytes(recipe: dict, data_root=None, sample: int = 64) -> int:
    """Bytes that training ``recipe`` with ``cache: true`` adds under ``<data_root>/<ds>/cache/``
    (0 without it): every split it caches (train; train again for validation; test, or query and
    gallery) whose cache is not complete yet, at :func:`cache_bytes` of the image sizes read from
    the headers of ``sample`` images spread over the split (scaled to the split), or, before the
    data set is prepared, its standard split sizes at its :data:`TYPICAL_SIZE`. An estimate."""
    from .index import index_fingerprint, read_index
    from .layout import EXPECTED_SIZES
    from .preparation import dataset_dir, index_path

    if not recipe.get("cache"):
        return 0
    ds, crop = recipe["dataset"], bool(recipe.get("crop"))
    style, c, r, bb = (recipe["transform"], int(recipe["crop_size"]), int(recipe["resize_size"]),
                       recipe["backbone"])
    folder, index = dataset_dir(ds, data_root), index_path(ds, data_root)
    try:
        records = read_index(index) if index.is_file() else None
    except (OSError, ValueError):
        records = None
    splits = (sorted({x.split for x in records}) if records
              else list(EXPECTED_SIZES.get(ds, {"train": 0, "test": 0})))
    parts = [("train", True)] + ([("train", False)]
                                 if float(recipe.get("validation_fraction") or 0) > 0 else [])
    parts += [(s, False) for s in splits if s != "train"]
    total = 0
    for split, train in parts:
        if records is None:
            n = EXPECTED_SIZES.get(ds, {}).get(split, 0)
            total += n * cache_bytes([TYPICAL_SIZE.get(ds, (500, 375))], style, train, c, r)
            continue
        members = [x for x in records if x.split == split]
        if not members:
            continue
        key = cache_key(index_fingerprint(index), split, crop, prefix_steps(style, train, c, r, bb))
        if _complete(cache_folder(folder, split, key), key):
            continue
        picked = members[:: max(1, len(members) // sample)][:sample]
        sizes = [_image_size(folder, x, crop, ds) for x in picked]
        total += cache_bytes(sizes, style, train, c, r) * len(members) // len(picked)
    return total
