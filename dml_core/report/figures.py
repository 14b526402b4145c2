"""The study's figures, drawn from run folders (and the authors' numbers where said so).

Every function returns the matplotlib Figure and, when ``path`` (without extension) is given,
writes ``<path>.png`` and ``<path>.pdf`` atomically through :func:`save_figure`. Style: SciencePlots
``['science', 'no-latex']`` when available, else matplotlib's default with a grid
(:func:`figure_style`). Titles name the profile and the data set; legends sit outside the axes.
"""
from __future__ import annotations

import contextlib
import math
import sys
import os
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dml_core.core.io import atomic_path  # noqa: E402
from dml_core.core.run_folder import RunFolder  # noqa: E402
from dml_core.methods.registry import SPECS  # noqa: E402

from .reported import (BACKBONE_NAMES, DATASET_NAMES, METHOD_NAMES, MOMENTUM_SENSITIVITY,  # noqa: E402
                       MOMENTUM_SERIES, MOMENTUM_VALUES, PROTOCOL_KS)
from .runs import SELECTION_LABELS, load_metrics  # noqa: E402
from .tables import NOT_RUN, benchmark_long  # noqa: E402

_RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
       "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.dpi": 110, "savefig.dpi": 200,
       "axes.grid": True, "grid.alpha": 0.3, "legend.frameon": False}


def science_style_available() -> bool:
    try:
        import scienceplots  # noqa: F401
    except ImportError:  # optional: the default style with a grid
        return False
    return "science" in plt.style.available


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """SciencePlots ``['science', 'no-latex']`` if installed, else the default; readable sizes."""
    styles = ["science", "no-latex"] if science_style_available() else ["default"]
    with plt.style.context(styles), plt.rc_context(_RC):
        yield


def save_figure(fig, path_without_ext: str | os.PathLike,
                formats: Sequence[str] = ("png", "pdf"), dpi: int = 200) -> list[Path]:
    """Write ``fig`` to ``<path>.<fmt>`` for each format, each atomically; return the paths.
    PDFs carry no creation date, so an unchanged figure gives an identical file (no spurious
    change in the committed ``figures/``). PNGs use zlib level 1: a retrieval grid encodes
    ~5x faster than at PIL's default 6 for files ~1.3x larger."""
    base = Path(path_without_ext)
    if base.suffix.lower() in (".png", ".pdf", ".svg"):
        base = base.with_suffix("")
    out = []
    for fmt in formats:
        target = base.with_name(base.name + "." + fmt)
        with atomic_path(target) as tmp:
            metadata = {"CreationDate": None} if fmt == "pdf" else None
            extra = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata,
                        **extra)
        out.append(target)
    return out


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def _profile_text(profile) -> str:
    if profile is None:
        return ""
    if isinstance(profile, (list, tuple, set)):
        profile = ", ".join(sorted(str(p) for p in profile))
    return f"profile {profile}"


def _title(*parts) -> str:
    return " — ".join(p for p in parts if p)


# one colour per method, from its declaration (dml_core.methods.registry)
_METHOD_COLORS = {name: spec.color for name, spec in SPECS.items() if spec.color}
_EXTRA_COLORS = ["#9e9e00", "#17becf", "#e377c2", "#1f77b4"]


def method_color(method: str | None) -> str:
    """One colour per method across all figures."""
    if method in _METHOD_COLORS:
        return _METHOD_COLORS[method]
    return _EXTRA_COLORS[sum(map(ord, str(method))) % len(_EXTRA_COLORS)]


def _run_label(run: pd.Series | dict, with_id: bool = False) -> str:
    get = run.get
    parts = [METHOD_NAMES.get(get("method"), str(get("method"))),
             BACKBONE_NAMES.get(get("backbone"), str(get("backbone")))]
    if get("crop") is True:
        parts.append("cropped")
    if get("momentum") is not None and get("method") == "asymptotic_proxy" and with_id:
        parts.append(f"m={get('momentum')}")
    label = " ".join(parts)
    if with_id:
        label += f" [{get('run_id')}]"
    if get("status") not in (None, "complete"):
        label += f" ({get('status')})"
    return label


def _as_runs(runs) -> pd.DataFrame:
    from .runs import read_run

    if isinstance(runs, pd.DataFrame):
        return runs
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    return pd.DataFrame([read_run(r) for r in runs])


# ---------------------------------------------------------------------------------------------
def plot_training_curves(runs, path=None, *, profile=None, dataset: str | None = None,
                         feature: str = "dense", title: str | None = None):
    """Loss, training accuracy and R@1 (test; validation dashed) per epoch (each run's metrics);
    the test R@1 curve starts at epoch 0, the network before training (a pretrained trunk under
    a fresh head: the baseline), when the run's summary has it.

    ``runs``: a DataFrame from :func:`load_runs` (optionally filtered), or run folder paths.
    """
    df = _as_runs(runs)
    if dataset is not None and "dataset" in df:
        df = df[df["dataset"] == dataset]
    with figure_style():
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), constrained_layout=True)
        dup = df.duplicated(subset=[c for c in ("method", "backbone", "crop") if c in df],
                            keep=False) if len(df) else []
        from matplotlib.lines import Line2D

        plotted = 0
        keys: list[Line2D] = []  # the legend: one entry per run, then the line styles
        styles: set[str] = set()
        palette = plt.get_cmap("tab10" if len(df) <= 10 else "tab20")
        for i, (_, run) in enumerate(df.iterrows()):
            m = load_metrics(run["run_dir"])
            if not len(m) or "epoch" not in m:
                continue
            color = palette(i % palette.N)
            label = _run_label(run, with_id=bool(len(dup) and dup.iloc[i]))
            keys.append(Line2D([], [], color=color, marker="o", ms=2.5, lw=1.2, label=label))
            for ax, col in zip(axes[:2], ("train_loss", "train_accuracy")):
                if col in m:
                    y = pd.to_numeric(m[col], errors="coerce")
                    if col == "train_accuracy":
                        y = 100 * y
                    ax.plot(m["epoch"], y, color=color, marker="o", ms=2.5, lw=1.2, label=label)
            for prefix, ls, suffix in (("test", "-", ""), ("val", "--", " (val)")):
                col = f"{prefix}/{feature}/R@1"
                if col in m:
                    y = 100 * pd.to_numeric(m[col], errors="coerce")
                    ok = y.notna()
                    x, y = list(m["epoch"][ok]), list(y[ok])
                    start = run.get(f"untrained/{feature}/R@1") if prefix == "test" else None
                    if start is not None and not pd.isna(start):  # epoch 0: the baseline
                        x, y = [0] + x, [100 * float(start)] + y
                    axes[2].plot(x, y, color=color, ls=ls, marker="o", ms=2.5,
                                 lw=1.2, label=label + suffix)
                    styles.add(prefix)
            plotted += 1
        axes[0].set(title="Training loss", xlabel="Epoch", ylabel="Loss")
        axes[1].set(title="Training accuracy", xlabel="Epoch", ylabel="Accuracy (%)")
        axes[2].set(title=f"R@1 ({feature})", xlabel="Epoch", ylabel="R@1 (%)")
        from matplotlib.ticker import MaxNLocator

        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if plotted == 0:
            for ax in axes:
                ax.text(0.5, 0.5, "no per-epoch metrics", ha="center", va="center",
                        transform=ax.transAxes)
        if "val" in styles:  # the line styles once, not a "(val)" entry per run
            keys += [Line2D([], [], color="0.4", ls="-", lw=1.2, label="R@1: test (epoch 0: "
                            "before training)"),
                     Line2D([], [], color="0.4", ls="--", lw=1.2, label="R@1: validation (val)")]
        if keys:  # a long legend goes below the panels, in columns, clear of the title
            ncol = min(3, -(-len(keys) // 6)) if len(keys) > 8 else 1
            below = ncol > 1
            fig.legend(handles=keys, loc="outside lower center" if below else "outside right center",
                       ncol=ncol, fontsize=7 if below else None)
            if below:  # room for the legend's rows under the panels
                fig.set_figheight(3.2 + 0.16 * -(-len(keys) // ncol))
        ds = dataset or (df["dataset"].dropna().unique()[0]
                         if "dataset" in df and df["dataset"].nunique() == 1 else None)
        fig.suptitle(title or _title("Training curves", DATASET_NAMES.get(ds, ds),
                                     _profile_text(profile if profile is not None else
                                                   (sorted(df["profile"].dropna().unique())
                                                    if "profile" in df and df["profile"].notna().any()
                                                    else None))))
    return _finish(fig, path)


# ---------------------------------------------------------------------------------------------
def plot_recall_bars(runs_df: pd.DataFrame | None, dataset: str, path=None, *, profile=None,
                     feature: str = "dense", selection: str = "test_sel",
                     ks: Sequence[int] | None = None, include_not_run: bool = True,
                     method: str | None = None, title: str | None = None):
    """Horizontal bars per (method, backbone, crop): reproduced (solid) beside reported (hatched).

    One panel per K. Rows without a run say "not run"; carry-over numbers are drawn in grey
    (not targets); a dagger marks an ambiguous reported K. ``selection`` is ``test_sel``
    (best epoch on test), ``last`` or ``val_sel``.
    """
    profiles = [profile] if isinstance(profile, str) else profile
    ks = list(ks) if ks is not None else list(PROTOCOL_KS.get(dataset, (1,)))
    long = benchmark_long(runs_df, dataset=dataset, method=method, profiles=profiles,
                          features=(feature,), ks=ks,
                          include_all_reported=include_not_run)
    if len(long):
        long = long[long["feature"] == feature]
        long = long[long["variant"] == ""]
    rows = []
    if len(long):
        for (key, prof, run_id), g in long.groupby(["key", "profile", "run_id"], sort=False,
                                                   dropna=False):
            f = g.iloc[0]
            label = _run_label({"method": f["method"], "backbone": f["backbone"],
                                "crop": f["crop"] if f["dataset"] in ("car", "cub") else None,
                                "run_id": run_id, "status": None})
            if isinstance(run_id, str) and long["key"].eq(key).sum() > len(g):
                label += f" [{run_id}]"
            rows.append((label, g.set_index("k"), f["run_status"], f["method"]))
    with figure_style():
        n = max(len(rows), 1)
        fig, axes = plt.subplots(1, len(ks), figsize=(2.6 * len(ks) + 2.5, 0.32 * n + 1.4),
                                 sharey=True, squeeze=False, constrained_layout=True)
        axes = axes[0]
        y = np.arange(len(rows))
        h = 0.38
        for ax, k in zip(axes, ks):
            for i, (label, g, status, meth) in enumerate(rows):
                color = method_color(meth)
                rep = g.loc[k, "reported_pct"] if k in g.index else math.nan
                rstat = g.loc[k, "reported_status"] if k in g.index else None
                rep_color = "0.55" if rstat == "carry_over" else color
                rec = g.loc[k, f"{selection}_pct"] if k in g.index else math.nan
                if not math.isnan(rec):
                    ax.barh(i - h / 2, rec, h, color=color, edgecolor="black", lw=0.4)
                    ax.text(rec + 0.5, i - h / 2, f"{rec:.1f}", va="center", fontsize=6.5)
                else:
                    ax.text(1, i - h / 2, NOT_RUN if status == NOT_RUN else "n/a",
                            va="center", fontsize=6.5, style="italic", color="0.3")
                if not (isinstance(rep, float) and math.isnan(rep)) and rep is not None:
                    ax.barh(i + h / 2, rep, h, color=rep_color, alpha=0.35, hatch="///",
                            edgecolor=rep_color, lw=0.4)
                    mark = "†" if k in g.index and g.loc[k, "reported_k_note"] else ""
                    ax.text(rep + 0.5, i + h / 2, f"{rep:.1f}{mark}", va="center", fontsize=6.5,
                            color="0.25")
            ax.set_xlim(0, 112)
            ax.set_xlabel(f"R@{k} (%)")
            ax.set_title(f"R@{k}")
            ax.grid(axis="y", visible=False)
        axes[0].set_yticks(y, [r[0] for r in rows])
        axes[0].invert_yaxis()
        from matplotlib.patches import Patch

        handles = [Patch(facecolor="0.45", edgecolor="black", label=f"reproduced "
                         f"({SELECTION_LABELS.get(selection, selection)})"),
                   Patch(facecolor="0.45", alpha=0.35, hatch="///", edgecolor="0.45",
                         label="reported by the authors"),
                   Patch(facecolor="0.55", alpha=0.35, hatch="///", edgecolor="0.55",
                         label="reported, carry-over (not a target)")]
        if any(r[1]["reported_k_note"].astype(bool).any() for r in rows):
            handles.append(Patch(facecolor="none", edgecolor="none",
                                 label="†: the reported column's K is ambiguous"))
        fig.legend(handles=handles, loc="outside lower center", ncol=3)
        fig.suptitle(title or _title(f"Recall@K, {feature} features",
                                     DATASET_NAMES.get(dataset, dataset), _profile_text(profile)))
    return _finish(fig, path)


# ---------------------------------------------------------------------------------------------
def plot_dense_vs_binary(runs_df: pd.DataFrame | None, path=None, *, profile=None, k: int = 1,
                         selection: str = "test_sel", include_reported: bool = True,
                         title: str | None = None):
    """Scatter of binary (sign) R@k against dense R@k: runs filled, authors' numbers hollow."""
    df = runs_df if runs_df is not None else pd.DataFrame()
    if profile is not None and len(df):
        df = df[df["profile"].isin([profile] if isinstance(profile, str) else list(profile))]
    dcol, bcol = f"{selection}/dense/R@{k}", f"{selection}/binary/R@{k}"
    from .reported import reported_entries

    datasets = sorted(set(df["dataset"].dropna()) if len(df) else set())
    rep = [e for e in reported_entries(statuses=("reported",)) if "binary" in e.recalls
           and k in e.recalls["binary"] and k in e.recalls.get("dense", {})] \
        if include_reported else []
    datasets = sorted(set(datasets) | {e.dataset for e in rep})
    colors = {ds: f"C{i}" for i, ds in enumerate(datasets)}
    with figure_style():
        fig, ax = plt.subplots(figsize=(5.2, 4.2), constrained_layout=True)
        ax.plot([0, 100], [0, 100], color="0.5", lw=0.8, ls="--", label="binary = dense")
        n_runs = 0
        if len(df) and dcol in df and bcol in df:
            for _, r in df.iterrows():
                if pd.notna(r.get(dcol)) and pd.notna(r.get(bcol)):
                    ax.scatter(100 * r[dcol], 100 * r[bcol], color=colors[r["dataset"]], s=28,
                               marker="o", edgecolor="black", lw=0.4, zorder=3)
                    ax.annotate(METHOD_NAMES.get(r["method"], r["method"]),
                                (100 * r[dcol], 100 * r[bcol]), fontsize=6,
                                xytext=(3, -8), textcoords="offset points")
                    n_runs += 1
        for e in rep:
            ax.scatter(e.recalls["dense"][k], e.recalls["binary"][k], facecolor="none",
                       edgecolor=colors[e.dataset], s=30, marker="s", lw=1.0, zorder=2)
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="0.5", ls="--", label="binary = dense"),
                   Line2D([], [], marker="o", ls="", color="0.4", markeredgecolor="black",
                          label=f"reproduced ({SELECTION_LABELS.get(selection, selection)})"),
                   Line2D([], [], marker="s", ls="", markerfacecolor="none", color="0.4",
                          label="reported by the authors")]
        handles += [Line2D([], [], marker="o", ls="", color=c, label=DATASET_NAMES.get(ds, ds))
                    for ds, c in colors.items()]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        lo = 0
        vals = [e.recalls["binary"][k] for e in rep] + [e.recalls["dense"][k] for e in rep]
        if n_runs:
            vals += list(100 * df[dcol].dropna()) + list(100 * df[bcol].dropna())
        if vals:
            lo = max(0, math.floor(min(vals) / 10) * 10 - 5)
        ax.set(xlim=(lo, 100), ylim=(lo, 100), xlabel=f"Dense R@{k} (%)",
               ylabel=f"Binary (sign) R@{k} (%)")
        ax.set_aspect("equal")
        ax.set_title(title or _title(f"Dense vs binary features, R@{k}", _profile_text(profile)
                                     or "all profiles"))
        if not n_runs:
            ax.text(0.97, 0.03, "no run with binary metrics", transform=ax.transAxes, ha="right",
                    fontsize=7, style="italic")
    return _finish(fig, path)


# ---------------------------------------------------------------------------------------------
def plot_retrieval_grid(run_dir: str | os.PathLike, path=None, *, which: str = "best",
                        num_queries: int = 4, k: int = 8, seed: int = 0, profile=None,
                        title: str | None = None):
    """Top-k retrievals of random test queries of a run (its saved ``which`` features,
    :meth:`RunFolder.read_features`), drawn by :func:`dml_core.evaluation.plot_retrievals` (query
    excluded, green/red frames, similarity under each image)."""
    from dml_core.evaluation import plot_retrievals

    f = RunFolder(run_dir).read_features(which)
    labels = f.labels.numpy()
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(len(labels), size=min(num_queries, len(labels)), replace=False))
    g = f.gallery
    k = min(k, (len(labels) - 1) if g is None else len(g.labels))
    fig = plot_retrievals([int(q) for q in queries], f.features.numpy(), labels,
                          f.paths or [""] * len(labels), k=k,
                          gallery_features=None if g is None else g.features.numpy(),
                          gallery_labels=None if g is None else g.labels.numpy(),
                          gallery_paths=None if g is None else g.paths)
    fig.suptitle(title or _title(f"Top-{k} retrievals ({which} epoch), run {Path(run_dir).name}",
                                 _profile_text(profile)), y=1.03)  # above the first row
    return _finish(fig, path)


def _pca2(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def cosine_distances(x: np.ndarray) -> np.ndarray:
    """(N, D) features → (N, N) cosine distances 1 − cos(x_i, x_j), clipped at 0, zero diagonal."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    d = np.clip(1.0 - x @ x.T, 0.0, None)
    np.fill_diagonal(d, 0.0)
    return d


#: Layout epochs of every UMAP: UMAP's own default for large data sets (it takes 500 below 10,000
#: points); 2.5x less layout time for a picture that shows the same clusters.
UMAP_EPOCHS = 200


_UMAP_CACHING = False  # umap_module has turned numba's cache on in this process


def umap_module():
    """``umap``, imported, with numba's on-disk cache turned on (once per process) for every
    compiled function of its modules. UMAP caches only some of its own: the others were compiled
    again in every process (~7 s on a fast core, before the first picture); cached, a later
    process loads them (~0.5 s). The cache lies beside the package (numba's ``__pycache__``), so
    it lasts until the package is reinstalled; :func:`compile_umap` fills it."""
    global _UMAP_CACHING
    import pkgutil
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():  # umap imports tqdm.auto: no widget warning in notebooks
        warnings.simplefilter("ignore", TqdmWarning)
        warnings.filterwarnings("ignore", message=".*ParametricUMAP.*")
        import umap
    if not _UMAP_CACHING:
        from numba.core.registry import CPUDispatcher

        for info in pkgutil.iter_modules(umap.__path__, "umap."):
            module = sys.modules.get(info.name)  # those umap itself imported (no TensorFlow)
            for obj in vars(module).values() if module is not None else ():
                if isinstance(obj, CPUDispatcher) and obj.__module__ == info.name:
                    with contextlib.suppress(Exception):  # not cacheable: compiled as before
                        obj.enable_caching()
        _UMAP_CACHING = True
    return umap


def compile_umap() -> str:
    """Compile the UMAP code that :func:`embed_2d` runs (one projection of 64 random points:
    the same types, so the same machine code) into numba's on-disk cache, or load it from there;
    returns what happened, in words. The data preparation starts it first
    (:func:`start_compile_umap`) and reads this at its end, so that the figures notebook (08), at
    the end of a batch, does not compile (~20 s on a fresh install).

    It runs in a second process: numba's OpenMP threads set the process's OpenMP thread count
    to every core, torch's with it, and a batch's kernel trains next (on 2 threads where it had
    1: other numbers, 8 times slower beside a second job)."""
    return start_compile_umap().result()


class UmapCompilation:
    """:func:`compile_umap` running in a second process; :meth:`result` waits and says what
    happened, in words (never raises: without a second process, 08 compiles, as before)."""

    def __init__(self):
        import concurrent.futures as cf
        import multiprocessing

        self._pool = self._future = None
        self._error: str | None = None
        try:
            self._pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            self._future = self._pool.submit(_compile_umap_here)
        except Exception as exc:  # noqa: BLE001
            self._error = f"{type(exc).__name__}: {exc}"

    def result(self) -> str:
        try:
            if self._future is not None:
                return self._future.result()
        except Exception as exc:  # noqa: BLE001
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            if self._pool is not None:
                self._pool.shutdown()
        return f"UMAP's code not compiled ahead ({self._error}); 08 compiles it"


def start_compile_umap() -> UmapCompilation:
    """Start :func:`compile_umap` in a second process and return at once; ``.result()`` waits."""
    return UmapCompilation()


def _compile_umap_here() -> str:
    import time

    t0 = time.perf_counter()
    _, note = embed_2d(np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32))
    took = time.perf_counter() - t0
    if note != "UMAP":
        return f"UMAP does not run here, the figures will show {note}"
    return f"UMAP's code compiled, or loaded from numba's cache, in {took:.1f} s"


def embed_2d(features: np.ndarray, method: str = "umap", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D projection with UMAP (seeded); PCA when UMAP is not wanted or fails. Returns (xy, note)."""
    if method == "umap":
        try:
            import warnings

            umap = umap_module()

            n_nb = int(max(2, min(15, len(features) - 1)))
            # cosine distances computed here: on fewer than 4,096 points UMAP computes them
            # itself through scikit-learn's pure-Python loop over pairs (~2 s per 1,500 points)
            with warnings.catch_warnings():  # "precomputed: inverse_transform unavailable"
                warnings.filterwarnings("ignore", message=".*precomputed metric.*")
                xy = umap.UMAP(n_components=2, random_state=seed, n_neighbors=n_nb, n_jobs=1,
                               n_epochs=UMAP_EPOCHS, metric="precomputed",
                               ).fit_transform(cosine_distances(features))
            return np.asarray(xy), "UMAP"
        except Exception as exc:  # noqa: BLE001 - umap and numba fail in many ways (the JIT, too
            # few points, threads): fall back on PCA, and the title says so
            return _pca2(features), f"PCA (UMAP failed: {type(exc).__name__})"
    return _pca2(features), "PCA"


def embedding_points(run_dir: str | os.PathLike, *, which: str = "best", method: str = "umap",
                     max_points: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """A run's test embeddings (its saved ``which`` features, at most ``max_points`` drawn with
    ``seed``) projected to 2-D by :func:`embed_2d`: ``(xy (N, 2), labels (N,), note)``. Seeded:
    the same points in any process (``write_figures`` computes them in a second one)."""
    f = RunFolder(run_dir).read_features(which)
    feats, labels = f.features.numpy(), f.labels.numpy()
    rng = np.random.default_rng(seed)
    if len(labels) > max_points:
        idx = np.sort(rng.choice(len(labels), size=max_points, replace=False))
        feats, labels = feats[idx], labels[idx]
    xy, note = embed_2d(feats, method=method, seed=seed)
    return xy, labels, note


def plot_embedding(run_dir: str | os.PathLike, path=None, *, which: str = "best",
                   method: str = "umap", max_points: int = 3000, seed: int = 0, profile=None,
                   dataset: str | None = None, title: str | None = None,
                   points: tuple[np.ndarray, np.ndarray, str] | None = None):
    """UMAP (or PCA fallback, said in the title) of a run's test embeddings coloured by class;
    ``points``: :func:`embedding_points` of the same arguments, computed beforehand."""
    xy, labels, note = points if points is not None else embedding_points(
        run_dir, which=which, method=method, max_points=max_points, seed=seed)
    classes = np.unique(labels)
    if dataset is None:
        from .runs import read_run

        dataset = read_run(run_dir).get("dataset")  # None when the run folder does not say
    with figure_style():
        fig, ax = plt.subplots(figsize=(5.6, 4.4), constrained_layout=True)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(i % cmap.N), alpha=0.8,
                       label=f"class {c}", lw=0)
        if len(classes) <= 20:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), markerscale=2.5,
                      title=f"{len(classes)} classes")
        ax.set(xlabel=f"{note} 1", ylabel=f"{note} 2", xticks=[], yticks=[])
        ax.set_title(title or _title(f"{note} of test embeddings ({which} epoch), "
                                     f"{len(labels)} points, {len(classes)} classes",
                                     DATASET_NAMES.get(dataset, dataset), _profile_text(profile)),
                     fontsize=9)
    return _finish(fig, path)


# ---------------------------------------------------------------------------------------------
def plot_momentum_sensitivity(runs_df: pd.DataFrame | None, path=None, *, profile=None,
                              datasets: Sequence[str] | None = None, overlay: str | bool = "matching",
                              selection: str = "test_sel", feature: str = "dense",
                              title: str | None = None):
    """AsymptoticProxy R@1 against momentum, from runs whose method is ``asymptotic_proxy``.

    One panel per data set, one line per (backbone, embedding_dim). ``overlay``: ``"matching"``
    draws the original code's hard-coded plot.py numbers (dashed, hollow markers, labelled "reported
    (hard-coded)") for the series that the runs cover; ``"all"`` draws every series; False none.
    """
    df = runs_df if runs_df is not None else pd.DataFrame()
    if len(df):
        df = df[(df["method"] == "asymptotic_proxy") & df["momentum"].notna()] \
            if "momentum" in df else df.iloc[0:0]
        if profile is not None:
            df = df[df["profile"].isin([profile] if isinstance(profile, str) else list(profile))]
    col = f"{selection}/{feature}/R@1"
    if datasets is None:
        datasets = sorted(df["dataset"].dropna().unique()) if len(df) else []
        if not datasets and overlay:
            datasets = list(MOMENTUM_SENSITIVITY)
    datasets = list(datasets) or ["(none)"]
    with figure_style():
        fig, axes = plt.subplots(1, len(datasets), figsize=(3.6 * len(datasets) + 1.8, 3.2),
                                 squeeze=False, constrained_layout=True)
        for ax, ds in zip(axes[0], datasets):
            sub = df[df["dataset"] == ds] if len(df) else df
            series = {}
            if len(sub) and col in sub:
                for (bb, dim), g in sub.groupby(["backbone", "embedding_dim"], dropna=False):
                    g = g[g[col].notna()].sort_values("momentum")
                    if len(g):
                        series[(bb, dim)] = g
            colors = {}
            for i, s in enumerate(MOMENTUM_SERIES.values()):
                colors[s] = f"C{i}"
            for (bb, dim), g in series.items():
                c = colors.get((bb, int(dim) if pd.notna(dim) else dim), f"C{len(colors) % 10}")
                ax.plot(g["momentum"], 100 * g[col], marker="o", ms=4, color=c, lw=1.3,
                        label=f"reproduced: {BACKBONE_NAMES.get(bb, bb)}({dim})")
            if overlay and ds in MOMENTUM_SENSITIVITY:
                for label, vals in MOMENTUM_SENSITIVITY[ds].items():
                    if overlay == "matching" and MOMENTUM_SERIES[label] not in \
                            {(bb, int(d)) for bb, d in series if pd.notna(d)}:
                        continue
                    ax.plot(MOMENTUM_VALUES, vals, ls="--", marker="o", ms=4, mfc="none",
                            color=colors[MOMENTUM_SERIES[label]], lw=0.9, alpha=0.8,
                            label=f"reported (hard-coded): {label}")
            if not series:
                ax.text(0.5, 0.08, "no asymptotic_proxy runs", transform=ax.transAxes,
                        ha="center", fontsize=7, style="italic")
            ax.set(xlabel="Momentum", ylabel="R@1 (%)", title=DATASET_NAMES.get(ds, ds))
        handles, labels = [], []
        for ax in axes[0]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if handles:
            fig.legend(handles, labels, loc="outside right center")
        sup = title or _title("AsymptoticProxy: momentum sensitivity "
                              f"({SELECTION_LABELS.get(selection, selection)})",
                              _profile_text(profile))
        if overlay:
            sup += "\ndashed: reported (hard-coded in the original code's plot.py, not from runs)"
        fig.suptitle(sup, fontsize=9)
    return _finish(fig, path)


__all__ = ["figure_style", "save_figure", "plot_training_curves", "plot_recall_bars",
           "plot_dense_vs_binary", "plot_retrieval_grid", "plot_embedding", "embed_2d",
           "embedding_points", "umap_module", "compile_umap",
           "plot_momentum_sensitivity", "science_style_available"]


# ------------------------------------------------------------------ seeds: values and intervals
def one_seed_per_config(runs: pd.DataFrame) -> pd.DataFrame:
    """The run with the lowest seed of every configuration (``config`` column of
    :func:`dml_core.report.runs.with_configs`); runs without a seed are all kept. Per-run
    figures (curves, retrieval grids, embeddings) are drawn for these only."""
    if not len(runs) or "config" not in runs or "seed" not in runs:
        return runs
    seeded = runs[runs["seed"].notna()]
    first = seeded.sort_values("seed").drop_duplicates("config", keep="first")
    return pd.concat([runs[runs["seed"].isna()], first]).sort_index()


def plot_seed_values(stats: dict, path=None, *, profile=None, title: str | None = None):
    """Every seed's value (dots) and the mean with its 95% interval (bar) per configuration.

    ``stats``: :func:`dml_core.report.stats.summarise` output. Configurations sorted by mean."""
    s = stats["summary"].sort_values("mean") if len(stats["summary"]) else stats["summary"]
    per_seed = stats["per_seed"]
    with figure_style():
        fig, ax = plt.subplots(figsize=(6.4, 0.42 * max(len(s), 2) + 1.0),
                               constrained_layout=True)
        for y, (_, r) in enumerate(s.iterrows()):
            vals = per_seed[per_seed["config"] == r["config"]]
            jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(1)
            ax.scatter(100 * vals["value"], y + jitter, s=14, color="0.45", zorder=2,
                       label="one seed" if y == 0 else None)
            if r["n"] >= 2 and math.isfinite(r["lo"]):
                ax.errorbar(100 * r["mean"], y, xerr=[[100 * (r["mean"] - r["lo"])],
                                                      [100 * (r["hi"] - r["mean"])]],
                            fmt="o", color=method_color(vals["method"].iloc[0]
                                                        if "method" in vals and len(vals) else None),
                            ms=6, capsize=3, lw=1.6, zorder=3,
                            label="mean, 95% CI" if y == 0 else None)
            else:
                ax.plot(100 * r["mean"], y, "o", color="k", ms=6, zorder=3)
        ax.set_yticks(range(len(s)), [f"{lab} (n={n})" for lab, n in zip(s["label"], s["n"])])
        metric = stats.get("metric", "")
        ax.set_xlabel(f"test {metric.split('/', 1)[-1]} (%) at the "
                      f"{SELECTION_LABELS.get(metric.split('/')[0], metric.split('/')[0])} epoch")
        ax.set_title(title or _title("Every seed and the mean with its 95% interval",
                                     _profile_text(profile)))
        ax.legend(loc="lower right", fontsize=7)
        ax.grid(axis="x", alpha=0.3)
    return _finish(fig, path)


def plot_paired_differences(stats: dict, path=None, *, profile=None, title: str | None = None):
    """Paired differences A − B by seed (dots) and their mean with its 95% interval, in the
    primary metric; a comparison whose Holm-adjusted p-value is at most 0.05 is drawn solid,
    otherwise hollow (no detectable difference)."""
    from .stats import metric_name

    p = stats["paired"]
    p = p[p["n"] > 0] if len(p) else p
    if len(p) and "metric" in p:
        p = p[p["metric"] == metric_name(stats.get("metric", ""))]
    per_seed = stats["per_seed"]
    with figure_style():
        fig, ax = plt.subplots(figsize=(6.4, 0.5 * max(len(p), 2) + 1.0), constrained_layout=True)
        ax.axvline(0, color="0.3", lw=0.8)
        for y, (_, r) in enumerate(p.iterrows()):
            a = per_seed[per_seed["variant"] == r["a"]].set_index("seed")["value"]
            b = per_seed[per_seed["variant"] == r["b"]].set_index("seed")["value"]
            d = (a - b).dropna()
            ax.scatter(100 * d.values, np.full(len(d), y), s=14, color="0.45", zorder=2,
                       label="one seed" if y == 0 else None)
            solid = bool(r["significant"] if "significant" in r else r["excludes 0"])
            ax.errorbar(100 * r["mean"], y, xerr=[[100 * (r["mean"] - r["lo"])],
                                                  [100 * (r["hi"] - r["mean"])]],
                        fmt="o", ms=6, capsize=3, lw=1.6, color="C3" if solid else "C0",
                        mfc="C3" if solid else "white", zorder=3)
        ax.set_yticks(range(len(p)), [f"{c} (n={n})" for c, n in zip(p["comparison"], p["n"])])
        ax.set_xlabel(f"difference A − B, paired by seed (points of "
                      f"{metric_name(stats.get('metric', 'R@1'))}); filled: Holm-adjusted "
                      f"p ≤ 0.05 (family of {stats.get('family', len(p))})")
        ax.set_title(title or _title("Paired differences", _profile_text(profile)))
        ax.grid(axis="x", alpha=0.3)
    return _finish(fig, path)


def plot_momentum_seeds(stats: dict, path=None, *, profile=None,
                        momenta: dict[str, float] | None = None):
    """AsymptoticProxy's momentum sweep under the fair protocol: every seed and the mean with
    its 95% interval per momentum (m weights the NEW features in the proxy update).
    ``momenta``: ``{config: momentum}`` of the fair-protocol AsymptoticProxy configurations (the
    runs' recipes; the tuned one included); without it, the momentum in each ablation's name."""
    from .stats import mean_ci

    per_seed = stats["per_seed"]
    fair_ap = per_seed[per_seed["variant"].astype(str).str.startswith("asymptotic_proxy")]
    if momenta is None:
        momenta = {c: float(v.rsplit("_m", 1)[1]) for c, v in
                   zip(fair_ap["config"], fair_ap["variant"]) if "_m" in v}
    with figure_style():
        fig, ax = plt.subplots(figsize=(4.2, 3.2), constrained_layout=True)
        xs, means, los, his = [], [], [], []
        for config, m in sorted(momenta.items(), key=lambda kv: kv[1]):
            g = fair_ap[fair_ap["config"] == config]
            if not len(g):
                continue
            iv = mean_ci(g["value"])
            ax.scatter(np.full(len(g), m), 100 * g["value"], s=14, color="0.45", zorder=2)
            xs.append(m), means.append(100 * iv.mean), los.append(100 * iv.lo), his.append(100 * iv.hi)
        if xs:
            means_a = np.array(means)
            err = np.nan_to_num(np.array([means_a - np.array(los), np.array(his) - means_a]))
            ax.errorbar(xs, means, yerr=err, fmt="o-", color="C0", capsize=3, lw=1.4,
                        label="mean, 95% CI")
            ax.legend(fontsize=7)
        ax.set(xlabel="proxy momentum m", ylabel="test R@1 (%)",
               title=_title("AsymptoticProxy: momentum", _profile_text(profile)))
    return _finish(fig, path)


def write_seed_figures(runs: pd.DataFrame, out: Path, *, profile=None,
                       show=None) -> list[Path]:
    """The seed figures of a run table with seeded runs (``..._s<seed>`` run ids): values per
    configuration, paired differences, the momentum sweep. Nothing when no configuration has
    at least 2 seeds. Returns the written PNG/PDF paths; ``show(fig)`` is called per figure."""
    from .runs import with_configs
    from .stats import summarise

    runs = runs if "config" in runs else with_configs(runs)
    seeded = runs[runs["run_id"].astype(str).str.fullmatch(r".*_s\d+")] if len(runs) else runs
    if not len(seeded):
        return []
    try:
        stats = summarise(seeded)
    except KeyError:  # no validation-selected metrics: runs without a validation split
        stats = summarise(seeded, selection="last")
    if not len(stats["summary"]) or stats["summary"]["n"].max() < 2:
        return []
    written: list[Path] = []
    for name, fn in (("seeds", plot_seed_values), ("paired_differences", plot_paired_differences),
                     ("momentum_seeds", plot_momentum_seeds)):
        if name == "paired_differences" and not (len(stats["paired"]) and
                                                 (stats["paired"]["n"] > 0).any()):
            continue
        if name == "momentum_seeds" and not stats["per_seed"]["variant"].str.startswith(
                "asymptotic_proxy_m").any():
            continue
        base = Path(out) / name
        kw = {}
        if name == "momentum_seeds" and "momentum" in seeded:  # each configuration's recipe
            ap = seeded[seeded["variant"].astype(str).str.startswith("asymptotic_proxy")]
            kw["momenta"] = {c: float(m) for c, m in zip(ap["config"], ap["momentum"])
                             if pd.notna(m)}
        fig = fn(stats, base, profile=profile, **kw)
        written += [base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")]
        if show is not None:
            show(fig)
        plt.close(fig)
    return written


#: The files of the repository's figures/ (what the README shows), relative to a figures folder.
README_FIGURES = ("seeds.png", "seeds.pdf", "paired_differences.png", "paired_differences.pdf",
                  "momentum_seeds.png", "momentum_seeds.pdf", "training_curves_demo.png",
                  "training_curves_demo.pdf",
                  "retrievals/retrievals_{profile}_fair_normsoftmax_s0.png")


def refresh_readme_figures(profile: str = "study", runs_root=None, dest=None) -> list[Path]:
    """Copy :data:`README_FIGURES` from the figures of ``runs/<profile>/08_figures/`` into the
    repository's ``figures/`` (``make figures``): the only way the README's figures change.
    Files of ``figures/`` not in that list are removed (they would be stale)."""
    import shutil

    from dml_core.core import paths

    root = Path(runs_root) if runs_root is not None else paths.runs_root()
    src = RunFolder(root / paths.check_name(profile, "profile name") / "08_figures").figures
    dest = Path(dest) if dest is not None else paths.FIGURES_DIR
    names = [n.format(profile=profile) for n in README_FIGURES]
    missing = [n for n in names if not (src / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{src} lacks {missing}: run `python -m dml_core.batch --profile "
                                f"{profile}` first (its 08_figures writes them)")
    keep = {dest / n for n in names}
    if dest.is_dir():
        for p in sorted(dest.rglob("*"), reverse=True):
            if p.is_file() and p not in keep:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    out = []
    for n in names:
        target = dest / n
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(src / n, tmp)
        out.append(target)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m dml_core.report.figures",
                                 description="Refresh the README's figures (figures/) from a "
                                 "profile's 08_figures run.")
    ap.add_argument("--refresh", action="store_true", required=True)
    ap.add_argument("--profile", default="study")
    a = ap.parse_args()
    from dml_core.core.paths import is_valid_name

    if not is_valid_name(a.profile):
        ap.error(f"--profile {a.profile!r} must be a profile name: letters, digits, '_', '.', '-'")
    for p in refresh_readme_figures(a.profile):
        print("wrote", p)
