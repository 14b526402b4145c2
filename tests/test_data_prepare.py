"""prepare(): raw formats → index.csv, splits, labels, boxes, errors, bad images, idempotence."""
from __future__ import annotations

import csv
import json
import warnings

import pytest
from PIL import Image

from data_factories import make_car_raw, make_cub_raw, make_isc_raw, make_sop_raw, make_stl10_raw
from dml_core.data import MissingRawDataError, RetrievalDataset, prepare, read_index
from dml_core.data.boxes import mat_box, xywh_box


def _prepare(ds, root, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny sets differ from the standard sizes
        return prepare(ds, root, verbose=False, **kw)


def _rows(index):
    with open(index, newline="") as f:
        return list(csv.DictReader(f))


def test_car_split_labels_and_boxes(tmp_path):
    make_car_raw(tmp_path / "car")
    index = _prepare("car", tmp_path)
    rows = _rows(index)
    assert list(rows[0]) == ["path", "class_name", "label", "split", "x1", "y1", "x2", "y2"]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert {r["class_name"] for r in train} == {"1", "2", "98"}  # 1-98 train, the test flag ignored
    assert {r["class_name"] for r in test} == {"99", "100", "196"}
    assert [int(r["label"]) for r in test] == [0, 0, 1, 1, 2, 2]  # numeric order: 99 < 100 < 196
    assert rows[0]["path"] == "car_ims/000001.jpg"
    # .mat box (3, 5, 20, 25), 1-based inclusive -> corrected PIL box (2, 4, 20, 25)
    assert tuple(int(rows[0][k]) for k in ("x1", "y1", "x2", "y2")) == (2, 4, 20, 25)
    seed_index = _prepare("car", tmp_path, force=True, box_convention="original")
    assert tuple(int(_rows(seed_index)[0][k]) for k in ("x1", "y1", "x2", "y2")) == (3, 5, 20, 25)


def test_box_conventions():
    assert mat_box(1, 1, 10, 20) == (0, 0, 10, 20)
    assert mat_box(1, 1, 10, 20, "original") == (1, 1, 10, 20)
    assert xywh_box(2.0, 4.5, 10.0, 12.25) == (2, 4, 12, 17)  # covers [2, 12) x [4.5, 16.75)
    assert xywh_box(2.0, 4.5, 10.0, 12.25, "original") == (2, 4, 12, 16)
    with pytest.raises(ValueError, match="box_convention"):
        mat_box(1, 1, 2, 2, "matlab")


def test_cub_split_and_crop(tmp_path):
    make_cub_raw(tmp_path / "cub", size=(40, 30))
    _prepare("cub", tmp_path)
    train = RetrievalDataset("cub", "train", crop=True, data_root=tmp_path)
    test = RetrievalDataset("cub", "test", data_root=tmp_path)
    assert len(train) == 6 and len(test) == 6
    assert train.num_classes == 3 and sorted(set(train.labels.tolist())) == [0, 1, 2]
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2]  # 101, 150, 200
    assert train.paths[0].startswith(str(tmp_path / "cub" / "images"))
    image, label = train[0]
    assert tuple(image.shape) == (3, 17 - 4, 12 - 2) and label == 0  # corrected box (2, 4, 12, 17)
    assert tuple(test[0][0].shape) == (3, 30, 40)
    with pytest.raises(ValueError, match="available"):
        RetrievalDataset("cub", "query", data_root=tmp_path)


def test_sop_official_split(tmp_path):
    make_sop_raw(tmp_path / "sop")
    _prepare("sop", tmp_path, verify_images="full")
    records = read_index(tmp_path / "sop" / "index.csv")
    assert [r.split for r in records].count("train") == 6
    assert {r.label for r in records if r.split == "test"} == {0, 1}
    assert records[0].path == "bicycle_final/1_0.JPG" and records[0].box is None
    with pytest.raises(ValueError, match="crop"):
        RetrievalDataset("sop", "train", crop=True, data_root=tmp_path)


def test_isc_query_gallery_share_one_id_map(tmp_path):
    make_isc_raw(tmp_path / "isc")
    _prepare("isc", tmp_path)
    query = RetrievalDataset("isc", "query", data_root=tmp_path)
    gallery = RetrievalDataset("isc", "gallery", data_root=tmp_path)
    train = RetrievalDataset("isc", "train", data_root=tmp_path)
    assert (len(train), len(query), len(gallery)) == (3, 3, 5)
    assert train.labels.tolist() == [0, 0, 1]
    q = dict(zip(query.class_names, query.labels.tolist()))
    g = dict(zip(gallery.class_names, gallery.labels.tolist()))
    # union {10, 11, 12, 13} -> 0..3; a per-split map would give id 11 label 0 in query, 1 in gallery
    assert q == {"id_00000011": 1, "id_00000013": 3}
    assert g == {"id_00000010": 0, "id_00000011": 1, "id_00000012": 2, "id_00000013": 3}
    assert query.paths[0].endswith("isc/Img/img/WOMEN/Dresses/id_00000011/query_00_1_front.jpg")


def test_missing_files_one_error_listing_all(tmp_path):
    (tmp_path / "cub").mkdir()
    (tmp_path / "cub" / "images.txt").write_text("1 a/b.jpg\n")
    with pytest.raises(MissingRawDataError) as err:
        _prepare("cub", tmp_path)
    msg = str(err.value)
    assert "image_class_labels.txt" in msg and "bounding_boxes.txt" in msg and "Expected layout" in msg
    assert isinstance(err.value, FileNotFoundError) and len(err.value.missing) == 2
    # annotation files present, images missing: every missing image is listed
    make_car_raw(tmp_path / "car")
    for name in ("000001.jpg", "000004.jpg"):
        (tmp_path / "car" / "car_ims" / name).unlink()
    with pytest.raises(MissingRawDataError) as err:
        _prepare("car", tmp_path)
    assert err.value.missing == ["car_ims/000001.jpg", "car_ims/000004.jpg"]
    assert not (tmp_path / "car" / "index.csv").exists()


def test_corrupt_images_reported_and_excluded(tmp_path):
    make_cub_raw(tmp_path / "cub")
    images = sorted((tmp_path / "cub" / "images").rglob("*.jpg"))
    images[0].write_bytes(b"not an image at all")
    data = images[1].read_bytes()
    images[1].write_bytes(data[: len(data) // 2])  # truncated JPEG: only a full decode notices
    _prepare("cub", tmp_path, verify_images="full")
    report = json.loads((tmp_path / "cub" / "prepare_report.json").read_text())
    assert report["bad_images"]["count"] == 2 and report["bad_images"]["excluded_from_index"]
    listed = (tmp_path / "cub" / "bad_images.txt").read_text()
    assert images[0].name in listed and images[1].name in listed
    assert len(read_index(tmp_path / "cub" / "index.csv")) == 12 - 2
    assert report["originals_reencoded"] is False


def test_idempotent_force_and_size_warning(tmp_path, capsys):
    make_cub_raw(tmp_path / "cub")
    with pytest.warns(UserWarning) as caught:
        index = prepare("cub", tmp_path)
    messages = " | ".join(str(w.message) for w in caught)
    assert "train: 6 images, the standard split has 5864" in messages and "5924" in messages
    stamp = index.stat().st_mtime_ns
    Image.new("RGB", (5, 5)).save(sorted((tmp_path / "cub" / "images").rglob("*.jpg"))[0])
    assert prepare("cub", tmp_path) == index  # no work, no change
    assert "already prepared" in capsys.readouterr().out
    assert index.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="force"):
        prepare("cub", tmp_path, box_convention="original")
    _prepare("cub", tmp_path, force=True)
    assert index.stat().st_mtime_ns != stamp


def test_stl10_prepare_validates_binaries(tmp_path):
    data = make_stl10_raw(tmp_path / "stl10")
    _prepare("stl10", tmp_path)
    records = read_index(tmp_path / "stl10" / "index.csv")
    train = [r for r in records if r.split == "train"]
    test = [r for r in records if r.split == "test"]
    assert len(test) == 180 and {r.label for r in test} == {0, 1, 2}
    assert all(int(r.path.split("#")[1]) % 2 == 0 for r in train)  # fold 0 = even records here
    assert {r.class_name for r in train} <= {str(k) for k in range(1, 8)}
    ds = RetrievalDataset("stl10", "train", data_root=tmp_path)
    k = int(train[0].path.split("#")[1])
    img = ds.load_image(0)
    assert img.size == (96, 96) and (list(img.getdata())[:3] == [tuple(p) for p in data["train"][0][k].reshape(-1, 3)[:3]])
    (tmp_path / "stl10" / "stl10_binary" / "test_y.bin").write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="labels"):
        _prepare("stl10", tmp_path, force=True)


def test_cli(tmp_path, capsys):
    from dml_core.data.preparation import main

    make_sop_raw(tmp_path / "sop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["sop", "--data-root", str(tmp_path), "--verify-images", "none"]) == 0
    assert (tmp_path / "sop" / "index.csv").is_file()
    with pytest.raises(SystemExit):
        main(["imagenet", "--data-root", str(tmp_path)])
    assert main(["car", "--data-root", str(tmp_path)]) == 1
    assert "cars_annos.mat" in capsys.readouterr().err
