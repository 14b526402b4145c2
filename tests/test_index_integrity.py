"""index.csv carries an integrity record (prepare_report.json) that every reader checks."""
from __future__ import annotations

import json
import warnings

import pytest

from data_factories import make_cub_raw
from dml_core.data import RetrievalDataset, prepare, read_index
from dml_core.data.index import IndexIntegrityError


@pytest.fixture()
def cub(tmp_path):
    make_cub_raw(tmp_path / "cub", classes=(1, 2, 3, 101, 102, 103), per_class=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        index = prepare("cub", tmp_path, verbose=False)
    return tmp_path, index


def test_the_report_records_counts_and_checksum(cub):
    root, index = cub
    report = json.loads((root / "cub" / "prepare_report.json").read_text())
    assert report["index"]["rows"] == 18 and len(report["index"]["sha256"]) == 64
    assert report["splits"]["test"] == {"images": 9, "classes": 3}
    assert len(read_index(index)) == 18


@pytest.mark.parametrize("cut", ["whole_lines", "mid_line"])
def test_a_truncated_index_is_an_error_naming_the_file_and_the_fix(cub, cut, capsys):
    root, index = cub
    data = index.read_bytes()
    lines = data.splitlines(keepends=True)
    index.write_bytes(b"".join(lines[:-4]) if cut == "whole_lines" else data[:-25])
    with pytest.raises(IndexIntegrityError) as err:
        RetrievalDataset("cub", "test", data_root=root)
    msg = str(err.value)
    assert str(index) in msg and "python -m dml_core.data cub --force" in msg
    if cut == "whole_lines":
        assert "test: 5 images / 2 classes" in msg and "test: 9 images / 3 classes" in msg
    with pytest.raises(IndexIntegrityError):
        read_index(index)
    # prepare does not call it "already prepared": it prepares it again
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        prepare("cub", root)
    out = capsys.readouterr().out
    assert "already prepared" not in out and "preparing it again" in out
    assert len(RetrievalDataset("cub", "test", data_root=root)) == 9


def test_a_malformed_line_names_its_line_number(cub):
    root, index = cub
    with pytest.raises(IndexIntegrityError, match=r"line 3: malformed"):
        lines = index.read_bytes().splitlines(keepends=True)
        index.write_bytes(b"".join(lines[:2]) + b"images/x.jpg,1\r\n" + b"".join(lines[3:]))
        read_index(index, verify=False)


def test_an_index_without_integrity_record_is_refused(cub):
    root, index = cub
    (root / "cub" / "prepare_report.json").unlink()
    with pytest.raises(IndexIntegrityError, match="no integrity record.*--force"):
        RetrievalDataset("cub", "train", data_root=root)
