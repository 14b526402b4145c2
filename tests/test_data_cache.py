"""The cached input pipeline gives the PIL pipeline's tensors, bit for bit, where its cached
prefix is the whole deterministic part (squash/cgd train, every test split, the toy)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dml_core.data import RetrievalDataset
from dml_core.data.cache import CachedDataset, cache_bytes, cached_split
from dml_core.training.engine import device_transform
from dml_core.data.preparation import prepare
from dml_core.data.transforms import build_transform
from tools.rehearsal import make_cub_raw, photo


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_cub_raw(root / "cub", classes=(1, 2, 101, 102), per_class=3, size=(90, 70), painter=photo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare("cub", root, verbose=False)
    return root


def _recipe(style, backbone, crop):
    return {"dataset": "cub", "transform": style, "backbone": backbone, "crop": crop,
            "crop_size": 40, "resize_size": 48, "hflip": True, "rrc_scale": [0.08, 1.0]}


@pytest.mark.parametrize("style,train", [("squash_random_crop", True), ("cgd", True),
                                         ("squash_random_crop", False), ("cgd", False),
                                         ("random_resized_crop", False),
                                         ("random_resized_crop", True)])
@pytest.mark.parametrize("backbone,crop", [("resnet50", False), ("bninception", True)])
def test_cached_path_is_bit_identical_to_pil(cub_root, style, train, backbone, crop):
    recipe = _recipe(style, backbone, crop)
    split = "train" if train else "test"
    pil = RetrievalDataset("cub", split, crop=crop, data_root=cub_root,
                           transform=build_transform(style, train, backbone, 40, 48))
    cached = cached_split(recipe, split, train, cub_root, device_normalize=True, workers=2)
    assert isinstance(cached, CachedDataset) and len(cached) == len(pil)
    for i in range(len(pil)):
        for seed in (0, 1, 2):
            torch.manual_seed(seed)
            a, la = pil[i]
            torch.manual_seed(seed)
            b, lb = cached[i]
            assert b.dtype == torch.uint8 and la == lb
            b = cached.device_transform(b[None])[0]
            assert torch.equal(a, b), (style, train, backbone, i, seed, (a - b).abs().max())


def test_random_resized_crop_caches_a_capped_copy_and_loader_hook(cub_root):
    recipe = _recipe("random_resized_crop", "resnet50", False)
    ds = cached_split(recipe, "train", True, cub_root, cap=32, workers=1)
    assert max(ds.cache[0].shape[:2]) <= 42 and min(ds.cache[0].shape[:2]) == 32
    x, _ = ds[0]
    assert x.shape == (3, 40, 40) and x.dtype == torch.uint8
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    batch = device_transform(loader)(next(iter(loader))[0])
    assert batch.dtype == torch.float32 and batch.shape == (4, 3, 40, 40)
    # the cache is reused (same key), and a different prefix gets its own folder
    assert cached_split(recipe, "train", True, cub_root, cap=32).cache.folder == ds.cache.folder
    assert cached_split(recipe, "train", True, cub_root, cap=0).cache.folder != ds.cache.folder


def test_cache_bytes_per_style():
    assert cache_bytes([(500, 375)], "squash_random_crop", True, 224, 256) == 256 * 256 * 3
    assert cache_bytes([(500, 375)], "random_resized_crop", False, 224, 256) == 224 * 224 * 3
    assert cache_bytes([(500, 375)], "random_resized_crop", True, 224, 256, cap=256) == 341 * 256 * 3
    assert cache_bytes([(500, 375)], "random_resized_crop", True, 224, 256) == 500 * 375 * 3
    assert np.isclose(cache_bytes([(90, 70)], "toy", True), 90 * 70 * 3)


def test_workers_follow_the_cpus_granted(monkeypatch):
    from dml_core.data.loaders import MAX_WORKERS, auto_num_workers

    assert auto_num_workers(1) == auto_num_workers(2) == 0
    assert auto_num_workers(16) == 15 and auto_num_workers(128) == MAX_WORKERS
    monkeypatch.setenv("DML_NUM_WORKERS", "3")  # the batch runner's share per job
    assert auto_num_workers() == 3
    monkeypatch.setenv("DML_NUM_WORKERS", "many")
    with pytest.raises(ValueError, match="DML_NUM_WORKERS"):
        auto_num_workers()


def test_concurrent_builders_share_one_cache(cub_root):
    """Two processes asking for the same cache at once: one builds, the other waits for it."""
    import subprocess
    import sys

    code = ("import sys; from dml_core.data.cache import cached_split\n"
            "r = {'dataset': 'cub', 'transform': 'cgd', 'backbone': 'googlenet', 'crop': False,\n"
            "     'crop_size': 40, 'resize_size': 48}\n"
            "ds = cached_split(r, 'train', True, sys.argv[1], workers=1)\n"
            "print(int(ds.cache[len(ds) - 1].sum()))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(cub_root)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and outs[0] == outs[1] and outs[0]
