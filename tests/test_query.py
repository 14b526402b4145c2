"""Retrieval for any image (dml_core.query) on a run of the session's smoke batch."""
from __future__ import annotations

import pytest
import torch

from dml_core.query import RetrievalError, example_image, retrieve_image


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
