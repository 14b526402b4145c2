"""The demo's pretrained stand-in trunk (dml_core.models.standin): what its source task sees, and
that it is saved, found, checked and loaded like ImageNet weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dml_core.data.demo import SIZE_RANGE, demo_plan, scan_role
from dml_core.models import standin
from dml_core.models.backbones import (CorruptWeightsError, MissingWeightsError, build_backbone,
                                       find_weights, pretraining_source)


def test_source_task_never_sees_a_test_or_validation_scan_nor_a_test_class():
    digits = load_digits()
    plan = standin.source_plan(digits.target)
    assert len(plan) == standin.NUM_CLASSES * standin.IMAGES_PER_DIGIT
    # every source image is one scan of its label's digit: a single digit, never a two-digit number
    assert all(digits.target[scan] == digit for digit, scan in plan)
    assert {digit for digit, _ in plan} == set(range(10))
    # compared on the pixels of the scans, not on their indices or role names
    pixels = {digits.images[scan].tobytes() for _, scan in plan}
    demo = demo_plan(digits.target)
    unseen = {digits.images[s].tobytes() for *_, a, b, split in demo if split in ("test", "val")
              for s in (a, b)}
    assert len(unseen) > 700 and not pixels & unseen
    assert all(scan_role(scan) == "train" for _, scan in plan)
    # the rendered source images hold one digit: narrower than the narrowest two-digit number
    images, labels = standin.source_images(plan[::97])
    ink_columns = (images.max(axis=3) > 128).any(axis=1)  # (N, width): columns holding ink
    widths = [int(np.ptp(np.flatnonzero(c))) + 1 for c in ink_columns]
    two_digits = 2 * SIZE_RANGE[0] * standin.RESIZE / 48  # 2 digits of the smallest size, in px
    assert max(widths) < 0.8 * two_digits, widths
    assert list(labels) == [d for d, _ in plan[::97]]


@pytest.fixture()
def tiny_standin(tmp_path, monkeypatch):
    """A stand-in built in seconds (50 source images, 2 steps) into a private torch cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return standin.build_standin(steps=2, images_per_digit=5, say=lambda *_: None)


def test_standin_is_saved_like_torchvision_weights_and_loads_through_the_same_path(tiny_standin):
    import hashlib

    import torchvision

    path = tiny_standin
    assert path.parent == standin.standin_files(path.parent)[0].parent
    assert path.name.startswith(f"{standin.FILE_STEM}-") and path.suffix == ".pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(path.stem.rsplit("-", 1)[1])
    state = torch.load(path, weights_only=True)
    assert set(state) == set(torchvision.models.resnet18(num_classes=10).state_dict())
    assert pretraining_source("demo") == "digits" and pretraining_source("cub") == "imagenet"
    assert find_weights("resnet18", "digits") == path
    trunk = build_backbone("resnet18", True, source="digits")
    assert torch.equal(trunk.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(trunk.bn1.running_mean, state["bn1.running_mean"])
    demo_trunk = build_backbone("resnet18_s2", True, source="digits")  # what the demo recipes build
    assert find_weights("resnet18_s2", "digits") == path
    assert torch.equal(demo_trunk.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])


def test_standin_build_is_deterministic_and_pinned_against_the_cpu_s_instruction_set(
        tiny_standin, tmp_path, monkeypatch):
    again = standin.build_standin(tmp_path / "again", steps=2, images_per_digit=5,
                                  say=lambda *_: None)
    assert again.name == tiny_standin.name
    assert again.read_bytes() == tiny_standin.read_bytes()
    # a CPU with fewer instructions, emulated: oneDNN and MKL limited to AVX2 and ATen asked
    # for it (each alone changes the unpinned build's bytes on an AVX-512 CPU): the same bytes
    for key, value in {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                       "ATEN_CPU_CAPABILITY": "avx2"}.items():
        monkeypatch.setenv(key, value)
    lesser = standin.build_standin(tmp_path / "lesser", steps=2, images_per_digit=5,
                                   say=lambda *_: None)
    assert lesser.read_bytes() == tiny_standin.read_bytes()


def test_two_builders_of_one_torch_cache_train_once(tmp_path):
    """Two data roots (or test workers) sharing a torch cache: the second builder waits on the
    cache's lock and takes the file the first wrote."""
    first = standin.start_standin_build(tmp_path, steps=2, images_per_digit=5, say=lambda *_: None)
    second = standin.start_standin_build(tmp_path, steps=2, images_per_digit=5,
                                         say=lambda *_: None)
    assert first.wait() == second.wait() == standin.standin_files(tmp_path)[0]
    trained = [any("pretraining" in line for line in b.lines) for b in (first, second)]
    reused = [any("built meanwhile" in line for line in b.lines) for b in (first, second)]
    assert sorted(trained) == [False, True] and reused == [not t for t in trained]


def test_the_standin_is_never_trained_off_the_pinned_path(tmp_path):
    with pytest.raises(RuntimeError, match="pinned numeric path.*build_standin"):
        standin._build_here(tmp_path, steps=1, images_per_digit=1)  # this process: not pinned
    blocked = tmp_path / "a file"
    blocked.write_text("")
    with pytest.raises(RuntimeError, match="stand-in weights failed.*last lines") as err:
        standin.build_standin(blocked, steps=1, images_per_digit=1, say=lambda *_: None)
    assert "Error" in str(err.value)  # the builder's own error, passed on
    assert not list(tmp_path.glob("**/*.pth"))


@pytest.mark.parametrize("damage", ["truncated", "one byte changed"])
def test_a_damaged_standin_is_a_corrupt_weights_error(tiny_standin, damage):
    from dml_core.methods import build_method
    from dml_core.methods.recipes import demo_recipe

    data = bytearray(tiny_standin.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # inside a tensor: the file still loads, only the checksum can tell
        data[len(data) // 2] ^= 0xFF
    tiny_standin.write_bytes(bytes(data))
    with pytest.raises(CorruptWeightsError, match=f"{tiny_standin.name}.*Delete it"):
        build_backbone("resnet18", True, source="digits")
    with pytest.raises(CorruptWeightsError):  # a demo recipe reaches it through its method
        build_method(demo_recipe("proxy_anchor"), 40, device=torch.device("cpu"))


def test_a_missing_standin_says_how_it_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="python -m dml_core.data demo"):
        build_backbone("resnet18", True, source="digits")
    with pytest.raises(ValueError, match="resnet18"):
        find_weights("resnet50", "digits")


def test_ensure_standin_builds_once_under_the_demo_lock(tmp_path, monkeypatch):
    calls = []

    def fake_build(folder, say=print):
        calls.append(folder)
        path = folder / f"{standin.FILE_STEM}-00000000.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        return path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(standin, "build_standin", fake_build)
    first = standin.ensure_standin(tmp_path / "data", verbose=False)
    assert standin.ensure_standin(tmp_path / "data", verbose=False) == first
    assert len(calls) == 1
    assert (tmp_path / "data" / "demo" / ".prepare.lock").exists()  # the data set's lock


def test_demo_preparation_builds_the_standin_beside_its_images_and_cancels_it_on_failure(
        tmp_path, monkeypatch):
    from dml_core.data import preparation

    events = []

    class FakeBuild:
        def wait(self):
            events.append("wait")
            return tmp_path / "weights.pth"

        def cancel(self):
            events.append("cancel")

    def fake_start(**_):
        events.append("start")
        return FakeBuild()

    def fake_prepare(*_, **__):
        events.append("images")
        return tmp_path / "index.csv"

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(standin, "start_standin_build", fake_start)
    monkeypatch.setattr(preparation, "_prepare", fake_prepare)
    preparation.prepare("demo", tmp_path / "data", with_standin=True, verbose=False)
    assert events == ["start", "images", "wait"]  # started first, waited for after the images
    events.clear()
    preparation.prepare("demo", tmp_path / "data", verbose=False)  # not asked: not built
    assert events == ["images"]

    def failing_prepare(*_, **__):
        events.append("images")
        raise ValueError("broken raw files")

    events.clear()
    monkeypatch.setattr(preparation, "_prepare", failing_prepare)
    with pytest.raises(ValueError, match="broken raw files"):
        preparation.prepare("demo", tmp_path / "data", with_standin=True, verbose=False)
    assert events == ["start", "images", "cancel"]
    events.clear()
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / f"{standin.FILE_STEM}-00000000.pth").write_bytes(b"x")  # present: not rebuilt
    monkeypatch.setattr(preparation, "_prepare", fake_prepare)
    preparation.prepare("demo", tmp_path / "data", with_standin=True, verbose=False)
    assert events == ["images"]
