"""Every figure function writes a PNG and a PDF (atomically) from synthetic run folders."""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_report import make_run  # noqa: E402

from dml_core.report import figures as F  # noqa: E402
from dml_core.report import load_runs  # noqa: E402


def _written(base: Path) -> None:
    png, pdf = base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-"
    # atomic writes leave no temporary file behind
    assert not [p for p in base.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig") / "runs"
    make_run(root, "demo", "ns_car", method="normsoftmax", dataset="car")
    make_run(root, "demo", "cgd_car", method="cgd", dataset="car", binary=False, validation=True,
             r1=(0.4, 0.7, 0.72))
    make_run(root, "demo", "pp_car", method="positive_proxy", dataset="car",
             backbone="googlenet", status="failed", epochs=2)
    for i, m in enumerate((0.1, 0.5, 0.9)):
        make_run(root, "demo", f"ap_m{m}", method="asymptotic_proxy", dataset="cub",
                 backbone="resnet50", momentum=m, r1=(0.6 + 0.05 * i,), features=False)
    return load_runs(root)


def test_save_figure_atomic(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    paths = F.save_figure(fig, tmp_path / "sub" / "x.png")  # an extension is replaced
    plt.close(fig)
    assert [p.name for p in paths] == ["x.png", "x.pdf"]
    _written(tmp_path / "sub" / "x")


def test_saving_the_same_figure_twice_gives_identical_files(tmp_path):
    import time

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    first = [p.read_bytes() for p in F.save_figure(fig, tmp_path / "a")]
    time.sleep(1.1)  # a creation date in seconds would differ now
    second = [p.read_bytes() for p in F.save_figure(fig, tmp_path / "a")]
    plt.close(fig)
    assert first == second


def test_training_curves(runs, tmp_path):
    fig = F.plot_training_curves(runs[runs["dataset"] == "car"], tmp_path / "curves",
                                 profile="demo")
    assert "demo" in fig._suptitle.get_text() and "CARS196" in fig._suptitle.get_text()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("(val)" in lab for lab in labels) and any("failed" in lab for lab in labels)
    # the plotted values: each run's R@1 per epoch in %, from its metrics.csv (make_run's r1)
    drawn = {line.get_label(): (list(map(int, line.get_xdata())),
                                [round(float(y), 6) for y in line.get_ydata()])
             for ax in fig.axes for line in ax.lines if not line.get_label().startswith("_")}
    assert drawn["NormSoftmax ResNet50"] == ([1, 2, 3], [50.0, 62.0, 58.0])
    assert drawn["CGD ResNet50"] == ([1, 2, 3], [40.0, 70.0, 72.0])
    assert drawn["CGD ResNet50 (val)"] == ([1, 2, 3], [30.0, 50.0, 40.0])
    assert drawn["PP (positive proxy) GoogLeNet (failed)"] == ([1], [50.0])  # the epoch it did
    plt.close(fig)
    _written(tmp_path / "curves")


def test_recall_bars(runs, tmp_path):
    fig = F.plot_recall_bars(runs, "car", tmp_path / "bars", profile="demo", ks=(1, 8))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "not run" in texts and "62.0" in texts and "86.1" in texts
    assert len(fig.axes) == 2 and "demo" in fig._suptitle.get_text()
    plt.close(fig)
    _written(tmp_path / "bars")


def test_dense_vs_binary(runs, tmp_path):
    fig = F.plot_dense_vs_binary(runs, tmp_path / "db", profile="demo")
    ax = fig.axes[0]
    assert len(ax.collections) >= 2  # one run with binary + reported points
    points = {tuple(round(float(v), 6) for v in xy) for c in ax.collections
              for xy in c.get_offsets()}
    # reproduced runs at their best epoch: dense R@1 and binary R@1 = dense - 2 points (make_run)
    assert {(62.0, 60.0), (60.0, 58.0), (65.0, 63.0), (70.0, 68.0)} <= points
    assert not any(x == 72.0 for x, _ in points)  # the CGD run has no binary codes: not drawn
    plt.close(fig)
    _written(tmp_path / "db")


def test_retrieval_grid(runs, tmp_path):
    run_dir = runs[runs["run_id"] == "ns_car"].iloc[0]["run_dir"]
    fig = F.plot_retrieval_grid(run_dir, tmp_path / "grid", num_queries=3, k=4, profile="demo")
    assert len(fig.axes) >= 3
    # each neighbour's label "rank: cosine similarity"; a row is the top 4 of some test image
    import numpy as np
    import torch

    f = torch.load(Path(run_dir) / "features" / "best.pt", weights_only=True)["features"].numpy()
    sim = f.astype(np.float64) @ f.astype(np.float64).T
    np.fill_diagonal(sim, -np.inf)
    top4 = np.sort(sim, axis=1)[:, ::-1][:, :4]  # (N, 4)
    titles = [ax.get_xlabel() for ax in fig.axes]
    rows = [[float(t.split(": ")[1]) for t in titles[i + 1:i + 5]]
            for i, t in enumerate(titles) if t.startswith("query")]
    assert len(rows) == 3
    for row in rows:
        assert row == sorted(row, reverse=True)
        assert np.abs(top4 - np.array(row)).max(axis=1).min() < 1e-3, row  # 3 decimals shown
    plt.close(fig)
    _written(tmp_path / "grid")


def test_embedding_pca_and_umap_fallback(runs, tmp_path, monkeypatch):
    run_dir = runs[runs["run_id"] == "ns_car"].iloc[0]["run_dir"]
    fig = F.plot_embedding(run_dir, tmp_path / "pca", method="pca", profile="demo")
    assert fig.axes[0].get_title().startswith("PCA") and "CARS196" in fig.axes[0].get_title()
    # the drawn points: 40 (10 per class), centred, holding the two largest variances of the data
    import numpy as np
    import torch

    xy = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [10, 10, 10, 10]
    f = torch.load(Path(run_dir) / "features" / "best.pt", weights_only=True)["features"].numpy()
    eig = np.sort(np.linalg.eigvalsh(np.cov(f.astype(np.float64), rowvar=False, bias=True)))[::-1]
    assert np.allclose(xy.mean(0), 0, atol=1e-5)
    assert list((xy ** 2).mean(0)) == pytest.approx(list(eig[:2]), rel=1e-4)
    plt.close(fig)
    _written(tmp_path / "pca")
    # UMAP failing falls back to PCA and says so in the title
    import builtins

    real_import = builtins.__import__

    def no_umap(name, *a, **kw):
        if name == "umap":
            raise ImportError("no umap here")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_umap)
    fig = F.plot_embedding(run_dir, tmp_path / "fallback", method="umap")
    assert "UMAP failed" in fig.axes[0].get_title()
    plt.close(fig)
    _written(tmp_path / "fallback")


def test_umap_code_goes_to_numbas_disk_cache():
    # notebook 00 compiles UMAP's code (compile_umap) so that notebook 08 loads it: every
    # compiled function of umap's modules must then have a real cache, not numba's NullCache
    from numba.core.caching import NullCache

    umap = F.umap_module()
    from umap import layouts

    assert not isinstance(layouts._nb_optimize_layout_euclidean_single_epoch._cache, NullCache)
    assert F.umap_module() is umap  # once per process; the same module after
    assert F.compile_umap().startswith("UMAP's code compiled")


def test_cosine_distances_for_umap_match_scipy():
    # the matrix handed to UMAP ("precomputed") is the cosine distance UMAP would compute itself
    import numpy as np
    from scipy.spatial.distance import cdist

    x = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    x[3] = x[7]  # a duplicate: distance ~0 (rounding), never a negative number
    d = F.cosine_distances(x)
    assert d.shape == (30, 30) and np.allclose(d, d.T)
    assert np.allclose(d, np.clip(cdist(x.astype(np.float64), x, "cosine"), 0, None), atol=1e-12)
    assert (d >= 0).all() and (np.diag(d) == 0).all() and d[3, 7] < 1e-12


@pytest.mark.slow  # UMAP's numba JIT takes ~40 s
def test_embedding_real_umap(runs, tmp_path):
    import warnings

    run_dir = runs[runs["run_id"] == "ns_car"].iloc[0]["run_dir"]
    with warnings.catch_warnings(record=True) as caught:  # nothing reaches the notebook's output
        warnings.simplefilter("always")
        fig = F.plot_embedding(run_dir, tmp_path / "umap")
    assert fig.axes[0].get_title().startswith("UMAP")
    assert not [w for w in caught if "umap" in str(w.filename).lower()], caught
    _written(tmp_path / "umap")


def test_momentum_sensitivity(runs, tmp_path):
    fig = F.plot_momentum_sensitivity(runs, tmp_path / "mom", profile="demo")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "reproduced: ResNet50(512)" in labels
    assert "reported (hard-coded): ResNet-50(512)" in labels
    assert not any("GoogLeNet" in lab for lab in labels)  # only matching series overlaid
    line = next(l for l in fig.axes[0].lines if l.get_label().startswith("reproduced"))
    assert list(line.get_xdata()) == [0.1, 0.5, 0.9]
    assert list(line.get_ydata()) == pytest.approx([60.0, 65.0, 70.0])
    plt.close(fig)
    _written(tmp_path / "mom")
    fig = F.plot_momentum_sensitivity(None, tmp_path / "mom_reported", overlay="all",
                                      datasets=("car",))
    assert len(fig.axes[0].lines) == 6 and len(fig.axes) == 1
    plt.close(fig)
    _written(tmp_path / "mom_reported")


def test_embeddings_from_the_second_process_equal_those_computed_here(runs):
    # write_figures computes the 2-D points in a second (spawned) process: the same points
    import numpy as np

    from dml_core.study.notebooks import _embeddings_in_background

    dirs = list(runs[runs["run_id"].isin(["ns_car", "cgd_car"])]["run_dir"])
    points = _embeddings_in_background(dirs, "pca")
    for d in dirs:
        xy, labels, note = points(d)
        want_xy, want_labels, want_note = F.embedding_points(d, method="pca")
        assert note == want_note == "PCA" and np.array_equal(labels, want_labels)
        assert np.array_equal(xy, want_xy)


def test_write_figures_leaves_no_picture_of_a_previous_version(runs, tmp_path):
    from dml_core.study.notebooks import write_figures

    root = Path(runs.iloc[0]["run_dir"]).parents[1]
    out = tmp_path / "figures"
    (out / "retrievals").mkdir(parents=True)
    stale = out / "retrievals" / "retrievals_demo_ns_car.pdf"  # an older version drew PDFs
    stale.write_bytes(b"%PDF-")
    notes = out / "notes.txt"  # not a picture: not ours to remove
    notes.write_text("kept")
    written = write_figures(["demo"], out, runs_root=root, embedding="pca", show=False)
    assert (out / "retrievals" / "retrievals_demo_ns_car.png").is_file()
    assert not stale.exists() and notes.is_file()
    pictures = {p for p in out.rglob("*") if p.suffix in (".png", ".pdf", ".gif")}
    assert pictures == {Path(p) for p in written if Path(p).suffix in (".png", ".pdf", ".gif")}


def test_show_run_draws_retrievals_for_seed_0_only(runs, tmp_path, capsys):
    # one retrieval grid per configuration (seed 0), as 08_figures shows them; the other seeds
    # say where it is
    import json
    import shutil

    from dml_core.study.notebooks import show_run

    src = Path(runs[runs["run_id"] == "ns_car"].iloc[0]["run_dir"])
    for seed in (0, 1):
        run_dir = tmp_path / f"ns_car_s{seed}"
        shutil.copytree(src, run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["recipe"]["seed"] = seed
        (run_dir / "summary.json").write_text(json.dumps(summary))
        shown = show_run(run_dir, profile="demo")
        names = {Path(p).name for p in shown["figures"]}
        assert ("retrievals.png" in names) == (seed == 0), (seed, names)
        assert "training_curves.png" in names
    assert "drawn for seed 0 of this configuration (this run: seed 1)" in capsys.readouterr().out
