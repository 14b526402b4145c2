"""Toy figures from synthetic histories (no training): 2-D and the 3-D unit-sphere variant."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from dml_core.report import toy_figures as tf  # noqa: E402


def fake_history(dim: int, learnable: bool, epochs: int = 2, steps: int = 3) -> dict:
    g = torch.Generator().manual_seed(dim + learnable)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, dim, generator=g), dim=-1)  # noqa: E731
    k = epochs + 1
    return {"variant": "learnable" if learnable else "moving", "source": "digits", "momentum": 0.5,
            "temperature": 0.03, "learnable": learnable, "feature_dim": dim,
            "train_class_names": [f"c{i}" for i in range(7)],
            "test_class_names": ["a", "b", "c"],
            "epochs": torch.arange(k), "proxies": unit(k, 7),
            "train_embeddings": unit(k, 21), "train_labels": torch.arange(21) % 7,
            "test_embeddings": unit(k, 9), "test_labels": torch.arange(9) % 3,
            "test_recall": torch.linspace(0.3, 0.6, k),
            "train_loss": torch.tensor([float("nan")] + [1.0] * epochs),
            "train_accuracy": torch.tensor([float("nan")] + [0.5] * epochs),
            "trail": unit(1 + epochs * steps, 7),
            "trail_epoch": torch.tensor([0] + [e for e in range(1, k) for _ in range(steps)])}


@pytest.mark.parametrize("dim", [2, 3])
def test_make_toy_figures(tmp_path, dim):
    hs = {"moving": fake_history(dim, False), "learnable": fake_history(dim, True)}
    sweep = [{"momentum": 0.1, "final_r1": 0.4, "best_r1": 0.5},
             {"momentum": 0.9, "final_r1": 0.3, "best_r1": 0.35}]
    extra = tmp_path / "repo_figures"
    made = tf.make_toy_figures(hs, tmp_path / "figs", sweep=sweep, extra_dirs=[extra])
    sfx = "_3d" if dim == 3 else ""
    assert set(made) == {"toy_embeddings", "toy_proxy_evolution", "toy_recall",
                         "toy_momentum_sweep", "toy_proxies_gif"}
    for name in ("toy_embeddings", "toy_proxy_evolution", "toy_recall", "toy_momentum_sweep"):
        for ext in ("png", "pdf"):
            assert (tmp_path / "figs" / f"{name}{sfx}.{ext}").stat().st_size > 1000
            assert (extra / f"{name}{sfx}.{ext}").is_file()
    from PIL import Image

    with Image.open(tmp_path / "figs" / f"toy_proxies{sfx}.gif") as im:
        assert im.n_frames == 7  # one frame per step (initial + 2 epochs x 3 steps)


def test_embedding_figure_draws_proxy_arrows_and_names_the_source():
    h = fake_history(2, False)
    fig = tf.plot_toy_embeddings({"moving": h})
    ax_train = fig.axes[0]
    assert len(ax_train.texts) >= 7  # one annotate arrow per proxy
    assert "digits stand-in" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="not recorded"):
        tf.plot_toy_embeddings({"moving": h}, epoch=9)
