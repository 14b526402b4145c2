"""One writer at a time (dml_core.core.locks): the holder is named, a dead holder blocks nobody, and
two concurrent preparations of the demo do not delete each other's files."""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
import warnings

import pytest

from dml_core.core.locks import FileLock, LockHeldError, read_holder


def _hold(path, ready, release):
    with FileLock(path, what="the test resource"):
        ready.set()
        release.wait(30)


def _hold_and_die(path, ready):
    FileLock(path).acquire()
    ready.set()
    os._exit(0)  # a kill: no release


def test_second_writer_is_refused_or_waits_and_the_holder_is_named(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    path = tmp_path / "x.lock"
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(str(path), ready, release))
    child.start()
    try:
        assert ready.wait(60)
        with pytest.raises(LockHeldError, match=f"pid {child.pid} on host"):
            FileLock(path, what="the test resource", timeout=0).acquire()
        with pytest.raises(LockHeldError, match="after waiting"):
            FileLock(path, timeout=0.3, poll=0.05).acquire()
        said = []
        t0 = time.monotonic()
        threading.Timer(0.5, release.set).start()
        with FileLock(path, timeout=None, poll=0.05, say=said.append):  # waits, then holds it
            assert read_holder(path)["pid"] == os.getpid()
        assert time.monotonic() - t0 >= 0.4 and f"pid {child.pid}" in said[0]
    finally:
        release.set()
        child.join(30)


def test_a_lock_of_a_dead_process_is_taken_over(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    path = tmp_path / "x.lock"
    ready = ctx.Event()
    child = ctx.Process(target=_hold_and_die, args=(str(path), ready))
    child.start()
    child.join(60)
    said = []
    lock = FileLock(path, timeout=0, say=said.append).acquire()
    try:
        assert lock.stale and lock.stale["pid"] == child.pid
        assert "died without releasing" in said[0]
    finally:
        lock.release()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with FileLock(tmp_path / "x.lock", timeout=0):
        with FileLock(tmp_path / "x.lock", timeout=0):
            pass
        assert read_holder(tmp_path / "x.lock")["pid"] == os.getpid()


def _prepare_demo(root, queue):
    from dml_core.data import demo, prepare

    demo.IMAGES_PER_CLASS = 1  # forked: a small demo (150 images) keeps the test short
    demo.VAL_IMAGES_PER_CLASS = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            prepare("demo", root, verbose=False)
        queue.put("ok")
    except Exception as exc:  # noqa: BLE001
        queue.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_concurrent_demo_preparations_do_not_delete_each_others_files(tmp_path):
    from dml_core.data import RetrievalDataset

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    first = ctx.Process(target=_prepare_demo, args=(str(tmp_path), queue))
    first.start()
    images = tmp_path / "demo" / "images"
    t0 = time.monotonic()
    while not images.exists() and time.monotonic() - t0 < 60:  # the first is writing images
        time.sleep(0.01)
    second = ctx.Process(target=_prepare_demo, args=(str(tmp_path), queue))
    second.start()
    first.join(120)
    second.join(120)
    assert [queue.get(timeout=5), queue.get(timeout=5)] == ["ok", "ok"]
    assert len(RetrievalDataset("demo", "test", data_root=tmp_path)) == 50
