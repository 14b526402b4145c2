"""Retrieval pictures: each query and its top-k results, green/red borders for right/wrong class."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .retrieval import _as_features, _as_labels

CORRECT, WRONG, QUERY = "#2ca02c", "#d62728", "#1f77b4"


def default_queries(labels, n: int = 4) -> list[int]:
    """Deterministic query indices: the first item of ``n`` classes spread evenly over the sorted
    class list (so the picture is the same for every run of a data set)."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    classes, first = np.unique(y, return_index=True)
    pick = np.linspace(0, len(classes) - 1, num=min(n, len(classes))).round().astype(int)
    return [int(first[i]) for i in np.unique(pick)]


def top_k(query_indices: Sequence[int], features, k: int, gallery_features=None):
    """(scores, indices) (Q, k) by inner product, best first, ties by gallery index; in
    self-retrieval (``gallery_features=None``) each query is excluded by its index."""
    f = _as_features(features, "features")
    g = f if gallery_features is None else _as_features(gallery_features, "gallery_features", f.device)
    qi = torch.as_tensor(list(query_indices), dtype=torch.long, device=f.device)
    if qi.numel() and (int(qi.min()) < 0 or int(qi.max()) >= len(f)):
        raise IndexError(f"query indices must be in [0, {len(f)}), got {list(query_indices)}")
    s = f[qi] @ g.T
    if gallery_features is None:
        s[torch.arange(len(qi)), qi] = -torch.inf
    n = g.shape[0] - (1 if gallery_features is None else 0)
    if k > n:
        raise ValueError(f"k={k} is larger than the {n} retrievable gallery items")
    vals, idx = torch.sort(s, dim=1, descending=True, stable=True)
    return vals[:, :k].cpu(), idx[:, :k].cpu()


def _load(path, size: int) -> np.ndarray:
    """The image at ``path`` as a square RGB tile of ``size`` pixels, or of its own longer side
    when that is smaller (the axes scale it; upsampling a 48-px demo image to 128 only made the
    PDFs ~7x larger and slower to write); a grey ``size`` tile when it cannot be read (any
    :class:`~dml_core.data.datasets.ImageLoadError`: missing, truncated, a decompression
    bomb, ...)."""
    from PIL import Image

    from dml_core.data.datasets import ImageLoadError, load_image

    try:
        image = load_image(path)
        side = min(size, max(image.size))
        return np.asarray(image.resize((side, side), Image.BILINEAR))
    except (ImageLoadError, TypeError):
        return np.full((size, size, 3), 200, dtype=np.uint8)  # unreadable image: grey tile


def _frame(ax, color: str, width: float, style: str = "solid"):
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(True)
        sp.set_edgecolor(color)
        sp.set_linewidth(width)
        sp.set_linestyle(style)


def plot_retrievals(query_indices: Sequence[int] | None, features, labels, paths: Sequence[str], k: int = 8,
                    gallery_features=None, gallery_labels=None, gallery_paths: Sequence[str] | None = None,
                    image_size: int = 128, class_names: dict | None = None):
    """Grid figure: one row per query (dashed blue frame), then its top-k results with a green
    frame (same class) or red frame (other class) and the similarity under each image.

    features/labels/paths: the test set (self-retrieval, the query excluded by index) or the query
    set with ``gallery_*`` given. ``query_indices=None`` uses :func:`default_queries`. Unreadable
    paths give grey tiles. Returns the matplotlib Figure (save it as PNG and PDF).
    """
    import matplotlib
    import matplotlib.pyplot as plt

    f = _as_features(features, "features")
    y = _as_labels(labels, len(f), "labels", torch.device("cpu"))
    if len(paths) != len(f):
        raise ValueError(f"paths has {len(paths)} entries but features has {len(f)} rows")
    if (gallery_features is None) != (gallery_labels is None) or (gallery_features is None) != (gallery_paths is None):
        raise ValueError("pass gallery_features, gallery_labels and gallery_paths together, or none of them")
    if gallery_features is None:
        gy, gpaths = y, list(paths)
    else:
        gy = _as_labels(gallery_labels, len(gallery_features), "gallery_labels", torch.device("cpu"))
        gpaths = list(gallery_paths)
        if len(gpaths) != len(gy):
            raise ValueError(f"gallery_paths has {len(gpaths)} entries but gallery_labels has {len(gy)}")
    if query_indices is None:
        query_indices = default_queries(y)
    query_indices = list(query_indices)
    if not query_indices:
        raise ValueError("query_indices is empty; pass at least one index (or None for defaults)")
    scores, idx = top_k(query_indices, f, k, gallery_features)
    name = (lambda c: str(class_names.get(c, c))) if class_names else str
    cell = 1.4
    with matplotlib.rc_context({"font.size": 7}):
        fig, axes = plt.subplots(len(query_indices), k + 1, figsize=(cell * (k + 1), cell * 1.25 * len(query_indices)),
                                 squeeze=False)
        for r, qi in enumerate(query_indices):
            ax = axes[r, 0]
            ax.imshow(_load(paths[qi], image_size))
            _frame(ax, QUERY, 3, "--")
            ax.set_xlabel(f"query\nclass {name(int(y[qi]))}")
            for c in range(k):
                gi = int(idx[r, c])
                ok = int(gy[gi]) == int(y[qi])
                ax = axes[r, c + 1]
                ax.imshow(_load(gpaths[gi], image_size))
                _frame(ax, CORRECT if ok else WRONG, 4)
                ax.set_xlabel(f"{c + 1}: {float(scores[r, c]):.3f}")
        fig.tight_layout()
    plt.close(fig)  # the caller saves it; do not leak an open pyplot figure
    return fig
