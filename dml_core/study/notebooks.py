"""Notebook-facing helpers of the study: what the numbered notebooks call, so they stay thin.

Every notebook validates its parameters (:func:`dml_core.profiles.params.validate_parameters`) and then
calls one or two functions of this module:

- ``00_prepare_data``: :func:`prepare_datasets` (prepares the data sets, returns a table).
- ``01``–``05`` (one training run each): :func:`train_notebook` trains the notebook's
  (method, data set, backbone, crop, overrides) recipe into its run folder (through
  :func:`run_training`); :func:`show_run` displays the training curves, the dense/binary
  Recall@K + MAP@R table and the retrieval pictures, and saves them into the run's figures.
- ``07_toy_proxies``: :func:`dml_core.study.toy.run_toy_study` (both proxy variants, the momentum
  sweep and the figures, into its run folder).
- ``06_benchmarks``: :func:`benchmark_report` builds every table from the run folders alone
  (nothing is retrained) and writes ``benchmark.md`` / ``benchmark.csv`` into its run folder.
- ``08_figures``: :func:`write_figures` draws the study's figures (PNG + PDF) from the runs.

The notebook's run folder is ``run_dir`` (injected by the batch runner), or, when a notebook is
opened interactively, :func:`dml_core.profiles.params.default_run_dir` (``validate_parameters`` resolves
it; :func:`resolve_run_dir` creates it).
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from dml_core.core import io, paths
from dml_core.core.run_folder import BASE_COLUMNS, RunFolder
from dml_core.profiles.params import default_run_dir

__all__ = [
    "resolve_run_dir",
    "resolve_device",
    "make_recipe",
    "run_training",
    "train_notebook",
    "metrics_table",
    "show_run",
    "method_log",
    "prepare_datasets",
    "benchmark_report",
    "write_figures",
    "resolve_output_dir",
    "retrieval_runs",
    "display",
]

#: Data sets whose benchmark tables 06 shows (demo first: the only one the demo profile trains).
TABLE_DATASETS = ("demo", "car", "cub", "sop", "isc")


# ------------------------------------------------------------------------------------------
def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # IPython absent: a script or a test
        return False
    return get_ipython() is not None


def display(obj: Any) -> None:
    """IPython's display in a notebook, print elsewhere (tests, scripts)."""
    if _in_notebook():
        from IPython.display import display as _display

        _display(obj)
    else:
        print(obj)


def resolve_run_dir(run_dir: str | os.PathLike | None, profile: str = "interactive",
                    notebook: str = "notebook") -> Path:
    """The notebook's run folder, created: ``run_dir`` or :func:`default_run_dir`."""
    path = Path(run_dir) if run_dir else default_run_dir(profile, notebook)
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def folder_name(recipe_name: str) -> str:
    """A recipe name as a folder name: ``"asymptotic_proxy/car/resnet50 [momentum=0.3]"`` →
    ``"asymptotic_proxy_car_resnet50_momentum=0.3"`` (no slash, space or bracket)."""
    return re.sub(r"[^\w.=-]+", "_", recipe_name).strip("_")


def resolve_device(device: str | None) -> str | None:
    """``"auto"``/None → None (the engine picks cuda when available), else the device string."""
    return None if device in (None, "auto") else str(device)


def make_recipe(method: str, dataset: str, backbone: str, crop: bool = False,
                overrides: dict | None = None) -> dict:
    """``dml_core.methods.recipes.get_recipe`` with the notebook's ``overrides`` (checked there)."""
    from dml_core.methods.recipes import get_recipe

    return get_recipe(method, dataset, backbone, crop=bool(crop), **copy.deepcopy(overrides or {}))


def _ensure_prepared(dataset: str, data_root) -> None:
    from dml_core.data import is_prepared, prepare

    if is_prepared(dataset, data_root):
        return
    if dataset == "demo":  # embedded: prepare it on the fly, so every notebook runs standalone
        prepare("demo", data_root)
        return
    root = data_root or paths.data_root()
    raise FileNotFoundError(
        f"data set {dataset!r} is not prepared under {root}: run notebooks/00_prepare_data.ipynb "
        f"(or `python -m dml_core.data {dataset}`) first")


def run_training(method: str, dataset: str, backbone: str, crop: bool = False,
                 overrides: dict | None = None, run_dir: str | os.PathLike | None = None,
                 data_root: str | os.PathLike | None = None, device: str | None = "auto",
                 progress: bool = False) -> dict:
    """Train one recipe into ``run_dir`` and return its summary (see docs/ARCHITECTURE.md).

    A finished run returns at once and an interrupted one resumes, when the recipe (``epochs``
    aside), the training code and the prepared data are those that produced it; otherwise every
    file of the old run is removed and it is trained again from scratch
    (:func:`dml_core.training.train`). The demo data set is prepared on the fly when
    missing; other data sets must have been prepared by ``00_prepare_data``. The summary holds the
    parameters and MACs of the model (key ``complexity``, written by the trainer).
    """
    from dml_core.training import train

    recipe = make_recipe(method, dataset, backbone, crop, overrides)
    run_dir = resolve_run_dir(run_dir, "interactive", folder_name(recipe["name"]))
    _ensure_prepared(recipe["dataset"], data_root)
    print(f"training {recipe['name']} into {run_dir}")
    t0 = time.time()
    summary = train(recipe, run_dir, data_root=data_root, device=resolve_device(device),
                    progress=progress)
    print(f"done in {time.time() - t0:.1f} s: status {summary.get('status')}, "
          f"{summary.get('epochs_completed')} epoch(s)")
    return summary


def train_notebook(params: Mapping[str, Any], method: str | None = None,
                   progress: bool = False) -> dict:
    """Step "Train" of notebooks 01–05: :func:`run_training` with the notebook's validated
    parameters (``method``: the notebook's fixed method, else ``params["method"]``)."""
    return run_training(method or params["method"], params["dataset"], params["backbone"],
                        crop=params["crop"], overrides=params["overrides"],
                        run_dir=params["run_dir"], data_root=params["data_root"],
                        device=params["device"], progress=progress)


# ------------------------------------------------------------------------------------------
def metrics_table(summary_or_run_dir) -> "pd.DataFrame":  # noqa: F821
    """Recall@K, MAP@R and R-precision (%) of the network before training (epoch 0: the baseline;
    the pretrained trunk under a fresh head, or a random network), the selected (best) and the
    last epoch, dense and binary features: one row per (epoch, feature)."""
    import pandas as pd

    summary = summary_or_run_dir
    if not isinstance(summary, dict):
        summary = RunFolder(summary_or_run_dir).read_summary()
        if summary is None:
            raise FileNotFoundError(f"{summary_or_run_dir} holds no training summary (train it "
                                    "first)")
    rows = []
    sel_name = "best on validation" if summary.get("selection") == "validation" \
        else "best on test"
    start = "pretrained, before fine-tuning" if (summary.get("recipe") or {}).get("pretrained") \
        else "untrained"
    for key, label in (("untrained", start), ("best", sel_name), ("last", "last")):
        entry = summary.get(key) or {}
        metrics = entry.get("metrics") or {}
        for feature in ("dense", "binary"):
            prefix = f"test/{feature}/"
            vals = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
            if not vals:
                continue
            recalls = sorted((k for k in vals if k.startswith("R@")), key=lambda k: int(k[2:]))
            others = [k for k in ("MAP@R", "RP") if k in vals]
            row = {"epoch": f"{label} ({entry.get('epoch')})", "feature": feature}
            row.update({k: round(100 * float(vals[k]), 2) for k in recalls + others})
            rows.append(row)
    return pd.DataFrame(rows)


def show_run(run_dir: str | os.PathLike, profile: str | None = None, num_queries: int = 4,
             k: int = 8, retrievals: bool | None = None) -> dict:
    """Display a run's curves, metric table and retrievals; save them into the run's figures
    folder (:attr:`RunFolder.figures`).

    ``retrievals``: draw the retrieval grid; None (default) draws it for a run of seed 0 or
    without a seed, one per configuration, as the figures notebook shows them (the other seeds
    of a configuration retrieve from the same kind of network: ~1 s a run saved).

    Returns ``{"table": DataFrame, "figures": [paths]}``; the table is also written there as
    ``metrics_table.csv``.
    """
    import matplotlib.pyplot as plt

    from dml_core import report

    run = RunFolder(run_dir)
    run_dir, fig_dir = run.root, run.figures
    fig_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summary = run.read_summary()
    table = metrics_table(run_dir if summary is None else summary)
    io.write_text(fig_dir / "metrics_table.csv", table.to_csv(index=False))
    written.append(fig_dir / "metrics_table.csv")
    info = {k: summary.get(k) for k in ("status", "epochs_completed", "train_time_s",
                                         "images_per_s", "num_parameters")}
    cx = summary.get("complexity") or {}
    if cx:
        info["MACs"] = f"{cx.get('macs', 0) / 1e6:.1f} M (batch 1, {cx.get('input_size')})"
    info["hardware"] = (summary.get("hardware") or {}).get("gpu") or \
        (summary.get("hardware") or {}).get("cpu")
    print(", ".join(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}"
                    for k, v in info.items()))
    display(table)

    # One PNG per figure, shown as that file: drawing a figure again for the notebook and a PDF
    # of every run took ~4 of the ~5 s this step cost per run (08_figures draws the PDFs).
    figures = [("training_curves", lambda: report.plot_training_curves([run_dir], profile=profile))]
    seed = ((summary or {}).get("recipe") or {}).get("seed")
    if retrievals is None:
        retrievals = seed in (None, 0)
        if not retrievals:
            print(f"retrievals: drawn for seed 0 of this configuration (this run: seed {seed})")
    if retrievals and run.best_features.is_file():
        figures.append(("retrievals", lambda: report.plot_retrieval_grid(
            run_dir, which="best", num_queries=num_queries, k=k, profile=profile)))
    for name, draw in figures:
        fig = draw()
        png, = report.save_figure(fig, fig_dir / name, formats=("png",))
        plt.close(fig)
        written.append(png)
        _show_png(png)
    return {"table": table, "figures": [str(p) for p in written if p.is_file()]}


def _show_png(path: Path) -> None:
    """Show a saved PNG in a notebook (the file's bytes, not a new drawing); print its path
    elsewhere."""
    if _in_notebook():
        from IPython.display import Image

        display(Image(filename=str(path)))
    else:
        print(path)


def method_log(run_dir: str | os.PathLike, show: bool = True) -> "pd.DataFrame":  # noqa: F821
    """The method's own per-epoch columns of the run's metrics (e.g. Dynamic Margin's margin
    mean/min/max), plotted against the epoch into ``method_log.{png,pdf}`` of its figures."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from dml_core.report import figure_style, load_metrics, save_figure

    m = load_metrics(run_dir)
    extra = [c for c in m.columns if c not in BASE_COLUMNS and "/" not in str(c)]
    table = m[["epoch", *extra]] if len(m) and extra else pd.DataFrame()
    if show:
        display(table if len(table) else "the method logs no extra per-epoch values")
    if len(table):
        with figure_style():
            fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
            for col in extra:
                ax.plot(m["epoch"], pd.to_numeric(m[col], errors="coerce"), marker="o", ms=3,
                        label=col)
            ax.set(xlabel="Epoch", title=f"Per-epoch values logged by the method ({Path(run_dir).name})")
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        save_figure(fig, RunFolder(run_dir).figures / "method_log")
        if show:
            display(fig)
        plt.close(fig)
    return table


# ------------------------------------------------------------------------------------------
def prepare_datasets(datasets: Sequence[str], data_root: str | os.PathLike | None = None,
                     run_dir: str | os.PathLike | None = None) -> "pd.DataFrame":  # noqa: F821
    """Prepare every data set (an existing index is kept) and return one row per split.

    Every data set is attempted; the ones that fail (raw files missing, ...) are listed and an
    error naming all of them is raised at the end. The table goes to ``<run_dir>/datasets.csv``.
    ``demo`` also gets its pretrained stand-in trunk (built once, :mod:`dml_core.models.standin`,
    while its images are written; a row ``stand-in trunk``: its source task's images and
    classes, and its file).
    """
    import pandas as pd

    from dml_core.data import prepare

    rows, failures = [], {}
    for ds in datasets:
        try:
            index = prepare(ds, data_root, with_standin=True)  # demo: beside its images
        except Exception as exc:  # noqa: BLE001 - keep going, report all at the end
            failures[ds] = f"{type(exc).__name__}: {exc}"
            rows.append({"dataset": ds, "split": "-", "images": None, "classes": None,
                         "status": "FAILED"})
            continue
        report_file = Path(index).parent / "prepare_report.json"
        rep = io.read_json(report_file) if report_file.is_file() else {}
        for split, v in (rep.get("splits") or {}).items():
            expected = (rep.get("expected_sizes") or {}).get(split)
            rows.append({"dataset": ds, "split": split, "images": v.get("images"),
                         "classes": v.get("classes"),
                         "expected images": expected.get("images") if isinstance(expected, dict)
                         else expected,
                         "status": "prepared", "index": str(index)})
        if ds == "demo":
            from dml_core.models import standin

            try:
                weights = standin.ensure_standin(data_root)
            except Exception as exc:  # noqa: BLE001 - keep going, report all at the end
                failures["demo stand-in"] = f"{type(exc).__name__}: {exc}"
                continue
            rows.append({"dataset": ds, "split": "stand-in trunk (single digits)",
                         "images": standin.NUM_CLASSES * standin.IMAGES_PER_DIGIT,
                         "classes": standin.NUM_CLASSES, "status": "ready",
                         "index": str(weights)})
    table = pd.DataFrame(rows)
    if run_dir is not None:
        io.write_text(Path(run_dir) / "datasets.csv", table.to_csv(index=False))
    if failures:
        raise RuntimeError("could not prepare: " + "; ".join(f"{k}: {v}"
                                                             for k, v in failures.items()))
    return table


# ------------------------------------------------------------------------------------------
def retrieval_runs(runs: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """The rows of :func:`dml_core.report.load_runs` that are retrieval runs of a published method
    (the toy's run folders, which also hold a training summary, are left out)."""
    from dml_core.methods.recipes import METHODS

    if not len(runs):
        return runs
    return runs[runs["method"].isin(METHODS)].reset_index(drop=True)


def resolve_output_dir(output_dir: str | os.PathLike | None, run_dir: str | os.PathLike) -> Path:
    """``None`` → the run's figures folder (:attr:`RunFolder.figures`); a relative path → inside
    ``run_dir`` (one that leaves it, ``../x`` or through a link, raises ValueError); an absolute path as is. A profile's figures
    stay in its run folder: the repository's ``figures/`` (the README's) change only through
    ``make figures`` (:func:`dml_core.report.figures.refresh_readme_figures`)."""
    if output_dir is None:
        return RunFolder(run_dir).figures
    out = Path(output_dir).expanduser()
    if out.is_absolute():
        return out
    inside = Path(run_dir) / out
    if not inside.resolve().is_relative_to(Path(run_dir).resolve()):
        raise ValueError(f"output_dir {str(output_dir)!r} leaves the run folder {run_dir}: give a "
                         "path inside it (e.g. 'figures') or an absolute path")
    return inside


def benchmark_report(profiles: Iterable[str], run_dir: str | os.PathLike,
                     runs_root: str | os.PathLike | None = None,
                     datasets: Sequence[str] = TABLE_DATASETS) -> dict:
    """Every benchmark table, from the run folders of ``profiles`` alone; written to ``run_dir``.

    For each data set: the reproduced numbers (best-on-test and last epoch) beside the authors'
    numbers, with "not run" where a row has no run; parameters and MACs; training time and
    throughput; hardware and profile. Files: ``benchmark.md`` (one section per data set with
    the caveats), ``benchmark.csv`` (every data set, every column) and ``runs.csv`` (one row per
    run folder found). Returns ``{"runs": DataFrame, "tables": {dataset: DataFrame}, "files"}``.
    """
    import pandas as pd

    from dml_core import report

    profiles = list(profiles)
    run_dir = Path(run_dir)
    root = Path(runs_root) if runs_root is not None else paths.runs_root()
    runs = retrieval_runs(report.load_runs(root, profiles=profiles))
    tables: dict[str, pd.DataFrame] = {}
    for ds in datasets:
        t = report.benchmark_table(runs, dataset=ds, profiles=profiles, include_all_reported=True)
        if len(t):
            tables[ds] = t
    md = [f"# Benchmarks: profile(s) {', '.join(profiles)}\n\n",
          f"{len(runs)} run folder(s) found under {root}. Built from the run folders alone "
          "(nothing retrained); \"not run\" = a row of the authors' tables without a run in "
          "these profiles.\n\n"]
    md.append(report.benchmark_markdown(runs, profiles=profiles, datasets=list(tables),
                                        details=True))
    combined = pd.concat([t.assign(**{"Data set key": ds}) for ds, t in tables.items()],
                         ignore_index=True) if tables else pd.DataFrame()
    files = {"markdown": run_dir / "benchmark.md", "csv": run_dir / "benchmark.csv",
             "runs": run_dir / "runs.csv"}
    io.write_text(files["markdown"], "".join(md))
    io.write_text(files["csv"], combined.to_csv(index=False))
    keep = [c for c in runs.columns if c != "recipe"]
    io.write_text(files["runs"], runs[keep].to_csv(index=False))
    return {"runs": runs, "tables": tables, "combined": combined,
            "files": {k: str(v) for k, v in files.items()}}


# ------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(text)).strip("_")


def write_figures(profiles: Iterable[str], output_dir: str | os.PathLike,
                  runs_root: str | os.PathLike | None = None, embedding: str = "umap",
                  show: bool = True) -> list[str]:
    """The study's figures (PNG + PDF; the per-run pictures PNG only) from the runs of
    ``profiles`` into ``output_dir``.

    Training curves and Recall@K bars per data set, dense vs binary, a retrieval grid and a
    UMAP (PCA fallback) of the test embeddings per run (the lowest seed of each configuration),
    AsymptoticProxy's momentum sensitivity, and, for seeded runs, every seed's value with the
    mean and its 95% interval and the paired differences
    (:func:`dml_core.report.figures.write_seed_figures`). Returns the written paths.
    """
    import matplotlib.pyplot as plt

    from dml_core import report

    profiles = list(profiles)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(runs_root) if runs_root is not None else paths.runs_root()
    from dml_core.report.figures import one_seed_per_config, write_seed_figures
    from dml_core.report.runs import with_configs

    all_runs = with_configs(retrieval_runs(report.load_runs(root, profiles=profiles)))
    runs = one_seed_per_config(all_runs)  # per-run figures: the lowest seed of each config
    prof = profiles if len(profiles) > 1 else profiles[0]
    trained = runs[runs["status"].notna()] if len(runs) else runs
    with_features = trained[trained["has_features"] == True] if len(trained) else trained  # noqa: E712
    # first: the 2-D embeddings take longest, and they are computed in a second process
    embeddings = _embeddings_in_background(list(with_features["run_dir"]), embedding)
    # the epoch the runs were selected at: on validation wherever a run has one (the test set
    # chooses nothing); the best test epoch (the authors' choice) only for runs without one
    from dml_core.report.tables import headline_selection

    sel = headline_selection(runs)
    written: list[Path] = []
    written += write_seed_figures(all_runs, out, profile=prof, show=display if show else None)

    def done(fig, base: Path) -> None:
        written.extend([base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")])
        if show:
            display(fig)
        plt.close(fig)

    datasets = sorted(trained["dataset"].dropna().unique()) if len(trained) else []
    for ds in datasets:
        sub = trained[trained["dataset"] == ds]
        base = out / f"training_curves_{ds}"
        done(report.plot_training_curves(sub, base, profile=prof, dataset=ds), base)
        base = out / f"recall_{ds}"
        done(report.plot_recall_bars(runs, ds, base, profile=prof, selection=sel), base)
    base = out / "dense_vs_binary"
    done(report.plot_dense_vs_binary(runs, base, profile=prof, selection=sel), base)
    for _, run in with_features.iterrows():
        name = _slug(f"{run['profile']}_{run['run_id']}")
        base = out / "retrievals" / f"retrievals_{name}"
        base.parent.mkdir(exist_ok=True)
        own = RunFolder(run["run_dir"]).figures / "retrievals.png"
        # A grid of photographs: PNG only (a PDF of it is a PNG in a wrapper). The training
        # notebook drew it from the same saved features (show_run): copy it, do not draw again
        # (drawing the 12 grids of `make report` again took ~30 s of the batch's serial tail).
        if own.is_file():
            with io.atomic_path(base.with_suffix(".png")) as tmp:
                shutil.copyfile(own, tmp)
        else:
            fig = report.plot_retrieval_grid(run["run_dir"], profile=run["profile"])
            report.save_figure(fig, base, formats=("png",))
            if show:
                display(fig)
            plt.close(fig)
        written.append(base.with_suffix(".png"))
    base = out / "momentum_sensitivity"
    done(report.plot_momentum_sensitivity(runs, base, profile=prof, selection=sel), base)
    written.extend(_copy_toy_figures(root, profiles, out / "toy"))
    for _, run in with_features.iterrows():  # last: their points were computed meanwhile
        name = _slug(f"{run['profile']}_{run['run_id']}")
        base = out / "embeddings" / f"umap_{name}"
        base.parent.mkdir(exist_ok=True)
        # a cloud of ~1,500 points: PNG only, shown as that file (a PDF and a second drawing for
        # the notebook took two thirds of each picture's ~1 s, in the batch's serial tail)
        fig = report.plot_embedding(run["run_dir"], method=embedding, profile=run["profile"],
                                    dataset=run["dataset"], points=embeddings(run["run_dir"]))
        png, = report.save_figure(fig, base, formats=("png",))
        plt.close(fig)
        written.append(png)
        if show:
            _show_png(png)
    # a picture this call did not draw is a previous version's (another code, other runs): gone
    keep = {Path(p).resolve() for p in written}
    for old in out.rglob("*"):
        if old.suffix in (".png", ".pdf", ".gif") and old.is_file() and old.resolve() not in keep:
            old.unlink()
    return [str(p) for p in written if p.is_file()]


def _embeddings_in_background(run_dirs: Sequence[str], method: str):
    """Start computing :func:`dml_core.report.figures.embedding_points` of ``run_dirs`` in a
    second process and return ``points(run_dir)``, which waits for one. UMAP's compiled code
    comes from numba's disk cache (:func:`dml_core.report.figures.compile_umap`, run by the data
    preparation; else it is compiled here, ~20 s), and then takes ~0.8 s a run: done beside the
    other figures, on the core the batch's last stage leaves idle, it no longer trails them. The
    points are seeded, so they are those a single process computes; if the second process
    cannot start or fails, they are computed here."""
    import concurrent.futures as cf
    import multiprocessing

    from dml_core.report.figures import embedding_points

    futures: dict[str, cf.Future] = {}
    pool = None
    if len(run_dirs) > 1:
        try:
            pool = cf.ProcessPoolExecutor(max_workers=1,
                                          mp_context=multiprocessing.get_context("spawn"))
            futures = {d: pool.submit(embedding_points, d, method=method) for d in run_dirs}
        except Exception:  # noqa: BLE001 - no second process here (limits, sandbox): serially
            futures = {}

    def points(run_dir: str):
        fut = futures.pop(run_dir, None)
        try:
            return fut.result() if fut is not None else embedding_points(run_dir, method=method)
        except Exception:  # noqa: BLE001 - the worker died or failed: compute it here
            return embedding_points(run_dir, method=method)
        finally:
            if not futures and pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    return points


def _copy_toy_figures(runs_root: Path, profiles: Sequence[str], dest: Path) -> list[Path]:
    """The toy notebook draws its own figures (``toy_*`` in its run's figures); collect them."""
    copied = []
    for profile in profiles:
        folders = sorted(p for p in (runs_root / profile).glob("*") if p.is_dir())
        for src in (f for folder in folders for f in sorted(RunFolder(folder).figures.glob("toy_*"))):
            target = dest / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            with io.atomic_path(target) as tmp:
                shutil.copyfile(src, tmp)
            copied.append(target)
    return copied
