"""Bad data and faults get clear errors (the smaller items of the robustness issue)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from data_factories import make_cub_raw


# ---------------------------------------------------------------- pretrained weights
class NotWeights:
    pass


@pytest.mark.parametrize("content", ["garbage", "pickled object"])
def test_weights_that_do_not_load_name_the_file_and_its_checksum(tmp_path, monkeypatch, content):
    from dml_core.models import backbones

    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fname = backbones.BACKBONES["resnet18"].weight_files[0]
    path = folder / fname
    if content == "garbage":
        path.write_bytes(b"\x80\x02not a checkpoint")
    else:  # a full pickle would need the unpickler that runs code: refused, never executed
        torch.save({"conv1.weight": NotWeights()}, path)
    prefix = backbones.expected_sha256_prefix(path)
    assert prefix and fname.split("-")[-1].startswith(prefix)
    with pytest.raises(backbones.CorruptWeightsError) as err:
        backbones.build_backbone("resnet18", True)
    assert str(path) in str(err.value) and prefix in str(err.value)


# ---------------------------------------------------------------- recipes
def test_a_misspelled_recipe_key_gets_the_nearest_suggested():
    from dml_core.methods.recipes import RecipeError, get_recipe

    with pytest.raises(RecipeError, match=r"'epohcs' -> did you mean 'epochs'\?"):
        get_recipe("normsoftmax", "demo", "resnet18_s2", epohcs=3)


@pytest.mark.parametrize("key,value", [("epochs", 0), ("epochs", -2), ("crop_size", 0)])
def test_non_positive_epochs_or_crop_size_are_recipe_errors(key, value):
    from dml_core.methods.recipes import RecipeError, get_recipe

    with pytest.raises(RecipeError, match=f"{key}={value}: expected an integer >= 1"):
        get_recipe("normsoftmax", "demo", "resnet18_s2", **{key: value})


# ---------------------------------------------------------------- evaluation inputs
def test_evaluation_input_errors_and_the_singleton_warning():
    from dml_core.evaluation.retrieval import recall_at_k

    x = torch.randn(6, 4)
    with pytest.raises(TypeError, match="strings.*map class names to ints"):
        recall_at_k(x, np.array(["a", "a", "b", "b", "c", "c"]), [1])
    with pytest.raises(TypeError, match="got the string '12'"):
        recall_at_k(x, torch.tensor([0, 0, 1, 1, 2, 2]), "12")
    with pytest.raises(ValueError, match="integers ≥ 1, got 1.9"):
        recall_at_k(x, torch.tensor([0, 0, 1, 1, 2, 2]), [1.9])
    assert recall_at_k(x, torch.tensor([0, 0, 1, 1, 2, 2]), [2.0]).keys() == {2}
    with pytest.warns(UserWarning, match="no query has a positive"):
        recall_at_k(x, torch.arange(6), [1])
    with pytest.warns(UserWarning, match="no query label occurs in the gallery"):
        recall_at_k(x, torch.zeros(6, dtype=torch.long), [1], torch.randn(3, 4), torch.ones(3, dtype=torch.long))


# ---------------------------------------------------------------- prepare
def test_prepare_cli_prepares_every_named_set_and_reports_all_failures(tmp_path, capsys):
    from dml_core.data.preparation import main

    make_cub_raw(tmp_path / "cub")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        code = main(["stl10", "cub", "car", "--data-root", str(tmp_path), "--verify-images", "none"])
    err = capsys.readouterr().err
    assert code == 1
    assert (tmp_path / "cub" / "index.csv").is_file()  # prepared although stl10 failed before it
    assert "error: stl10:" in err and "error: car:" in err and "2 of 3 data set(s) failed: stl10, car" in err


def test_a_missing_data_root_is_named_as_such(tmp_path):
    from dml_core.data import prepare

    with pytest.raises(FileNotFoundError, match=r"the data root .*nowhere does not exist"):
        prepare("cub", tmp_path / "nowhere")


def test_common_mis_layouts_get_a_hint(tmp_path):
    from dml_core.data import MissingRawDataError, prepare

    make_cub_raw(tmp_path / "cub" / "CUB_200_2011")
    with pytest.raises(MissingRawDataError, match="Hint: found a nested CUB_200_2011/ folder"):
        prepare("cub", tmp_path, verbose=False)
    for name in ("devkit", "cars_train"):
        (tmp_path / "car" / name).mkdir(parents=True)
    with pytest.raises(MissingRawDataError, match=r"Hint: found the Cars devkit layout \(devkit, cars_train\)"):
        prepare("car", tmp_path, verbose=False)


def test_split_size_warnings_print_without_a_source_line(tmp_path):
    from dml_core.data import prepare

    make_cub_raw(tmp_path / "cub")
    with pytest.warns(UserWarning) as caught:
        prepare("cub", tmp_path, verbose=False, verify_images="none")
    w = caught[0]
    text = warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
    assert text == "dml_core.data:0: UserWarning: cub train: 6 images, the standard split has 5864\n"


def test_the_demo_says_what_it_removes(tmp_path):
    from dml_core.data.demo import ANNOTATION_FILES, remove_stale_demo

    (tmp_path / "images" / "001.number_00").mkdir(parents=True)
    (tmp_path / "images" / "001.number_00" / "x.png").write_bytes(b"x")
    assert remove_stale_demo(tmp_path) == "an unfinished generated demo (an interrupted preparation)"
    assert not (tmp_path / "images").exists()
    for name in ANNOTATION_FILES:
        (tmp_path / name).write_text("1 x\n")
    assert "version 1" in remove_stale_demo(tmp_path)
    assert remove_stale_demo(tmp_path) is None


# ---------------------------------------------------------------- images
def test_an_unreadable_image_is_named_with_the_fix_in_training_and_evaluation(tmp_path):
    from dml_core.data import RetrievalDataset, make_eval_loader, prepare
    from dml_core.data.datasets import ImageLoadError

    make_cub_raw(tmp_path / "cub")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        prepare("cub", tmp_path, verbose=False, verify_images="none")
    ds = RetrievalDataset("cub", "test", data_root=tmp_path)
    bad = ds.paths[1]
    with open(bad, "r+b") as f:
        f.truncate(60)
    with pytest.raises(ImageLoadError) as err:
        ds[1]
    assert bad in str(err.value) and "--force --verify-images full" in str(err.value)
    with pytest.raises(ImageLoadError, match="cannot read image"):
        for _ in make_eval_loader(ds, 4, num_workers=0):
            pass


def test_the_default_full_check_catches_a_jpeg_truncated_mid_file(tmp_path):
    from PIL import Image

    from dml_core.data.verify import check_images

    rng = np.random.default_rng(0)
    path = tmp_path / "x.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert check_images([path], "header", progress=False)[0][0] is None  # the old default passed it
    error, _ = check_images([path], progress=False)[0]
    assert error is not None and "truncated" in error
