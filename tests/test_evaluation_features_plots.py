"""extract_features, evaluate_model and plot_retrievals on tiny models and data."""
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dml_core.evaluation import (default_queries, evaluate, evaluate_model, extract_features,
                                 plot_retrievals)
from dml_core.evaluation.visualize import CORRECT, QUERY, WRONG

matplotlib.use("Agg")


class TinySet(Dataset):
    def __init__(self, n=10, paths=None):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 4, 4, generator=g)
        self.labels = np.arange(n) % 3
        self.paths = paths if paths is not None else [f"/img/{i}.jpg" for i in range(n)]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i])


class TupleNet(nn.Module):
    """(B,3,4,4) → ((B,5) embedding, extra); has dropout so eval mode matters."""
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(48, 5)
        self.drop = nn.Dropout(0.9)

    def forward(self, x):
        assert not torch.is_grad_enabled()
        return self.drop(self.fc(x.flatten(1))).double(), "extra"


def test_extract_features_order_dtype_mode():
    ds, net = TinySet(), TupleNet()
    net.train()
    f = extract_features(net, DataLoader(ds, batch_size=3), progress=False)
    assert net.training  # mode restored
    assert f.features.dtype == torch.float32 and f.features.shape == (10, 5)
    assert f.labels.dtype == torch.int64 and f.labels.tolist() == list(ds.labels)
    assert f.paths == ds.paths
    with torch.no_grad():
        net.eval()
        expected = net.fc(ds.x.flatten(1))  # eval: dropout off, dataset order
    torch.testing.assert_close(f.features, expected)
    assert f.to_dict()["paths"] == ds.paths


def test_evaluate_model_self_and_query_gallery():
    net = TupleNet()
    m, feats = evaluate_model(net, {"test": DataLoader(TinySet(12), batch_size=5)}, "cub")
    assert set(feats) == {"test"} and "binary/R@8" in m
    assert m == evaluate(feats["test"].features, feats["test"].labels, "cub")
    m2, feats2 = evaluate_model(net, {"query": DataLoader(TinySet(6), batch_size=4),
                                      "gallery": DataLoader(TinySet(9), batch_size=4)}, "isc")
    assert set(feats2) == {"query", "gallery"} and "dense/R@50" in m2
    with pytest.raises(ValueError, match="keys"):
        evaluate_model(net, {"test": DataLoader(TinySet(6))}, "isc")


def test_plot_retrievals_grid_and_borders(tmp_path):
    paths = []
    for i in range(12):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 10), (i * 20, 0, 0)).save(p)
        paths.append(str(p))
    labels = np.arange(12) % 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 6)).astype(np.float32)
    x[6:] = x[:6] + 0.01 * rng.standard_normal((6, 6)).astype(np.float32)  # near-copies, other class
    queries = default_queries(labels, n=3)
    assert queries == [0, 2, 3]  # first item of classes 0, 2 (rounded middle), 3
    fig = plot_retrievals(queries, x, labels, paths, k=4)
    assert len(fig.axes) == 3 * 5
    for r, q in enumerate(queries):
        assert fig.axes[r * 5].spines["top"].get_edgecolor() == matplotlib.colors.to_rgba(QUERY)
        sims = x[q].astype(np.float64) @ x.T.astype(np.float64)
        sims[q] = -np.inf
        order = np.argsort(-sims, kind="stable")[:4]
        assert q not in order
        for c, gi in enumerate(order):
            want = CORRECT if labels[gi] == labels[q] else WRONG
            assert fig.axes[r * 5 + 1 + c].spines["left"].get_edgecolor() == matplotlib.colors.to_rgba(want)
    colors = {fig.axes[i].spines["left"].get_edgecolor() for i in range(15) if i % 5}
    assert matplotlib.colors.to_rgba(WRONG) in colors  # the duplicate (other class) is a red top-1
    fig.savefig(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0
    # the tiles: a 20 x 10 image is drawn at 20 x 20 (never upsampled to the 128-px tile), the
    # query's own pixels in its first row
    tiles = [ax.images[0].get_array() for ax in fig.axes]
    assert {t.shape for t in tiles} == {(20, 20, 3)}
    assert int(tiles[0][0, 0, 0]) == 0 and int(tiles[5][0, 0, 0]) == 2 * 20


def test_retrieval_tiles_shrink_large_images_and_keep_small_ones(tmp_path):
    from dml_core.evaluation.visualize import _load

    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.new("RGB", (300, 200), (255, 0, 0)).save(big)
    Image.new("RGB", (48, 48), (0, 255, 0)).save(small)
    assert _load(big, 128).shape == (128, 128, 3) and _load(small, 128).shape == (48, 48, 3)
    assert _load(tmp_path / "missing.png", 128).shape == (128, 128, 3)  # grey tile


def test_plot_query_gallery_and_errors():
    x, labels = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32), np.arange(5) % 2
    fig = plot_retrievals([0, 1], x, labels, ["missing"] * 5, k=3, gallery_features=x,
                          gallery_labels=labels, gallery_paths=["missing"] * 5)
    assert len(fig.axes) == 2 * 4
    with pytest.raises(ValueError, match="larger"):
        plot_retrievals([0], x, labels, ["m"] * 5, k=5)  # only 4 others in self-retrieval
    with pytest.raises(ValueError, match="paths"):
        plot_retrievals([0], x, labels, ["m"] * 4, k=2)
