r"""Figures of the STL-10 toy (:mod:`dml_core.study.toy`): moving vs learnable proxies on the unit circle
(``feature_dim`` 2) or the unit sphere (3).

Inputs are the history dicts that :mod:`dml_core.study.toy` writes (``load_toy_history``) (``epochs`` (K,),
``proxies`` (K, C, d), ``train_embeddings`` (K, Ns, d), ``test_embeddings`` (K, Nt, d), ``trail``
(S + 1, C, d), ...), keyed by variant (``{"moving": h, "learnable": h}``). Every ``plot_*``
returns the Figure and, given ``path`` (no extension), writes PNG + PDF atomically
(:func:`dml_core.report.figures.save_figure`); :func:`animate_proxies` writes a GIF with
matplotlib's PillowWriter. Style: SciencePlots ``['science', 'no-latex']`` when installed. In 2-D
the points are drawn with a small radial jitter (±3 %) so that overlapping points stay visible;
every embedding lies exactly on the circle.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dml_core.data.toy import source_label  # noqa: E402
from dml_core.core.io import atomic_path  # noqa: E402

from .figures import figure_style, save_figure  # noqa: E402

__all__ = ["plot_toy_embeddings", "plot_proxy_evolution", "animate_proxies", "plot_toy_recall",
           "plot_momentum_sweep", "make_toy_figures", "toy_title"]

TEST_COLORS = ("tab:red", "tab:green", "tab:blue")  # the original code's r, g, b
TEST_MARKERS = ("o", "*", "^")                        # the original code's markers
VARIANT_LABELS = {"moving": "moving proxies", "learnable": "learnable proxies"}
JITTER = 0.03


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _train_colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i) for i in range(n)]


def toy_title(h: Mapping[str, Any], extra: str = "") -> str:
    """'<data> · 2-D · T=0.03 [· extra]' from a history's metadata."""
    parts = [source_label(str(h.get("source", "?"))), f"{int(h.get('feature_dim', 2))}-D",
             f"T={float(h.get('temperature', 0.03)):g}"]
    return " · ".join(parts + ([extra] if extra else []))


def _variant_label(name: str, h: Mapping[str, Any]) -> str:
    if name == "moving" or not h.get("learnable", False):
        return f"moving proxies (m={float(h['momentum']):g})"
    return VARIANT_LABELS.get(name, name)


def _dim(histories: Mapping[str, Mapping]) -> int:
    return int(next(iter(histories.values()))["proxies"].shape[-1])


def _epoch_index(h: Mapping, epoch: int | None) -> int:
    epochs = _np(h["epochs"]).tolist()
    if epoch is None or epoch == -1:
        return len(epochs) - 1
    if epoch not in epochs:
        raise ValueError(f"epoch {epoch} not recorded; recorded epochs: {epochs}")
    return epochs.index(epoch)


# ------------------------------------------------------------------------------ drawing helpers
def _new_axes(fig, nrows: int, ncols: int, index: int, dim: int):
    if dim == 3:
        return fig.add_subplot(nrows, ncols, index, projection="3d")
    return fig.add_subplot(nrows, ncols, index)


def _setup(ax, dim: int) -> None:
    """Unit circle (2-D) or translucent wireframe unit sphere (3-D), equal aspect, no ticks."""
    if dim == 2:
        t = np.linspace(0, 2 * np.pi, 256)
        ax.plot(np.cos(t), np.sin(t), color="0.6", lw=0.8, zorder=0)
        ax.axhline(0, color="0.85", lw=0.5, zorder=0)
        ax.axvline(0, color="0.85", lw=0.5, zorder=0)
        ax.set_xlim(-1.25, 1.25)
        ax.set_ylim(-1.25, 1.25)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    else:
        u, v = np.mgrid[0:2 * np.pi:24j, 0:np.pi:12j]
        ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.8",
                          lw=0.3, alpha=0.5)
        for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            setter(-1.05, 1.05)
        ax.set_box_aspect((1, 1, 1))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])


def _scatter(ax, pts: np.ndarray, color, marker: str = "o", size: float = 6, alpha: float = 0.6,
             rng: np.random.Generator | None = None, label: str | None = None) -> None:
    if len(pts) == 0:
        return
    if pts.shape[1] == 2:
        r = 1.0 + (rng.uniform(-JITTER, JITTER, size=(len(pts), 1)) if rng is not None else 0.0)
        p = _unit(pts) * r
        ax.scatter(p[:, 0], p[:, 1], s=size, color=color, marker=marker, alpha=alpha, lw=0,
                   label=label)
    else:
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=size, color=color, marker=marker,
                   alpha=alpha, lw=0, label=label, depthshade=False)


def _arrow(ax, vec: np.ndarray, color, lw: float = 1.8, style: str = "-", head: bool = True,
           label: str | None = None) -> None:
    """An arrow (or a line) from the origin to ``vec`` (unit length)."""
    v = _unit(np.asarray(vec, dtype=float))
    if v.shape[0] == 2:
        if head:
            ax.annotate("", xy=(v[0], v[1]), xytext=(0, 0), zorder=5,
                        arrowprops={"arrowstyle": "-|>", "color": color, "lw": lw,
                                    "mutation_scale": 10, "shrinkA": 0, "shrinkB": 0,
                                    "linestyle": style})
            if label:
                ax.plot([], [], color=color, lw=lw, ls=style, label=label)
        else:
            ax.plot([0, v[0]], [0, v[1]], color=color, lw=lw, ls=style, label=label, zorder=5)
    else:
        if head:
            ax.quiver(0, 0, 0, v[0], v[1], v[2], color=color, lw=lw, arrow_length_ratio=0.15,
                      linestyle=style, label=label)
        else:
            ax.plot([0, v[0]], [0, v[1]], [0, v[2]], color=color, lw=lw, ls=style, label=label)


def _trail(ax, pts: np.ndarray, color, lw: float = 1.0, sub: int = 12) -> None:
    """The path of one proxy over the steps, outside the circle / sphere: each step follows the
    shorter arc; in 2-D the radius grows from 1.04 to 1.16 with time (a spiral, so that back-and-
    forth moves stay visible)."""
    if len(pts) < 2:
        return
    p = _unit(pts)
    if p.shape[1] == 2:
        theta = np.unwrap(np.arctan2(p[:, 1], p[:, 0]))
        s = np.linspace(0, len(theta) - 1, (len(theta) - 1) * sub + 1)
        th = np.interp(s, np.arange(len(theta)), theta)
        r = 1.04 + 0.12 * s / max(len(theta) - 1, 1)
        ax.plot(r * np.cos(th), r * np.sin(th), color=color, lw=lw, alpha=0.8)
        ax.scatter([r[-1] * np.cos(th[-1])], [r[-1] * np.sin(th[-1])], color=color, s=8, zorder=6)
    else:
        t = np.linspace(0, 1, sub)[:, None]
        seg = [_unit((1 - t) * a + t * b) for a, b in zip(p[:-1], p[1:])]
        q = np.concatenate(seg) * 1.06
        ax.plot(q[:, 0], q[:, 1], q[:, 2], color=color, lw=lw, alpha=0.8)


def _draw_train(ax, h: Mapping, k: int, rng, trail_upto: int | None = None,
                alpha: float = 0.5) -> None:
    """Training embeddings of snapshot k coloured by class + each class's proxy as an arrow."""
    dim = int(h["proxies"].shape[-1])
    emb, lab = _np(h["train_embeddings"][k]), _np(h["train_labels"])
    prox = _np(h["proxies"][k])
    colors = _train_colors(prox.shape[0])
    names = list(h.get("train_class_names", [])) or [str(c) for c in range(prox.shape[0])]
    _setup(ax, dim)
    for c in range(prox.shape[0]):
        _scatter(ax, emb[lab == c], colors[c], rng=rng, alpha=alpha, label=names[c])
    if trail_upto is not None:
        trail = _np(h["trail"])[:trail_upto + 1]
        for c in range(prox.shape[0]):
            _trail(ax, trail[:, c], colors[c])
    for c in range(prox.shape[0]):
        _arrow(ax, prox[c], colors[c])


def _draw_test(ax, h: Mapping, k: int, rng) -> None:
    """Unseen-class embeddings of snapshot k + each class's L2-normalised mean direction."""
    dim = int(h["proxies"].shape[-1])
    emb, lab = _np(h["test_embeddings"][k]), _np(h["test_labels"])
    names = list(h.get("test_class_names", [])) or [str(c) for c in np.unique(lab)]
    _setup(ax, dim)
    for i, c in enumerate(np.unique(lab)):
        col, mk = TEST_COLORS[i % 3], TEST_MARKERS[i % 3]
        pts = emb[lab == c]
        _scatter(ax, pts, col, marker=mk, size=10, rng=rng, alpha=0.6, label=names[i])
        _arrow(ax, pts.mean(axis=0), col, lw=1.6, style="--", head=False)


def _trail_index(h: Mapping, k: int) -> int:
    """Last index into ``trail`` belonging to snapshot k (epoch e)."""
    e = int(_np(h["epochs"])[k])
    te = _np(h["trail_epoch"])
    idx = np.flatnonzero(te <= e)
    return int(idx[-1]) if len(idx) else 0


# ------------------------------------------------------------------------------ figures
def plot_toy_embeddings(histories: Mapping[str, Mapping], path=None, *, epoch: int | None = None,
                        seed: int = 0):
    """Variants side by side. Top: training embeddings by class with each class's proxy as an
    arrow (and its path over training). Bottom: the unseen test classes with their mean
    directions (dashed) and R@1. ``epoch`` None = the last one."""
    dim = _dim(histories)
    names = list(histories)
    with figure_style():
        fig = plt.figure(figsize=(3.3 * len(names), 6.6))
        for j, name in enumerate(names):
            h = histories[name]
            k = _epoch_index(h, epoch)
            e = int(_np(h["epochs"])[k])
            rng = np.random.default_rng(seed)
            ax = _new_axes(fig, 2, len(names), j + 1, dim)
            _draw_train(ax, h, k, rng, trail_upto=_trail_index(h, k))
            ax.set_title(f"{_variant_label(name, h)}\ntrain (7 classes), epoch {e}")
            if j == len(names) - 1:
                ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, markerscale=2)
            ax = _new_axes(fig, 2, len(names), len(names) + j + 1, dim)
            _draw_test(ax, h, k, rng)
            ax.set_title(f"unseen classes, R@1 = {100 * float(_np(h['test_recall'])[k]):.1f}%")
            if j == len(names) - 1:
                ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, markerscale=2)
        fig.suptitle(toy_title(next(iter(histories.values())),
                               "arrows: proxies, dashed: class means"), fontsize=9)
        fig.tight_layout()
    return _finish(fig, path)


def plot_proxy_evolution(histories: Mapping[str, Mapping], path=None, *,
                         epochs: Sequence[int] | None = None, seed: int = 0):
    """Small multiples: one row per variant, one column per epoch (default: up to 5 evenly
    spaced recorded epochs from 0); training embeddings, the proxies and their paths so far."""
    dim = _dim(histories)
    names = list(histories)
    first = histories[names[0]]
    recorded = _np(first["epochs"]).tolist()
    if epochs is None:
        pick = np.unique(np.linspace(0, len(recorded) - 1, min(5, len(recorded))).round().astype(int))
        epochs = [recorded[i] for i in pick]
    with figure_style():
        fig = plt.figure(figsize=(2.3 * len(epochs), 2.5 * len(names)))
        for i, name in enumerate(names):
            h = histories[name]
            for j, e in enumerate(epochs):
                k = _epoch_index(h, e)
                ax = _new_axes(fig, len(names), len(epochs), i * len(epochs) + j + 1, dim)
                _draw_train(ax, h, k, np.random.default_rng(seed), trail_upto=_trail_index(h, k),
                            alpha=0.35)
                ax.set_title(f"epoch {e}" + (f"\n{_variant_label(name, h)}" if j == 0 else ""),
                             fontsize=8)
        fig.suptitle(toy_title(first, "how the proxies move"), fontsize=9)
        fig.tight_layout()
    return _finish(fig, path)


def animate_proxies(histories: Mapping[str, Mapping], path: str | os.PathLike, *,
                    max_frames: int = 90, fps: int = 6, seed: int = 0) -> Path:
    """Animated GIF (matplotlib PillowWriter), variants side by side, one frame per optimiser
    step (subsampled to ``max_frames``): the proxies and their paths over the latest recorded
    training embeddings. Returns the path (``.gif`` added when missing)."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    path = Path(path)
    if path.suffix.lower() != ".gif":
        path = path.with_name(path.name + ".gif")
    dim = _dim(histories)
    names = list(histories)
    n_steps = min(len(_np(histories[n]["trail"])) for n in names)
    frames = np.unique(np.linspace(0, n_steps - 1, min(max_frames, n_steps)).round().astype(int))
    with figure_style():
        fig = plt.figure(figsize=(3.2 * len(names), 3.5))
        axes = [_new_axes(fig, 1, len(names), j + 1, dim) for j in range(len(names))]

        def draw(s: int):
            for ax, name in zip(axes, names):
                h = histories[name]
                ax.clear()
                e_step = int(_np(h["trail_epoch"])[s])
                k = int(np.flatnonzero(_np(h["epochs"]) <= max(e_step - 1, 0))[-1]) \
                    if e_step > 0 else 0
                _draw_train(ax, h, k, np.random.default_rng(seed), trail_upto=None, alpha=0.25)
                trail = _np(h["trail"])[:s + 1]
                colors = _train_colors(trail.shape[1])
                for c in range(trail.shape[1]):
                    _trail(ax, trail[:, c], colors[c])
                    _arrow(ax, trail[-1, c], colors[c], lw=2.2)
                ax.set_title(f"{_variant_label(name, h)}\nepoch {e_step}, step {s}", fontsize=8)
            fig.suptitle(toy_title(histories[names[0]]), fontsize=8)
            return axes

        anim = FuncAnimation(fig, draw, frames=frames, blit=False)
        with atomic_path(path) as tmp:
            tmp_gif = tmp.with_name(tmp.name + ".gif")  # PIL picks the format from the suffix
            try:
                anim.save(str(tmp_gif), writer=PillowWriter(fps=fps), dpi=90)
                os.replace(tmp_gif, tmp)
            finally:
                if tmp_gif.exists():
                    tmp_gif.unlink()
        plt.close(fig)
    return path


def plot_toy_recall(histories: Mapping[str, Mapping], path=None):
    """Per epoch: R@1 on the unseen classes (left) and the training accuracy (right)."""
    with figure_style():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(6.4, 2.6))
        for name, h in histories.items():
            e = _np(h["epochs"])
            a1.plot(e, 100 * _np(h["test_recall"]), marker="o", ms=3, label=_variant_label(name, h))
            acc = _np(h["train_accuracy"])
            a2.plot(e[1:], 100 * acc[1:], marker="o", ms=3, label=_variant_label(name, h))
        a1.set_xlabel("epoch")
        a1.set_ylabel("R@1 unseen classes (%)")
        a2.set_xlabel("epoch")
        a2.set_ylabel("train accuracy (%)")
        a2.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle(toy_title(next(iter(histories.values()))), fontsize=9)
        fig.tight_layout()
    return _finish(fig, path)


def plot_momentum_sweep(sweep: Sequence[Mapping[str, Any]], path=None, *,
                        learnable: Mapping[str, Any] | None = None, title: str = ""):
    """R@1 on the unseen classes against the momentum m, from runs (rows of
    :func:`dml_core.study.toy.run_momentum_sweep`): last epoch and best epoch; the learnable-proxy run
    as a horizontal line when given (a history or a result with ``final_r1``)."""
    rows = sorted(sweep, key=lambda r: r["momentum"])
    m = np.array([r["momentum"] for r in rows], dtype=float)
    with figure_style():
        fig, ax = plt.subplots(figsize=(3.6, 2.6))
        ax.plot(m, [100 * r["final_r1"] for r in rows], marker="o", label="moving, last epoch")
        ax.plot(m, [100 * r["best_r1"] for r in rows], marker="s", ls="--",
                label="moving, best epoch")
        if learnable is not None:
            r1 = learnable.get("final_r1")
            if r1 is None:
                r1 = float(_np(learnable["test_recall"])[-1])
            ax.axhline(100 * float(r1), color="0.4", ls=":", label="learnable, last epoch")
        ax.set_xlabel("momentum m (weight of the new features)")
        ax.set_ylabel("R@1 unseen classes (%)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        ax.set_title(title or "momentum sweep", fontsize=9)
        fig.tight_layout()
    return _finish(fig, path)


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def make_toy_figures(histories: Mapping[str, Mapping], out_dir: str | os.PathLike, *,
                     sweep: Sequence[Mapping[str, Any]] | None = None,
                     extra_dirs: Iterable[str | os.PathLike] = (), gif: bool = True,
                     close: bool = True) -> dict[str, list[Path]]:
    """Every toy figure into ``out_dir`` (``toy_embeddings``, ``toy_proxy_evolution``,
    ``toy_recall``, ``toy_momentum_sweep`` as PNG + PDF, ``toy_proxies.gif``; ``_3d`` appended in
    3-D), copied into each of ``extra_dirs``. Returns {name: [paths in out_dir]}."""
    out_dir = Path(out_dir)
    sfx = "_3d" if _dim(histories) == 3 else ""
    made: dict[str, list[Path]] = {}

    def keep(name: str, fig) -> None:
        made[name] = save_figure(fig, out_dir / f"{name}{sfx}")
        if close:
            plt.close(fig)

    keep("toy_embeddings", plot_toy_embeddings(histories))
    keep("toy_proxy_evolution", plot_proxy_evolution(histories))
    keep("toy_recall", plot_toy_recall(histories))
    if sweep:
        first = next(iter(histories.values()))
        keep("toy_momentum_sweep", plot_momentum_sweep(
            sweep, learnable=histories.get("learnable"), title=toy_title(first)))
    if gif:
        made["toy_proxies_gif"] = [animate_proxies(histories, out_dir / f"toy_proxies{sfx}.gif")]
    for d in extra_dirs:
        d = Path(d)
        for files in made.values():
            for f in files:
                with atomic_path(d / f.name) as tmp:
                    shutil.copyfile(f, tmp)
    return made
