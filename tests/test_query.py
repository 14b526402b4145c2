"""Retrieval for any image (dml_core.study.query) on a run of the session's smoke batch."""
from __future__ import annotations

import pytest
import torch

from dml_core.study.query import RetrievalError, example_image, retrieve_image


@pytest.mark.parametrize("run_id", ["01_normsoftmax", "04_cgd"])
def test_a_gallery_image_retrieves_itself_with_its_saved_embedding(smoke, run_id):
    run_dir = smoke["profile_dir"] / run_id
    image = example_image(run_dir)
    res = retrieve_image(run_dir, image, k=5)
    assert list(res.table["rank"]) == [1, 2, 3, 4, 5]
    assert res.table["path"].iloc[0] == image
    assert res.table["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    assert res.table["similarity"].is_monotonic_decreasing
    saved = torch.load(run_dir / "features" / "best.pt", weights_only=True)
    i = saved["paths"].index(image)
    # the query goes through the recipe's test transform and the best weights: same embedding
    assert torch.allclose(saved["features"][i], res.embedding, atol=1e-4)
    assert res.figure.axes and "your image" in res.figure.axes[0].get_xlabel()
    assert "<table" in res._repr_html_()


def test_retrieval_errors_name_the_problem(smoke, tmp_path):
    run_dir = smoke["profile_dir"] / "01_normsoftmax"
    with pytest.raises(RetrievalError, match="no image file"):
        retrieve_image(run_dir, tmp_path / "missing.jpg")
    with pytest.raises(RetrievalError, match="not a finished training run"):
        retrieve_image(tmp_path, example_image(run_dir))
    with pytest.raises(RetrievalError, match="k must be in"):
        retrieve_image(run_dir, example_image(run_dir), k=0)


def test_query_gallery_runs_search_the_gallery_part(smoke, tmp_path):
    """In-shop saves query features as ``features`` and the gallery as ``gallery_*``: an image is
    searched in the gallery (a run whose saved gallery differs from its queries)."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(smoke["profile_dir"] / "01_normsoftmax", run_dir)
    path = run_dir / "features" / "best.pt"
    saved = torch.load(path, weights_only=True)
    n = len(saved["paths"])
    gal = list(range(n // 2, n))  # the second half is the gallery, the first half the queries
    saved.update(gallery_features=saved["features"][gal], gallery_labels=saved["labels"][gal],
                 gallery_paths=[saved["paths"][i] for i in gal])
    for key in ("features", "labels"):
        saved[key] = saved[key][: n // 2]
    saved["paths"] = saved["paths"][: n // 2]
    torch.save(saved, path)
    image = saved["gallery_paths"][0]
    res = retrieve_image(run_dir, image, k=3)
    assert res.gallery_size == len(gal)
    assert set(res.table["path"]) <= set(saved["gallery_paths"])
    assert res.table["path"].iloc[0] == image  # a gallery image still finds itself first
