"""Transforms (shapes, normalisation, BN-Inception BGR/255), samplers' semantics, loaders."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from dml_core.data import (MPerClassBatchSampler, PMLMPerClassBatchSampler, ShuffleBatchSampler,
                           build_transform, make_eval_loader, make_train_loader)
from dml_core.data.transforms import STYLES


@pytest.mark.parametrize("style,train,expected", [
    ("squash_random_crop", True, (3, 24, 24)), ("squash_random_crop", False, (3, 24, 24)),
    ("cgd", True, (3, 24, 24)), ("cgd", False, (3, 24, 24)),
    ("random_resized_crop", True, (3, 24, 24)), ("random_resized_crop", False, (3, 24, 24)),
    ("toy", True, (3, 30, 50)), ("toy", False, (3, 30, 50)),
])
def test_transform_shapes(style, train, expected):
    t = build_transform(style, train, "resnet50", crop_size=24, resize_size=28)
    assert tuple(t(Image.new("RGB", (50, 30))).shape) == expected


def test_hflip_off_never_mirrors_and_rrc_scale_reaches_the_crop():
    img = Image.new("RGB", (32, 32), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 8, 32))  # white strip on the left
    for style in ("squash_random_crop", "cgd", "random_resized_crop", "toy"):
        steps = build_transform(style, True, "resnet50", 32, 32, hflip=False).transforms
        assert not any(isinstance(s, T.RandomHorizontalFlip) for s in steps), style
        flipped = build_transform(style, True, "resnet50", 32, 32).transforms
        assert any(isinstance(s, T.RandomHorizontalFlip) for s in flipped), style
    t = build_transform("toy", True, "resnet50", hflip=False)
    assert all(t(img)[0, :, 0].mean() > 1.5 for _ in range(20))  # the strip stays on the left
    (rrc,) = [s for s in build_transform("random_resized_crop", True, "resnet50", 32, 36,
                                         rrc_scale=(0.7, 1.0)).transforms
              if isinstance(s, T.RandomResizedCrop)]
    assert rrc.scale == (0.7, 1.0)


def test_cgd_test_resizes_without_crop_and_squash_centre_crops():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 4, 20))  # white strip on the left edge
    cgd = build_transform("cgd", False, "resnet50", crop_size=20, resize_size=30)(img)
    squash = build_transform("squash_random_crop", False, "resnet50", crop_size=20, resize_size=30)(img)
    assert cgd[0, :, 0].mean() > 1.5  # the edge strip survives a plain resize
    assert squash[0, :, 0].mean() < 0  # the centre crop cuts it off


def test_imagenet_normalisation_and_greyscale():
    t = build_transform("toy", False, "resnet50")
    out = t(Image.new("L", (8, 8), 255))
    assert out.shape == (3, 8, 8)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out[:, 0, 0], expected, atol=1e-5)
    array = np.zeros((8, 8, 3), dtype=np.uint8)  # uint8 arrays (the toy data) work too
    assert t(array).shape == (3, 8, 8)


def test_bninception_bgr_255():
    t = build_transform("toy", False, "bninception")
    out = t(Image.new("RGB", (4, 4), (10, 20, 30)))
    # BGR order, 0..255 scale, caffe means (104, 117, 128), std 1
    assert torch.allclose(out[:, 0, 0], torch.tensor([30 - 104.0, 20 - 117.0, 10 - 128.0]), atol=1e-3)
    with pytest.raises(ValueError, match="style"):
        build_transform("squash", True, "resnet50")
    assert set(STYLES) == {"squash_random_crop", "cgd", "random_resized_crop", "toy"}


def _labels():
    # classes 0..5 with 6 images each, class 6 with 2 images (smaller than m)
    return np.array([c for c in range(6) for _ in range(6)] + [6, 6])


def test_m_per_class_sampler_semantics():
    labels = _labels()
    sampler = MPerClassBatchSampler(labels, batch_size=8, m=3, seed=1)
    assert len(sampler) == len(labels) // 8
    saw_small_class = False
    for epoch in range(20):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert len(batch) == 8 and len(set(batch)) == 8  # no replacement
            counts = np.bincount(labels[batch], minlength=7)
            assert counts.max() <= 3 and (counts[6] in (0, 1, 2))
            # classes arrive in groups of m: only one class (the truncated last) may have < m,
            # unless it is the small class that gave all its images
            partial = [c for c in range(6) if 0 < counts[c] < 3]
            assert len(partial) <= 1
            saw_small_class |= counts[6] == 2
    assert saw_small_class
    sampler.set_epoch(3)
    a = list(sampler)
    sampler.set_epoch(4)
    b = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == a != b  # deterministic per (seed, epoch)
    other = MPerClassBatchSampler(labels, batch_size=8, m=3, seed=2)
    other.set_epoch(3)
    assert list(other) != a
    with pytest.raises(ValueError, match="cannot fill"):
        MPerClassBatchSampler([0, 0, 1, 1], batch_size=4, m=1)


def test_shuffle_sampler():
    s = ShuffleBatchSampler(10, 4, drop_last=False, seed=0)
    batches = list(s)
    assert len(s) == 3 and [len(b) for b in batches] == [4, 4, 2]
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert len(ShuffleBatchSampler(10, 4, drop_last=True)) == 2
    s.set_epoch(1)
    assert list(s) != batches
    s.set_epoch(0)
    assert list(s) == batches


def test_pml_alternative_is_seeded_and_balanced():
    labels = _labels()
    s = PMLMPerClassBatchSampler(labels, batch_size=6, m=3, seed=0)
    batches = list(s)
    assert len(batches) == len(labels) // 6
    assert all(sorted(np.bincount(labels[b]).tolist())[-2:] == [3, 3] for b in batches)
    assert list(s) == batches
    with pytest.raises(ValueError, match="batch_size % m"):
        PMLMPerClassBatchSampler(labels, batch_size=8, m=3)


class _Tiny(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.full((2,), float(i)), i


def test_loaders():
    train = make_train_loader(_Tiny(), ShuffleBatchSampler(10, 4, seed=0), num_workers=0)
    assert sorted(int(i) for _, y in train for i in y) == list(range(10))
    ev = make_eval_loader(_Tiny(), batch_size=4, num_workers=0)
    assert [y.tolist() for _, y in ev] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert ev.pin_memory == torch.cuda.is_available()
    with pytest.raises(ValueError, match="num_workers"):
        make_eval_loader(_Tiny(), 4, num_workers=-1)
