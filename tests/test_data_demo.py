"""The embedded demo data set (digits in the CUB layout) and the toy data (STL-10 or digits)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from data_factories import make_stl10_raw
from dml_core.data import RetrievalDataset, load_toy_data, prepare, write_demo_raw
from dml_core.data.demo import demo_classes, demo_plan, render_number, tight_box
from sklearn.datasets import load_digits


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare("demo", root, verbose=False)
    return root


def test_demo_prepares_and_loads(demo_root):
    train = RetrievalDataset("demo", "train", data_root=demo_root)
    val = RetrievalDataset("demo", "val", data_root=demo_root)
    test = RetrievalDataset("demo", "test", crop=True, data_root=demo_root)
    assert (len(train), len(val), len(test)) == (1500, 1500, 1500)
    assert train.num_classes == val.num_classes == test.num_classes == 50
    assert set(train.class_names) == {str(i) for i in range(1, 51)}  # CUB-style: ids 1-50 train
    # validation images are of the training classes and share their labels
    by_class = dict(zip(train.class_names, train.labels))
    assert all(by_class[c] == label for c, label in zip(val.class_names, val.labels))
    image, label = train[0]
    assert tuple(image.shape) == (3, 48, 48) and label == 0
    cropped = test.load_image(0)
    assert cropped.size[0] <= 47 and cropped.size[1] <= 26


def test_demo_classes_split_by_digit_sum_and_every_digit_is_seen_in_both_positions():
    classes = dict(demo_classes())
    assert sorted(classes.values()) == [f"{n:02d}" for n in range(100)]
    train = [classes[i] for i in range(1, 51)]
    test = [classes[i] for i in range(51, 101)]
    assert all((int(a) + int(b)) % 2 == 0 for a, b in train)
    assert all((int(a) + int(b)) % 2 == 1 for a, b in test)
    assert {n[::-1] for n in train} == set(train)  # 08 and 80 always share a split
    for position in (0, 1):
        assert {n[position] for n in train} == set("0123456789")


def test_demo_train_validation_and_test_images_use_disjoint_scans():
    """Validation is as unseen as test: no scan of a validation or test image is in a training
    image (compared on the scans' pixels)."""
    digits = load_digits()
    labels = digits.target
    plan = demo_plan()
    assert len(plan) == 4500
    scans = {split: {digits.images[s].tobytes() for *_, a, b, sp in plan if sp == split
                     for s in (a, b)} for split in ("train", "val", "test")}
    assert not scans["train"] & scans["val"]
    assert not scans["train"] & scans["test"]
    assert not scans["val"] & scans["test"]
    assert {cid for cid, *_, sp in plan if sp == "val"} == set(range(1, 51))  # training classes
    assert {cid for cid, *_, sp in plan if sp == "test"} == set(range(51, 101))
    for cid, number, a, b, _ in plan[::97]:
        assert (labels[a], labels[b]) == (int(number[0]), int(number[1]))


def test_demo_boxes_are_tight_around_the_rendered_number():
    rng = np.random.default_rng(0)
    digits = load_digits()
    for i in range(5):
        rgb, mask = render_number([digits.images[i], digits.images[i + 5]], rng)
        assert rgb.shape == (48, 48, 3) and rgb.dtype == np.uint8 and mask.any()
        x, y, w, h = (int(v) for v in tight_box(mask))
        box = mask[y:y + h, x:x + w]
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
        assert mask.sum() == box.sum()
        ink, background = rgb[mask].mean(0), rgb[~mask].mean(0)
        assert (ink > background).all()  # bright ink on a darker background (fixed polarity)


def test_demo_nuisances_vary_per_image(demo_root):
    train = RetrievalDataset("demo", "train", data_root=demo_root)
    means = np.stack([np.asarray(train.load_image(i), dtype=np.float32).mean((0, 1))
                      for i in range(0, 200, 10)])
    assert means.std(0).min() > 10  # the colours differ from image to image


def test_demo_is_deterministic(demo_root, tmp_path):
    write_demo_raw(tmp_path / "demo", limit=40)
    for name in ("images.txt", "bounding_boxes.txt"):
        a = (tmp_path / "demo" / name).read_text().splitlines()
        b = (demo_root / "demo" / name).read_text().splitlines()
        assert len(a) == 40 and a == b[:40], name
    for png in ("001.number_00/number_00_0003.png", "002.number_02/number_02_0040.png"):
        a = (tmp_path / "demo" / "images" / png).read_bytes()
        b = (demo_root / "demo" / "images" / png).read_bytes()
        assert hashlib.sha1(a).digest() == hashlib.sha1(b).digest(), png


def test_toy_digits_stand_in(tmp_path):
    toy = load_toy_data(tmp_path, source="auto")
    assert toy.source == "digits"
    assert toy.train_images.dtype == np.uint8 and toy.train_images.shape[1:] == (32, 32, 3)
    assert set(toy.train_labels.tolist()) == set(range(7))
    assert np.bincount(toy.test_labels).tolist() == [60, 60, 60]
    assert toy.test_labels.dtype == np.int64


def test_toy_stl10(tmp_path):
    data = make_stl10_raw(tmp_path / "stl10")
    toy = load_toy_data(tmp_path)
    assert toy.source == "stl10"
    train_images, train_labels = data["train"]
    fold0 = np.arange(0, len(train_labels), 2)
    keep = fold0[train_labels[fold0] <= 6]
    assert np.array_equal(toy.train_labels, train_labels[keep])
    assert np.array_equal(toy.train_images, train_images[keep])  # column-major storage undone
    test_images, test_labels = data["test"]
    first = np.flatnonzero(test_labels == 8)[:60]
    assert np.array_equal(toy.test_images[60:120], test_images[first])
    assert np.bincount(toy.test_labels).tolist() == [60, 60, 60]
    with pytest.raises(FileNotFoundError):
        load_toy_data(tmp_path / "elsewhere", source="stl10")


def test_an_older_demo_is_replaced_not_reused(tmp_path):
    from dml_core.data.demo import VERSION_FILE, demo_raw_exists

    old = tmp_path / "demo"
    (old / "images" / "001.digit_0").mkdir(parents=True)
    (old / "images" / "001.digit_0" / "digit_0_0001.png").write_bytes(b"old")
    for name in ("images.txt", "image_class_labels.txt", "bounding_boxes.txt", "index.csv"):
        (old / name).write_text("version 1\n")
    assert not demo_raw_exists(old)  # no version file: the single-digit demo
    prepare("demo", tmp_path, verbose=False)
    assert demo_raw_exists(old) and (old / VERSION_FILE).is_file()
    assert not (old / "images" / "001.digit_0").exists()
    assert len(RetrievalDataset("demo", "train", data_root=tmp_path)) == 1500
