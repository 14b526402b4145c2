"""Retrieval for any image: a trained run's top-K gallery images for an image file of yours
(what the original repositories' ``test.py`` offered).

:func:`retrieve_image` loads a finished run folder (:class:`dml_core.core.run_folder.RunFolder`)
— its recipe, its weights (the selected epoch's, or the resume point's) and, as the gallery, the
test features saved with the same weights (with their image paths) — embeds the
image with the recipe's test transform and returns a :class:`Retrieval`: the table of the K most
similar gallery images (rank, similarity, class, path) and a figure (the query, then the K images
with their similarity). Similarity is the inner product of the embeddings, as in the evaluation
engine (the models output L2-normalised embeddings, so it is the cosine). Runs on the CPU by
default; nothing is trained or written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dml_core.core.run_folder import CHECKPOINTS, RunFolder


class RetrievalError(ValueError):
    """The run folder or the image cannot be used; the message says what is missing."""


@dataclass
class Retrieval:
    """The answer of :func:`retrieve_image`: ``table`` (rank, similarity, label, class, path),
    ``figure`` (matplotlib), the query's embedding (D,) and where the gallery came from."""
    query: str
    table: Any          # pandas DataFrame
    figure: Any         # matplotlib Figure
    embedding: torch.Tensor
    run_dir: Path
    checkpoint: str
    gallery_size: int

    def __repr__(self) -> str:
        return (f"Retrieval(query={self.query!r}, run={self.run_dir.name!r}, "
                f"checkpoint={self.checkpoint!r}, top {len(self.table)} of {self.gallery_size})")

    def _repr_html_(self) -> str:  # a notebook shows the table under the figure
        from dml_core.report.escape import html_text

        return (f"<p>Top {len(self.table)} of {self.gallery_size} gallery images for "
                f"<code>{html_text(Path(self.query).name)}</code> (run "
                f"<code>{html_text(self.run_dir.name)}</code>, {html_text(self.checkpoint)} "
                "weights)</p>" + self.table.to_html(index=False, escape=True))


def load_run_model(run_dir: str | os.PathLike, checkpoint: str = "best",
                   device: str | torch.device = "cpu"):
    """(model in eval mode, recipe, test transform) of a finished run folder.

    ``checkpoint``: ``"best"`` (the selected epoch) or ``"last"`` (the resume point). The
    backbone is built without its pretrained file (the run's weights replace it), so no weight
    file outside the run folder is needed.
    """
    from dml_core.data.transforms import build_transform
    from dml_core.methods import build_method

    if checkpoint not in CHECKPOINTS:
        raise RetrievalError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    run = RunFolder(run_dir)
    recipe, weights = run.read_config(), run.checkpoint_file(checkpoint)
    missing = [p.relative_to(run.root).as_posix() for p, ok in
               ((run.config, recipe is not None), (weights, weights.is_file())) if not ok]
    if missing:
        raise RetrievalError(f"{run.root} is not a finished training run: {missing} missing "
                             "(train it first, e.g. with notebook 01_normsoftmax)")
    if recipe.get("method") == "toy":
        raise RetrievalError("the toy's runs embed digits in 2-D; use a training run of "
                             "notebooks 01-05")
    state = run.read_checkpoint(checkpoint)
    model_state = state["model"] if "model" in state else state["method"]["model"]
    try:
        num_classes = int((run.read_summary() or {})["num_classes"])
    except (KeyError, ValueError, TypeError):
        crit = state.get("criterion") or state.get("method", {}).get("criterion", {})
        num_classes = int(crit["proxies"].shape[0]) if "proxies" in crit else 1
    method = build_method({**recipe, "pretrained": False}, num_classes, device=device)
    method.model.load_state_dict(model_state)
    method.model.eval()
    transform = build_transform(recipe["transform"], train=False, backbone=recipe["backbone"],
                                crop_size=recipe["crop_size"], resize_size=recipe["resize_size"],
                                hflip=recipe.get("hflip", True),
                                rrc_scale=tuple(recipe.get("rrc_scale", (0.08, 1.0))))
    return method.model, recipe, transform


@torch.inference_mode()
def embed_image(model, transform, image, device: str | torch.device = "cpu") -> torch.Tensor:
    """The (D,) float32 embedding of one image (a path or a PIL image)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        from dml_core.data.datasets import load_image

        path = Path(image)
        if not path.is_file():
            raise RetrievalError(f"no image file {path}")
        image = load_image(path)  # ImageLoadError for any decoding problem (a bomb included)
    out = model(transform(image).unsqueeze(0).to(device))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out[0].float().cpu()


def _tile(path: str, size: int):
    from dml_core.evaluation.visualize import _load

    return _load(path, size)


def retrieval_figure(query, paths: list[str], scores: list[float], classes: list[str],
                     image_size: int = 128):
    """The query (dashed frame) then its gallery images with class and similarity below."""
    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np

    from dml_core.evaluation.visualize import QUERY, _frame

    k = len(paths)
    with matplotlib.rc_context({"font.size": 7}):
        fig, axes = plt.subplots(1, k + 1, figsize=(1.4 * (k + 1), 1.9), squeeze=False)
        ax = axes[0, 0]
        if isinstance(query, (str, os.PathLike)):
            ax.imshow(_tile(str(query), image_size))
        else:
            ax.imshow(np.asarray(query.convert("RGB").resize((image_size, image_size))))
        _frame(ax, QUERY, 3, "--")
        ax.set_xlabel("your image")
        for c in range(k):
            ax = axes[0, c + 1]
            ax.imshow(_tile(paths[c], image_size))
            _frame(ax, "#888888", 1)
            ax.set_xlabel(f"{c + 1}: {scores[c]:.3f}\n{classes[c]}")
        for a in axes[0]:
            a.set_xticks([])
            a.set_yticks([])
        fig.tight_layout()
    plt.close(fig)
    return fig


def retrieve_image(run_dir: str | os.PathLike, image, k: int = 8, checkpoint: str = "best",
                   device: str | torch.device = "cpu", image_size: int = 128) -> Retrieval:
    """The ``k`` gallery images of the run in ``run_dir`` most similar to ``image`` (a path or a
    PIL image). The gallery is the run's test set, as saved with the ``checkpoint`` weights
    (:meth:`RunFolder.read_features`: features (N, D), labels (N,), paths (N,)); for a data set
    evaluated as query → gallery (In-shop) it is the gallery part, the images a query is
    searched in."""
    import pandas as pd

    run_dir = Path(run_dir)
    model, _recipe, transform = load_run_model(run_dir, checkpoint, device)
    feats_file = RunFolder(run_dir).features_file(checkpoint)
    if not feats_file.is_file():
        raise RetrievalError(f"no gallery: {feats_file} is missing (the run saves it when it "
                             "evaluates the test set)")
    gallery = RunFolder(run_dir).read_features(checkpoint).searched()
    g, labels, gpaths = gallery.features, [int(v) for v in gallery.labels], gallery.paths
    if len(gpaths) != len(g):
        raise RetrievalError(f"{feats_file} holds {len(g)} features but {len(gpaths)} image paths")
    if not 1 <= k <= len(g):
        raise RetrievalError(f"k must be in [1, {len(g)}] (the gallery's size), got {k}")
    q = embed_image(model, transform, image, device)
    if q.shape[0] != g.shape[1]:
        raise RetrievalError(f"the checkpoint embeds in {q.shape[0]} dimensions but the gallery "
                             f"has {g.shape[1]}: {feats_file} is not from these weights")
    scores, idx = torch.sort(g @ q, descending=True, stable=True)
    top = [int(i) for i in idx[:k]]
    classes = [Path(gpaths[i]).parent.name for i in top]
    table = pd.DataFrame({"rank": range(1, k + 1),
                          "similarity": [round(float(s), 4) for s in scores[:k]],
                          "label": [labels[i] for i in top], "class": classes,
                          "path": [gpaths[i] for i in top]})
    fig = retrieval_figure(image, [gpaths[i] for i in top], [float(s) for s in scores[:k]],
                           classes, image_size)
    return Retrieval(query=str(image) if not hasattr(image, "size") else "(PIL image)",
                     table=table, figure=fig, embedding=q, run_dir=run_dir,
                     checkpoint=checkpoint, gallery_size=len(g))


def example_image(run_dir: str | os.PathLike, checkpoint: str = "best") -> str:
    """A test image of the run (the first saved test path that exists; a query image for
    In-shop): a stand-in for "your image" when none is given. Self-retrieval data sets
    retrieve it first, at similarity 1."""
    if checkpoint not in CHECKPOINTS:
        raise RetrievalError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    run = RunFolder(run_dir)
    feats_file = run.features_file(checkpoint)
    if not feats_file.is_file():
        raise RetrievalError(f"no gallery: {feats_file} is missing")
    for p in run.read_features(checkpoint).paths:
        if Path(p).is_file():
            return str(p)
    raise RetrievalError(f"none of the gallery images of {feats_file} is on disk (data moved?)")


__all__ = ["Retrieval", "RetrievalError", "retrieve_image", "load_run_model", "embed_image",
           "retrieval_figure", "example_image"]
