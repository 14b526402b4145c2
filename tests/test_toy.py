"""The STL-10 toy (issue 7): a tiny run of both variants through run_toy / run_toy_study."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dml_core.data.toy import ToyArrayDataset
from dml_core.study.toy import load_toy_history, run_toy, run_toy_study, toy_config

TINY = dict(epochs=1, image_size=16, digits_per_class=12, snapshot_per_class=6, batch_size=32,
            source="digits", device="cpu", progress=False, pretrained=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box: one thread is faster for this tiny net
    run_dir = tmp_path_factory.mktemp("toy")
    try:
        out = run_toy_study(toy_config("smoke", **TINY), run_dir, momenta=[0.5, 0.9])
    finally:
        torch.set_num_threads(threads)
    return run_dir, out


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(KeyError, match="unknown toy config"):
        toy_config("demo", epoch=3)
    with pytest.raises(ValueError, match="feature_dim"):
        toy_config("demo", feature_dim=4)
    assert toy_config("full")["epochs"] == 30 and toy_config("full")["lr"] == 1e-4
    # a copied profile gets the original code's setting, never the demo's small one (issue 16)
    assert toy_config("unknown-profile") == toy_config("full") != toy_config("demo")


def test_array_dataset_applies_transform():
    imgs = np.zeros((3, 8, 8, 3), np.uint8)
    ds = ToyArrayDataset(imgs, np.array([0, 1, 2]), transform=lambda a: torch.ones(1) * a.sum())
    assert len(ds) == 3 and ds[2][1] == 2 and ds[1][0].item() == 0
    with pytest.raises(ValueError):
        ToyArrayDataset(imgs, np.array([0, 1]))


def test_run_folder_files(study):
    run_dir, out = study
    for variant in ("moving", "learnable"):
        d = run_dir / variant
        assert (d / f"toy_{variant}_history.pt").is_file()
        assert (d / "metrics.csv").read_text().splitlines()[0].startswith("epoch,")
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["protocol"] == "toy"
        assert summary["toy"]["source"] == "digits"
    assert out["source"] == "digits" and "digits stand-in" in out["source_label"]
    assert (run_dir / "toy_study.json").is_file() and (run_dir / "sweep.csv").is_file()


def test_saved_embeddings_are_unit_norm_2d(study):
    run_dir, _ = study
    h = load_toy_history(run_dir / "moving")
    assert h["epochs"].tolist() == [0, 1]
    for key in ("train_embeddings", "test_embeddings", "proxies"):
        x = h[key]
        assert x.shape[-1] == 2
        assert torch.allclose(x.norm(dim=-1), torch.ones(x.shape[:-1]), atol=1e-5), key
    assert h["test_embeddings"].shape[1] == 180  # 3 unseen classes x 60
    assert set(h["test_labels"].tolist()) == {0, 1, 2}
    assert h["proxies"].shape[1] == 7
    assert 0.0 <= float(h["test_recall"][-1]) <= 1.0


def test_moving_proxies_moved_and_are_not_learnable(study):
    run_dir, _ = study
    h = load_toy_history(run_dir / "moving")
    assert (h["proxies"][-1] - h["proxies"][0]).abs().max() > 1e-2  # the update moved them
    # 7 x 12 images / batch 32 = 3 steps: the initial proxies + one record per step
    assert h["trail_epoch"].tolist() == [0, 1, 1, 1]
    assert torch.allclose(h["trail"][-1], h["proxies"][-1])
    # the trained method: proxies a buffer, not in the optimiser, no grad
    from dml_core.methods.toy import ToyMethod

    ckpt = torch.load(run_dir / "moving" / "checkpoints" / "last.pt", weights_only=True)
    method = ToyMethod({"feature_dim": 2, "pretrained": False, "epochs": 1}, 7)
    method.load_state_dict(ckpt["method"])
    proxies = method.criterion.proxies
    assert not isinstance(proxies, torch.nn.Parameter) and not proxies.requires_grad
    assert "proxies" in dict(method.criterion.named_buffers())
    in_opt = {id(p) for g in method.optimizer.param_groups for p in g["params"]}
    assert id(proxies) not in in_opt
    saved = torch.nn.functional.normalize(proxies, dim=1)
    assert torch.allclose(saved, h["proxies"][-1], atol=1e-5)


def test_learnable_proxies_are_a_parameter_changed_by_the_optimizer(study):
    run_dir, _ = study
    h = load_toy_history(run_dir / "learnable")
    delta = (h["proxies"][-1] - h["proxies"][0]).abs().max()
    assert delta > 1e-6  # Adam moved them
    moving = load_toy_history(run_dir / "moving")
    assert torch.allclose(h["proxies"][0], moving["proxies"][0])  # same seed, same start
    from dml_core.methods.toy import ToyMethod

    method = ToyMethod({"feature_dim": 2, "pretrained": False, "epochs": 1, "learnable": True}, 7)
    p = method.criterion.proxies
    assert isinstance(p, torch.nn.Parameter) and p.requires_grad
    assert any(q is p for g in method.optimizer.param_groups for q in g["params"])
    ckpt = torch.load(run_dir / "learnable" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["method"]["optimizers"]["main"]["state"]  # Adam has moments, incl. the proxies
    method.load_state_dict(ckpt["method"])
    assert torch.allclose(torch.nn.functional.normalize(p.detach(), dim=1), h["proxies"][-1],
                          atol=1e-5)


def test_momentum_sweep_reuses_the_moving_run(study):
    run_dir, out = study
    ms = [r["momentum"] for r in out["sweep"]]
    assert ms == [0.5, 0.9]
    assert out["sweep"][0]["run_dir"] == str(run_dir / "moving")
    assert (run_dir / "sweep" / "m0.9" / "toy_moving_history.pt").is_file()


def test_figures_written(study):
    run_dir, out = study
    fig_dir = run_dir / "figures"
    for name in ("toy_embeddings", "toy_proxy_evolution", "toy_recall", "toy_momentum_sweep"):
        for ext in ("png", "pdf"):
            f = fig_dir / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    gif = fig_dir / "toy_proxies.gif"
    from PIL import Image

    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames >= 2


def test_run_toy_resumes_without_retraining(study, monkeypatch):
    """A finished run is read back: no training step runs (a deterministic retrain would also
    reproduce R@1, so R@1 alone could not tell), and the run folder's files are untouched."""
    from dml_core.methods.toy import ToyMethod

    run_dir, out = study
    steps = []
    original = ToyMethod.training_step
    monkeypatch.setattr(ToyMethod, "training_step",
                        lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    files = ("metrics.csv", "summary.json", "checkpoints/last.pt", "toy_moving_history.pt")
    before = {f: (run_dir / "moving" / f).stat().st_mtime_ns for f in files}
    again = run_toy(toy_config("smoke", **TINY), run_dir / "moving")
    assert steps == [], f"{len(steps)} training step(s) ran on a finished run"
    assert {f: (run_dir / "moving" / f).stat().st_mtime_ns for f in files if f != files[-1]} \
        == {f: t for f, t in before.items() if f != files[-1]}
    assert again["final_r1"] == pytest.approx(out["results"]["moving"]["final_r1"])


def test_run_toy_retrains_after_a_code_change(study, monkeypatch, tmp_path):
    """A finished toy run made by other code is not reused: its files are cleared and it is
    retrained (the reuse rule of every training run, provenance.json)."""
    import shutil

    import dml_core.study.toy as toy
    from dml_core.methods.toy import ToyMethod

    run_dir, _ = study
    copy = tmp_path / "moving"
    shutil.copytree(run_dir / "moving", copy)
    steps = []
    original = ToyMethod.training_step
    monkeypatch.setattr(ToyMethod, "training_step",
                        lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    monkeypatch.setattr(toy, "toy_code_fingerprint", lambda: "changed-code")
    run_toy(toy_config("smoke", **TINY), copy)
    assert steps, "a run made by other code was reused"
    assert json.loads((copy / "provenance.json").read_text())["code"] == "changed-code"
