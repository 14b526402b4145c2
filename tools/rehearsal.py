"""The full path rehearsed on stand-ins: ``python -m tools.rehearsal`` (``make rehearsal``).

What a user with the real data sets and a GPU machine does, on CPU, in a temporary folder:

1. :func:`write_standins` writes car, cub, sop, isc and stl10 in their exact raw layouts
   (``docs/DATA.md``): the real file names and header lines, a real ``cars_annos.mat`` (struct
   array written by :func:`scipy.io.savemat`), smooth random JPEGs of realistic sizes
   (:data:`IMAGE_SIZES`), the STL-10 binaries; small splits (:data:`STANDINS`);
2. :func:`write_weights` writes random weights in every published checkpoint's format (the full
   torchvision ``state_dict`` with its classifier; Cadene's BN-Inception with the (1, C) BatchNorm
   tensors of the Caffe port and no ``num_batches_tracked``; DINO's ViT-S/16 hub file; DINOv2's
   ViT-S/14 hub file with its ``mask_token`` and 37×37 position embeddings) under the real file
   names into ``<work>/torch/hub/checkpoints`` and points ``TORCH_HOME`` there;
3. runs the ``full`` profile (``--vit``: the ViT runs of ``fair_vit``, :func:`vit_runs`)
   through :func:`dml_core.batch.run_profile` with the profile-wide override :data:`SETTINGS`
   (1 epoch of 2 steps, batch 8), CPU (every output in ``<work>/runs``);
4. checks every training run folder: ``status: complete`` and the recipe marked ``shortened``;
5. builds the report book from those run folders (``<work>/runs/full/report/index.html``).

The generators double as the data-layer tests' factories (``tests/data_factories.py``): their
defaults write tiny solid-colour images.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

__all__ = ["IMAGE_SIZES", "STANDINS", "SETTINGS", "SUBSET", "VIT_PROFILE", "vit_runs", "photo", "write_image", "make_car_raw",
           "make_cub_raw", "make_sop_raw", "make_isc_raw", "make_stl10_raw", "write_standins",
           "published_state_dict", "write_weights", "rehearse", "main"]

#: Typical (width, height) of the real images (CUB ~500×375, Cars ~700×470; SOP and In-shop stand-ins).
IMAGE_SIZES = {"car": (700, 470), "cub": (500, 375), "sop": (400, 400), "isc": (256, 256)}
#: The rehearsal's stand-in splits (:func:`write_standins`): 6 training classes of 4 images (two
#: full batches of 8 at 2 per class, so every run takes its 2 steps); 4 test classes of 2 images
#: (each run embeds its test split twice, untrained and after the epoch: at 224 px on CPU two
#: thirds of its training time with 24 images; 8 is what the notebooks' top-8 retrieval needs, and
#: In-shop has them in its query and in its gallery); STL-10 with 4 test images per class (the
#: toy embeds its test split after every epoch of each of its 4 trainings).
STANDINS = {"classes": 6, "per_class": 4, "test": (4, 2), "stl10_test_per_class": 4}
#: The rehearsal's profile-wide override (``--set``) of every training run.
SETTINGS = {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 8, "samples_per_class": 2,
            "device": "cpu"}
#: One run per backbone and per data set (the test suite's subset), plus preparation and report.
SUBSET = ("00_prepare_data", "01_normsoftmax_isc_resnet50", "02_asymptotic_proxy_sop_googlenet",
          "04_cgd_car_resnext50_32x4d_uncropped", "05_dynamic_margin_cub_bninception",
          "07_toy_proxies", "06_benchmarks", "08_figures")
#: The ViT track's profile (dml_core.methods.fair), rehearsed by ``--vit``.
VIT_PROFILE = "fair_vit"


def vit_runs() -> list[str]:
    """The runs of :data:`VIT_PROFILE` that ``--vit`` rehearses (and ``make rehearsal``): every
    (ViT trunk, method, data set) once, at the first seed and the middle value of its loss grid,
    the embedding size alternating between the data sets (384, 128, 384, ...; the second trunk
    starts at 128), so every (setting, method) and every (embedding size, method, data set) runs
    as well; plus the preparation, the tables and the figures. The other
    runs of the profile differ from these in the seed, one loss value or the embedding size only;
    ``--profile fair_vit`` rehearses all 720."""
    from dml_core.methods import fair

    seed = fair.PROFILES[VIT_PROFILE]["seeds"][0]
    chosen = []
    for t, (stem, *_) in enumerate(fair.VIT_TRUNKS):
        names = [stem if d == fair.VIT_EMBEDDING_DIMS[0] else f"{stem}_d{d}"
                 for d in fair.VIT_EMBEDDING_DIMS]
        for variant, v in fair.VARIANTS.items():
            if not v.headline:
                continue
            key, values = fair.LOSS_GRID[v.method]
            datasets = [d for d in fair.setting(names[0]).datasets
                        if fair.available(v.method, d, fair.setting(names[0]).backbone)]
            for i, ds in enumerate(datasets):
                name = names[(i + t) % len(names)]  # trunks start apart: every (size, data set)
                chosen.append(f"fair_{name}_{variant}_{ds}_{key}{values[len(values) // 2]}_s{seed}")
    runs = [r["id"] for r in fair.profile_document(VIT_PROFILE)["runs"]]
    missing = sorted(set(chosen) - set(runs))
    assert not missing, f"not in {VIT_PROFILE}: {missing}"
    return [r for r in runs if not r.startswith("fair_") or r in set(chosen)]


SOP_SUPER = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug", "sofa",
             "stapler", "table", "toaster")

Painter = Callable[[tuple[int, int], int], Image.Image]


# --------------------------------------------------------------------------------- images
def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A smooth random RGB image (upsampled 8×6 colours + mild noise): JPEG-compresses like a photo."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    arr = np.asarray(small.resize(size, Image.BILINEAR), dtype=np.int16)
    arr = arr + rng.integers(-10, 11, arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_image(path: Path, size=(40, 30), color=(200, 100, 50), mode="RGB", fmt=None,
                painter: Painter | None = None, seed: int = 0) -> None:
    """A solid-colour image (or ``painter(size, seed)``) saved at ``path`` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = painter(size, seed) if painter else Image.new(mode, size, color if mode == "RGB" else 128)
    kw = {"quality": 90} if (fmt or path.suffix.upper().lstrip(".")) in ("JPEG", "JPG") else {}
    img.save(path, format=fmt, **kw)


def _box(size, j: int) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) inside an image of ``size``: the factories' tiny boxes, scaled up."""
    w, h = size
    if (w, h) == (40, 30):
        return 3 + j, 5, 20 + j, 25
    return round(0.1 * w) + j, round(0.15 * h), round(0.85 * w) + j, round(0.9 * h)


# --------------------------------------------------------------------------------- raw layouts
def _count(per_class: int | dict, cls: int) -> int:
    return per_class[cls] if isinstance(per_class, dict) else per_class


def make_car_raw(folder: Path, classes=(1, 2, 98, 99, 100, 196), per_class: int | dict = 2,
                 size=(40, 30), painter: Painter | None = None) -> list[dict]:
    """``cars_annos.mat`` (struct array ``annotations`` with the real field names) + ``car_ims/``;
    ``per_class``: images per class (a dict: per class id)."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    names = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    rows = []
    for cls in classes:
        for j in range(_count(per_class, cls)):
            i = len(rows) + 1
            x1, y1, x2, y2 = _box(size, j)
            rows.append({"relative_im_path": f"car_ims/{i:06d}.jpg", "bbox_x1": x1, "bbox_y1": y1,
                         "bbox_x2": x2, "bbox_y2": y2, "class": cls, "test": i % 2})
    arr = np.zeros((1, len(rows)), dtype=[(n, object) for n in names])
    for k, row in enumerate(rows):
        for n in names:
            arr[0, k][n] = np.array(row[n]) if n == "relative_im_path" else np.array([[row[n]]], dtype=np.uint16)
        write_image(folder / row["relative_im_path"], size, painter=painter, seed=k)
    scipy.io.savemat(folder / "cars_annos.mat", {"annotations": arr})
    return rows


def make_cub_raw(folder: Path, classes=(1, 2, 100, 101, 150, 200), per_class: int | dict = 2,
                 size=(40, 30), painter: Painter | None = None) -> list[dict]:
    """``images.txt``, ``image_class_labels.txt``, ``bounding_boxes.txt`` (floats), ``images/``;
    ``per_class``: images per class (a dict: per class id)."""
    rows = []
    for cls in classes:
        for j in range(_count(per_class, cls)):
            i = len(rows) + 1
            if size == (40, 30):
                box = (2.0 + j, 4.5, 10.0, 12.25)
            else:
                x1, y1, x2, y2 = _box(size, j)
                box = (float(x1), float(y1) + 0.5, float(x2 - x1), float(y2 - y1) - 0.75)
            rows.append({"id": i, "path": f"{cls:03d}.Bird_{cls}/Bird_{cls}_{i:04d}.jpg", "class": cls,
                         "box": box})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images.txt").write_text("".join(f"{r['id']} {r['path']}\n" for r in rows))
    (folder / "image_class_labels.txt").write_text("".join(f"{r['id']} {r['class']}\n" for r in rows))
    (folder / "bounding_boxes.txt").write_text(
        "".join(f"{r['id']} " + " ".join(str(v) for v in r["box"]) + "\n" for r in rows))
    for r in rows:
        write_image(folder / "images" / r["path"], size, painter=painter, seed=r["id"])
    return rows


def make_sop_raw(folder: Path, train_classes=(1, 2, 3), test_classes=(11319, 11320), per_class=2,
                 size=(40, 30), painter: Painter | None = None, test_per_class: int | None = None) -> dict:
    """``Ebay_train.txt`` / ``Ebay_test.txt`` with their header line, images under ``<super>_final/``
    (``per_class`` images per class, ``test_per_class`` in the test split if given)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    i = 0
    for split, classes in (("train", train_classes), ("test", test_classes)):
        lines = ["image_id class_id super_class_id path"]
        count = test_per_class if split == "test" and test_per_class else per_class
        for c, cls in enumerate(classes):
            sup = 0 if painter is None else c % len(SOP_SUPER)
            for j in range(count):
                i += 1
                rel = f"{SOP_SUPER[sup]}_final/{cls}_{j}.JPG"
                lines.append(f"{i} {cls} {sup + 1} {rel}")
                write_image(folder / rel, size, fmt="JPEG", painter=painter, seed=i)
        (folder / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
        written[split] = len(lines) - 1
    return written


_ISC_ROWS = [("id_00000001", "train", 2), ("id_00000003", "train", 1), ("id_00000010", "gallery", 1),
             ("id_00000011", "query", 2), ("id_00000011", "gallery", 1), ("id_00000012", "gallery", 1),
             ("id_00000013", "query", 1), ("id_00000013", "gallery", 2)]


def make_isc_raw(folder: Path, items=None, size=(40, 30),
                 painter: Painter | None = None) -> list[tuple[str, str, str]]:
    """``Eval/list_eval_partition.txt`` (count line + header line) and ``Img/img/...`` images.

    ``items``: (item_id, evaluation_status, count) triples. The default has query and gallery
    with DIFFERENT id sets (ids 10 and 12 only in the gallery), which is what breaks the original code's
    separate per-split maps."""
    rows = []
    for item, status, n in items or _ISC_ROWS:
        for j in range(n):
            rows.append((f"img/WOMEN/Dresses/{item}/{status}_{j:02d}_1_front.jpg", item, status))
    lines = [str(len(rows)), "image_name item_id evaluation_status"]
    lines += [f"{p}      {i}       {s}" for p, i, s in rows]
    (folder / "Eval").mkdir(parents=True, exist_ok=True)
    (folder / "Eval/list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    for k, (p, _, _) in enumerate(rows):
        write_image(folder / "Img" / p, size, fmt="JPEG", painter=painter, seed=k)
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


def write_standins(data_root: str | os.PathLike, sizes: dict | None = None, classes: int = 6,
                   per_class: int = 4, datasets: Sequence[str] = ("car", "cub", "sop", "isc", "stl10"),
                   test: tuple[int, int] | None = None, stl10_test_per_class: int = 62) -> dict[str, int]:
    """Raw stand-ins of ``datasets`` under ``data_root``: ``classes`` training classes of
    ``per_class`` images, ``test`` = (classes, images per class) for the evaluation split(s)
    (default: the training numbers; In-shop: in the query and in the gallery), photo-like JPEGs of ``sizes`` (default :data:`IMAGE_SIZES`), STL-10 with
    ``stl10_test_per_class`` test images per class; returns image counts."""
    root = Path(data_root)
    sizes = {**IMAGE_SIZES, **(sizes or {})}
    n_test, per_test = test or (classes, per_class)
    if min(classes, per_class, n_test, per_test) < 2:
        raise ValueError(f"stand-ins need >= 2 classes of >= 2 images in every split (the samplers "
                         f"and Recall@K), got train {classes}x{per_class}, test {n_test}x{per_test}")
    n = {}

    def two_splits(first_test: int) -> tuple[int, ...]:  # the real class ids of each split
        return tuple(range(1, classes + 1)) + tuple(range(first_test, first_test + n_test))

    def counts(first_test: int) -> dict[int, int]:  # images per class id
        return {c: per_test if c >= first_test else per_class for c in two_splits(first_test)}

    if "car" in datasets:  # classes 1-98 train, 99-196 test
        n["car"] = len(make_car_raw(root / "car", two_splits(99), counts(99), sizes["car"], photo))
    if "cub" in datasets:  # 1-100 train, 101-200 test
        n["cub"] = len(make_cub_raw(root / "cub", two_splits(101), counts(101), sizes["cub"], photo))
    if "sop" in datasets:  # the real test class ids start at 11319
        n["sop"] = sum(make_sop_raw(root / "sop", tuple(range(1, classes + 1)),
                                    tuple(range(11319, 11319 + n_test)), per_class, sizes["sop"],
                                    photo, test_per_class=per_test).values())
    if "isc" in datasets:
        items = [(f"id_{k:08d}", "train", per_class) for k in range(1, classes + 1)]
        for k in range(100, 100 + n_test):
            items += [(f"id_{k:08d}", "query", per_test), (f"id_{k:08d}", "gallery", per_test)]
        n["isc"] = len(make_isc_raw(root / "isc", items, sizes["isc"], photo))
    if "stl10" in datasets:
        d = make_stl10_raw(root / "stl10", test_per_class=stl10_test_per_class)
        n["stl10"] = sum(len(v[1]) for v in d.values())
    return n


# --------------------------------------------------------------------------------- weights
def published_state_dict(backbone: str) -> dict:
    """Random weights laid out as the published checkpoint of ``backbone`` (see the module doc)."""
    import torch
    import torchvision.models as tvm

    if backbone in ("resnet50", "resnext50_32x4d", "resnet18", "resnet18_s2"):  # s2: resnet18's file
        return getattr(tvm, backbone.removesuffix("_s2"))(weights=None).state_dict()
    if backbone == "googlenet":  # torchvision's file holds the auxiliary classifiers too
        return tvm.GoogLeNet(aux_logits=True, transform_input=False, init_weights=True).state_dict()
    if backbone == "bninception":
        from pretrainedmodels.models.bninception import BNInception

        state = BNInception(num_classes=1000).state_dict()
        out = {}
        for k, v in state.items():
            if k.endswith("num_batches_tracked"):
                continue  # the 2017 file predates them
            is_bn = "_bn." in k or k.endswith(("_bn.weight", "_bn.bias"))
            out[k] = v.unsqueeze(0) if is_bn and v.dim() == 1 else v
        return out
    if backbone in ("vit_s16_dino", "vit_s14_dinov2"):
        # The authors' hub files are timm's layout at their training size (DINO 224, DINOv2
        # 518: 37x37 position embeddings) without a head; DINOv2's adds its mask_token (timm's
        # _convert_dinov2 drops it again). No "vit." prefix: that is this project's trunk.
        import timm

        arch = {"vit_s16_dino": "vit_small_patch16_224",
                "vit_s14_dinov2": "vit_small_patch14_dinov2"}[backbone]
        out = timm.create_model(arch, pretrained=False, num_classes=0).state_dict()
        if backbone == "vit_s14_dinov2":
            out["mask_token"] = torch.zeros(1, out["cls_token"].shape[-1])
        return out
    raise ValueError(f"no published checkpoint format for {backbone!r}")


def write_weights(torch_home: str | os.PathLike, backbones: Sequence[str] | None = None) -> list[Path]:
    """Write :func:`published_state_dict` of every backbone (or ``backbones``) under its real file
    name into ``<torch_home>/hub/checkpoints``; returns the paths."""
    import torch

    from dml_core.models.backbones import BACKBONES

    folder = Path(torch_home) / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    out = []
    for name in backbones or sorted(BACKBONES):
        path = folder / BACKBONES[name].weight_files[0]
        if not path.is_file():
            torch.save(published_state_dict(name), path)
        out.append(path)
    return out


# --------------------------------------------------------------------------------- the rehearsal
def rehearse(work: str | os.PathLike, *, only: Sequence[str] | None = None, jobs: int = 1,
             settings: dict | None = None, sizes: dict | None = None, quiet: bool = False,
             book: bool = False, profile: str = "full"):
    """Stand-ins + weights under ``work``, then ``profile`` (``full``, or :data:`VIT_PROFILE`)
    with :data:`SETTINGS`, then (``book``) the report book of those run folders
    (``<work>/runs/<profile>/report/index.html``).

    Returns ``(batch_result, problems)``; ``problems`` lists failed runs and training run
    folders that are not done or not marked ``shortened``.
    """
    from dml_core.batch import driver as batch
    from dml_core.core.run_folder import find_runs
    work = Path(work).resolve()
    data_root, runs_root = work / "data", work / "runs"
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    t0 = time.time()
    counts = write_standins(data_root, sizes, **STANDINS)
    say(f"stand-ins written under {data_root}: {counts} ({time.time() - t0:.0f} s)")
    os.environ["TORCH_HOME"] = str(work / "torch")
    t1 = time.time()
    write_weights(work / "torch")
    say(f"random weights in the published formats under {work / 'torch'} ({time.time() - t1:.0f} s)")
    sets = {**SETTINGS, **(settings or {})}  # 08's figures stay in its run folder, under work
    result = batch.run_profile(profile, jobs=jobs, only=list(only) if only else None,
                               runs_root=runs_root, data_root=data_root, settings=sets,
                               progress=False, quiet=quiet)
    problems = [f"{r.id}: {r.status} ({r.error or ''})" for r in result.results
                if r.status not in ("done", "skipped")]
    if book:
        from dml_core.report.book import build_book

        try:
            say(f"book: {build_book(profile, runs_root)}")
        except Exception as exc:  # noqa: BLE001 - reported as a problem of the rehearsal
            problems.append(f"book: {type(exc).__name__}: {str(exc)[:500]}")
    for run in find_runs(runs_root / profile):
        s = run.read_summary() or {}
        recipe = s.get("recipe") or {}
        if "method" in recipe and recipe.get("method") != "toy":
            if s.get("status") not in (None, "done", "finished", "complete"):
                problems.append(f"{run.root.name}: summary status {s.get('status')!r}")
            if not recipe.get("shortened"):
                problems.append(f"{run.root.name}: recipe not marked shortened")
    say(f"rehearsal: {len(result.results)} run(s) in {time.time() - t0:.0f} s, "
        f"{len(problems)} problem(s)")
    for p in problems:
        say(f"  PROBLEM {p}")
    return result, problems


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.rehearsal", description=__doc__.split("\n")[0])
    p.add_argument("--work", help="working folder (default: a new temporary folder, kept)")
    p.add_argument("--only", action="append", metavar="PATTERN",
                   help="run ids (fnmatch) to rehearse; default: the whole full profile")
    p.add_argument("--subset", action="store_true",
                   help="one run per backbone and per data set (what the test suite runs)")
    p.add_argument("--profile", default="full", help=f"the profile to rehearse: full (default) or "
                   f"{VIT_PROFILE} (every one of its runs)")
    p.add_argument("--vit", action="store_true",
                   help=f"the ViT track: {VIT_PROFILE}, every (setting, method, data set) once "
                        "(first seed, middle loss value), with its tables and figures")
    p.add_argument("--jobs", "-j", type=int, default=1)
    p.add_argument("--no-book", action="store_true", help="skip building the report book")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="settings",
                   help=f"extra overrides on top of {SETTINGS}")
    args = p.parse_args(argv)
    from dml_core.batch import parse_settings

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dml_rehearsal_"))
    profile = VIT_PROFILE if args.vit else args.profile
    only = args.only or (list(SUBSET) if args.subset else vit_runs() if args.vit else None)
    _, problems = rehearse(work, only=only, jobs=args.jobs, settings=parse_settings(args.settings),
                           book=not args.no_book, profile=profile)
    print(f"run folders, report and figures: {work}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
