"""Full disks, odd file systems and hostile inputs (issue 22): no partial file survives a failure,
a full disk is one clear error, files are fsynced before they are published, locks refuse what
they cannot guarantee, Slurm settings cannot add lines to a job script, and images, indexes and
annotation paths fail with the project's own errors.

A full disk is simulated (an ``ENOSPC`` from the writer, ``torch.save``'s ``RuntimeError`` with no
space left), as is a file system without ``flock``.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dml_core.core import io

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------ full disk, partial files
def test_a_failed_write_leaves_nothing_and_a_full_disk_is_one_clear_error(tmp_path):
    from dml_core.core.io import DiskFullError

    with pytest.raises(ValueError):
        with io.atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("partial")
            raise ValueError("the writer failed")
    with pytest.raises(DiskFullError) as err:
        with io.atomic_path(tmp_path / "summary.json", needed=5_000_000) as tmp:
            tmp.write_bytes(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _files(tmp_path) == []
    msg = str(err.value)
    assert str(tmp_path / "summary.json") in msg and "5.0 MB" in msg and "free" in msg
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)


def test_torch_save_on_a_full_disk_says_disk_full_with_the_space_needed(tmp_path, monkeypatch):
    from dml_core.core.io import DiskFullError

    def torch_save_fails(obj, path):  # what torch does when the disk fills: RuntimeError
        Path(path).write_bytes(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", torch_save_fails)
    monkeypatch.setattr(io, "free_bytes", lambda folder: 0)
    with pytest.raises(DiskFullError) as err:
        io.torch_save({"w": torch.zeros(1_000_000)}, tmp_path / "checkpoints" / "last.pt")
    assert "last.pt" in str(err.value) and "4.0 MB" in str(err.value)  # the tensors' bytes
    assert _files(tmp_path) == []
    # with space left, the same RuntimeError is not called a full disk
    monkeypatch.setattr(io, "free_bytes", lambda folder: 10**12)
    with pytest.raises(RuntimeError, match="unexpected pos") as err:
        io.torch_save({"w": torch.zeros(3)}, tmp_path / "x.pt")
    assert not isinstance(err.value, DiskFullError) and _files(tmp_path) == []


def test_files_and_their_folder_are_fsynced_before_the_rename_publishes_them(tmp_path,
                                                                           monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        return real_fsync(fd)

    def replace(a, b):
        events.append("replace")
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    io.write_json(tmp_path / "status.json", {"status": "done"})
    assert events == ["fsync file", "replace", "fsync dir"]
    assert json.loads((tmp_path / "status.json").read_text()) == {"status": "done"}


def _image(i: int) -> Image.Image:
    return Image.fromarray(np.full((20, 30, 3), i, dtype=np.uint8))


def test_the_image_cache_leaves_no_partial_file_and_sweeps_leftovers(tmp_path):
    from dml_core.core.io import DiskFullError

    from dml_core.data.cache import ImageCache

    folder = tmp_path / "cache" / "train-abc"

    def breaks_at_5(i):
        if i == 5:
            raise OSError("decoder died")
        return _image(i)

    with pytest.raises(OSError, match="decoder died"):
        ImageCache.build(folder, 10, breaks_at_5, lambda im: im, {"k": 1}, workers=1)
    assert _files(folder) == [".lock"]

    def disk_fills_at_4(i):
        if i == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return _image(i)

    with pytest.raises(DiskFullError) as err:
        ImageCache.build(folder, 100, disk_fills_at_4, lambda im: im, {"k": 1}, workers=1)
    assert "images.u8" in str(err.value) and err.value.needed >= 100 * 20 * 30 * 3
    assert _files(folder) == [".lock"]
    # what a killed build (this version's or an older one's) left is removed by the next one
    for name in ("images.u8.4242.tmp", "meta.json.4242.tmp", ".images.u8.x1y2.tmp"):
        (folder / name).write_bytes(b"partial")
    cache = ImageCache.build(folder, 3, _image, lambda im: im, {"k": 1}, workers=1)
    assert _files(folder) == [".lock", "images.u8", "index.npy", "meta.json"]
    assert int(cache[2][0, 0, 0]) == 2


def test_sweep_removes_failed_cache_folders_but_not_complete_or_busy_ones(tmp_path):
    from dml_core.data.cache import ImageCache, sweep_caches

    root = tmp_path / "cache"
    ImageCache.build(root / "test-done", 2, _image, lambda im: im, {"k": 1}, workers=1)
    (root / "test-done" / ".images.u8.zz.tmp").write_bytes(b"x")
    (root / "train-failed").mkdir()
    (root / "train-failed" / "images.u8.77.tmp").write_bytes(b"x" * 1000)
    (root / "train-busy").mkdir()
    fd = os.open(root / "train-busy" / ".lock", os.O_RDWR | os.O_CREAT)
    try:  # as another process building it would: its own open file, flocked
        fcntl.flock(fd, fcntl.LOCK_EX)
        removed = sweep_caches(root)
    finally:
        os.close(fd)
    assert sorted(p.name for p in removed) == [".images.u8.zz.tmp", "train-failed"]
    assert sorted(p.name for p in root.iterdir()) == ["test-done", "train-busy"]


def test_preflight_counts_the_image_cache_and_the_estimate_is_close(tmp_path, monkeypatch):
    from dml_core.batch import preflight
    from dml_core.data import cache as cache_mod
    from dml_core.data.cache import cached_split, estimate_cache_bytes
    from dml_core.data.preparation import prepare
    from tools.rehearsal import make_cub_raw, photo

    make_cub_raw(tmp_path / "data" / "cub", classes=(1, 2, 101, 102), per_class=3,
                 size=(90, 70), painter=photo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare("cub", tmp_path / "data", verbose=False)
    recipe = {"dataset": "cub", "transform": "random_resized_crop", "backbone": "resnet50",
              "crop": False, "crop_size": 40, "resize_size": 48, "cache": True,
              "validation_fraction": 0.0, "hflip": True, "rrc_scale": [0.08, 1.0]}
    est = estimate_cache_bytes(recipe, tmp_path / "data")
    built = sum(cached_split(recipe, s, s == "train", tmp_path / "data", workers=1).cache.meta[
        "bytes"] for s in ("train", "test"))
    assert est == built  # every image read by the estimate here: exact
    assert estimate_cache_bytes(recipe, tmp_path / "data") == 0  # built: nothing more to add

    monkeypatch.setattr(cache_mod, "estimate_cache_bytes", lambda r, root=None: 10**18)
    report = preflight.check_profile("demo", only=["fair_normsoftmax_s0"],
                                     data_root=tmp_path / "data", runs_root=tmp_path / "runs")
    disk = [c for c in report.checks if c.kind == "disk"]
    assert disk and not all(c.ok for c in disk), [c.detail for c in disk]
    assert any("cache" in c.detail for c in disk)


def test_a_run_sweeps_what_a_killed_run_left_in_its_folder(tmp_path):
    from dml_core.batch.execution import execute_run

    run_dir = tmp_path / "runs" / "p" / "r"
    for rel in (".status.json.abc123.tmp", "figures/retrievals/.grid.png.x9.tmp",
                ".notebook.html.q.tmp"):
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_bytes(b"partial")
    status = execute_run({"id": "r", "notebook": "missing.ipynb", "run_dir": str(run_dir),
                          "notebook_path": str(tmp_path / "missing.ipynb"), "parameters": {},
                          "kernel_name": "python3", "cwd": str(tmp_path), "fingerprint": "f",
                          "parts": {}})
    assert status["status"] == "failed"
    assert not [p for p in _files(run_dir) if p.endswith(".tmp")]


# ------------------------------------------------------------------------ locks
def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    from dml_core.core.locks import FileLock, LockError

    target = tmp_path / "precious.txt"
    target.write_text("precious\n")
    (tmp_path / "run").mkdir()
    os.symlink(target, tmp_path / "run" / ".lock")
    with pytest.raises(LockError, match="symbolic link"):
        with FileLock(tmp_path / "run" / ".lock", timeout=0):
            pass
    assert target.read_text() == "precious\n"


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP])
def test_no_working_flock_refuses_to_run_unless_the_risk_is_accepted(tmp_path, monkeypatch,
                                                                     code):
    from dml_core.core import locks

    def no_flock(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    monkeypatch.delenv(locks.ALLOW_UNLOCKED_ENV, raising=False)
    with pytest.raises(locks.NoFlockError) as err:
        with locks.FileLock(tmp_path / ".lock", what="the run folder x", timeout=0):
            pass
    msg = str(err.value)
    assert "does not support file locks" in msg and "DML_ALLOW_UNLOCKED=1" in msg
    assert "--allow-unlocked" in msg
    said = []
    monkeypatch.setenv(locks.ALLOW_UNLOCKED_ENV, "1")
    with locks.FileLock(tmp_path / "b" / ".lock", timeout=0, say=said.append):
        pass
    assert said and "UNLOCKED" in said[0]


def test_the_batch_refuses_without_flock_and_its_flag_accepts_the_risk(tmp_path, monkeypatch,
                                                                      capsys):
    from dml_core.batch import driver
    from dml_core.core import locks

    monkeypatch.setattr(locks.fcntl, "flock",
                        lambda fd, op: (_ for _ in ()).throw(OSError(errno.ENOLCK, "no locks")))
    monkeypatch.setenv(locks.ALLOW_UNLOCKED_ENV, "0")  # restored after the test
    monkeypatch.setattr(driver, "execute_run", lambda task: {"status": "done", "elapsed_s": 0.0})
    monkeypatch.setattr(driver, "_check_kernel", lambda name: None)
    args = ["--profile", "smoke", "--only", "00_prepare_data", "--runs-root", str(tmp_path),
            "--no-progress"]
    assert driver.main(args) == 2
    assert "does not support file locks" in capsys.readouterr().err
    assert driver.main(args + ["--allow-unlocked"]) == 0
    assert os.environ[locks.ALLOW_UNLOCKED_ENV] == "1"


# ------------------------------------------------------------------------ Slurm settings
def test_slurm_settings_cannot_add_lines_to_the_job_script():
    from dml_core.profiles.slurm import parse_sbatch_flags, slurm_options, validate_slurm_block

    with pytest.raises(ValueError, match="control character"):
        parse_sbatch_flags(["account=abc\ntouch X #"])
    with pytest.raises(ValueError, match="letters, digits"):
        parse_sbatch_flags(["acc;ount=abc"])
    assert parse_sbatch_flags(["account=abc", "--exclusive"]) == {"account": "abc",
                                                                   "exclusive": True}
    problems = validate_slurm_block({"sbatch": {"account": "a\rb", "x y": 1, "qos": "high"},
                                     "partition": "gpu\n#SBATCH --x", "setup": ["a\nb"]})
    assert len(problems) == 4, problems
    with pytest.raises(ValueError, match="control character"):
        slurm_options({}, sbatch={"account": "abc\ntouch X"})


# ------------------------------------------------------------------------ images and indexes
def test_decompression_bombs_and_decode_errors_are_image_load_errors(tmp_path, monkeypatch):
    from dml_core.data.datasets import ImageLoadError, load_image
    from dml_core.evaluation.visualize import _load
    from dml_core.study.query import embed_image

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4,096 pixels > 2 × 100: a "bomb"
    with pytest.raises(ImageLoadError, match="DecompressionBombError") as err:
        load_image(path)
    assert str(path) in str(err.value)
    with pytest.raises(ImageLoadError, match="big.png"):
        embed_image(lambda x: x, lambda im: torch.zeros(3), path)
    assert _load(path, 16).shape == (16, 16, 3)  # a grey tile, not an exception
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    with pytest.raises(ImageLoadError, match="garbage.jpg"):
        load_image(garbage)


def test_an_unreadable_csv_index_is_an_integrity_error_that_preparation_heals(tmp_path):
    from dml_core.data.index import IndexIntegrityError, read_index
    from dml_core.data.preparation import prepare
    from tools.rehearsal import make_cub_raw

    make_cub_raw(tmp_path / "cub", classes=(1, 2, 101, 102), per_class=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = prepare("cub", tmp_path, verbose=False)
        good = index.read_bytes()
        lines = good.split(b"\r\n")
        lines[1] = b"a" * 200_000 + lines[1]  # a field over csv's limit: csv.Error
        index.write_bytes(b"\r\n".join(lines))
        for verify in (True, False):
            with pytest.raises(IndexIntegrityError, match="--force"):
                read_index(index, verify=verify)
        prepare("cub", tmp_path, verbose=False)  # heals it
    assert index.read_bytes() == good


@pytest.mark.parametrize("entry", ["/etc/hostname", "../outside.jpg", "x_final/../../x.jpg"])
def test_raw_annotation_paths_outside_the_data_root_are_refused(tmp_path, entry):
    from dml_core.data.preparation import prepare
    from tools.rehearsal import make_sop_raw

    make_sop_raw(tmp_path / "sop")
    listing = tmp_path / "sop" / "Ebay_train.txt"
    lines = listing.read_text().splitlines()
    first = lines[1].split()
    (tmp_path / "outside.jpg").write_bytes((tmp_path / "sop" / first[3]).read_bytes())
    lines[1] = " ".join(first[:3] + [entry])  # 'image_id class_id super_class_id path'
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="absolute or leave the folder") as err:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepare("sop", tmp_path, verbose=False, verify_images="none")
    assert entry in str(err.value) and not (tmp_path / "sop" / "index.csv").exists()
