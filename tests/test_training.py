"""The training engine on a tiny fake method: linear model on random vectors, a proxy loss."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dml_core.core.io import read_json, read_yaml
from dml_core.methods.base import Method, StepOutput
from dml_core.training import (
    ClassSubset, Evaluation, NonFiniteLossError, fit, get_rng_state, load_checkpoint,
    seed_everything, set_rng_state, split_classes,
)
from dml_core.core.run_folder import metrics_csv

D_IN, D_EMB, C, N = 8, 4, 5, 60


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D_IN, D_EMB)
        self.drop = nn.Dropout(0.2)  # consumes the torch RNG: resume must restore it

    def forward(self, x):
        return F.normalize(self.drop(self.fc(x)), dim=1)


class ProxyLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(C, D_EMB))
        self.register_buffer("moving", torch.zeros(C, D_EMB))

    def logits(self, emb):
        return emb @ F.normalize(self.proxies, dim=1).t() / 0.1


class FakeMethod(Method):
    name = "fake"

    def __init__(self, lr=0.1, nan_at=None):
        super().__init__(Normed(), ProxyLoss())
        self.opt = torch.optim.SGD(list(self.model.parameters()) + list(self.criterion.parameters()),
                                   lr=lr, momentum=0.9)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=2, gamma=0.5)
        self.nan_at = nan_at  # (epoch, step)
        self.epoch, self.step = 0, 0
        self.calls: list[str] = []

    def on_epoch_start(self, epoch):
        self.epoch, self.step = epoch, 0
        self.calls.append(f"start{epoch}")

    def training_step(self, images, labels):
        self.step += 1
        logits = self.criterion.logits(self.model(images))
        loss = F.cross_entropy(logits, labels)
        if self.nan_at == (self.epoch, self.step):
            loss = loss * float("nan")
        return StepOutput(loss=loss, logits=logits, embeddings=None, parts={"ce": loss.item()})

    def optimizers_for_epoch(self, epoch):
        return [self.opt]

    def all_optimizers(self):
        return {"main": self.opt}

    def all_schedulers(self):
        return {"main": self.sched}

    def after_optimizer_step(self, out, labels):
        self.criterion.moving.mul_(0.9).add_(0.1)

    def on_epoch_end(self, epoch):
        self.calls.append(f"end{epoch}")
        super().on_epoch_end(epoch)

    def epoch_log(self):
        return {"proxy_norm_mean": float(self.criterion.proxies.detach().norm(dim=1).mean())}


def make_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(C, D_IN, generator=g) * 2
    y = torch.arange(N) % C
    x = centers[y] + torch.randn(N, D_IN, generator=g)
    return x, y


class FakeEvaluator:
    """Self-retrieval R@1 on a held-out set; can raise at a chosen epoch (an interruption)."""

    def __init__(self, raise_at=None, scores=None):
        self.x, self.y = make_data(seed=1)
        self.raise_at, self.scores, self.epochs = raise_at, scores, []

    def __call__(self, model, epoch):
        self.epochs.append(epoch)
        if epoch == self.raise_at:
            raise KeyboardInterrupt(f"simulated interruption in epoch {epoch}")
        assert not model.training and not torch.is_grad_enabled()
        emb = model(self.x)
        sim = emb @ emb.t()
        sim.fill_diagonal_(-2)
        r1 = (self.y[sim.argmax(1)] == self.y).float().mean().item()
        if self.scores is not None:
            r1 = self.scores[epoch - 1]
        return Evaluation({"test/dense/R@1": r1, "test/dense/R@2": r1},
                          {"features": emb, "labels": self.y, "paths": [f"img{i}.png" for i in range(N)]})


def loader(seed=0):
    x, y = make_data(seed)
    g = torch.Generator().manual_seed(123)
    return DataLoader(TensorDataset(x, y), batch_size=12, shuffle=True, generator=g)


def run(tmp_path, name="run", epochs=3, evaluator=None, method=None, **kw):
    seed_everything(0)
    method = method or FakeMethod()
    evaluator = evaluator if evaluator is not None else FakeEvaluator()
    summary = fit(method, loader(), tmp_path / name, epochs, evaluator, progress=False,
                  recipe={"name": "fake", "epochs": epochs, "ks": (1, 2)}, protocol="demo", **kw)
    return summary, method


SUMMARY_KEYS = {"status", "recipe", "protocol", "selection", "best", "last", "epochs_completed",
                "train_time_s", "images_per_s", "num_parameters", "hardware", "versions", "git_commit"}


def test_one_training_step_lowers_the_loss():
    seed_everything(0)
    method = FakeMethod(lr=0.5)
    method.model.drop.p = 0.0
    x, y = make_data()
    before = F.cross_entropy(method.criterion.logits(method.model(x)), y).item()
    method.zero_grad()
    out = method.training_step(x, y)
    out.loss.backward()
    method.optimizer_step(1)
    after = F.cross_entropy(method.criterion.logits(method.model(x)), y).item()
    assert after < before


def test_run_folder_contents_and_summary_schema(tmp_path):
    summary, method = run(tmp_path, epochs=3)
    root = tmp_path / "run"
    for rel in ["config.yaml", "metrics.csv", "summary.json", "checkpoints/last.pt",
                "checkpoints/best.pt", "features/best.pt", "features/last.pt"]:
        assert (root / rel).is_file(), rel
    assert not list(root.rglob("*.tmp")), "atomic writes leave no temporary files"
    on_disk = read_json(root / "summary.json")
    assert SUMMARY_KEYS <= set(on_disk)
    assert on_disk["status"] == "complete" and on_disk["epochs_completed"] == 3
    assert on_disk["selection"] == "test" and on_disk["protocol"] == "demo"
    assert on_disk["last"]["epoch"] == 3
    assert on_disk["num_parameters"] == D_IN * D_EMB + D_EMB + C * D_EMB
    assert on_disk["images_per_s"] > 0 and on_disk["train_time_s"] > 0
    assert set(on_disk["hardware"]) >= {"device", "cpu", "gpu"} and on_disk["hardware"]["gpu"] is None
    assert set(on_disk["versions"]) >= {"torch", "torchvision", "python", "dml_core"}
    assert on_disk["git_commit"] is None or len(on_disk["git_commit"]) == 40
    assert read_yaml(root / "config.yaml") == {"name": "fake", "epochs": 3, "ks": [1, 2]}

    df = pd.read_csv(root / "metrics.csv")
    assert list(df.columns[:6]) == ["epoch", "lr", "train_loss", "train_accuracy", "images_per_s",
                                   "epoch_time_s"]
    assert list(df.columns[6:8]) == ["test/dense/R@1", "test/dense/R@2"]
    assert "proxy_norm_mean" in df.columns and "train/ce" in df.columns
    assert df["epoch"].tolist() == [1, 2, 3]
    assert df["lr"].tolist() == pytest.approx([0.1, 0.1, 0.05])  # the scheduler stepped per epoch
    assert df["train_accuracy"].between(0, 1).all()
    assert method.calls == ["start1", "end1", "start2", "end2", "start3", "end3"]

    feats = load_checkpoint(root / "features/last.pt")
    assert feats["features"].shape == (N, D_EMB) and feats["labels"].shape == (N,)
    assert feats["paths"][0] == "img0.png" and feats["epoch"] == 3
    last = load_checkpoint(root / "checkpoints/last.pt")  # weights_only=True inside
    assert last["epoch"] == 3 and len(last["history"]) == 3
    assert set(last["method"]) == {"model", "criterion", "optimizers", "schedulers"}


def test_best_vs_last_bookkeeping(tmp_path):
    scores = [0.5, 0.7, 0.7, 0.6]  # a tie is not better: the original repositories use strictly greater
    summary, _ = run(tmp_path, epochs=4, evaluator=FakeEvaluator(scores=scores))
    assert summary["best"]["epoch"] == 2
    assert summary["best"]["metrics"]["test/dense/R@1"] == 0.7
    assert summary["last"]["epoch"] == 4
    assert summary["last"]["metrics"]["test/dense/R@1"] == 0.6
    root = tmp_path / "run"
    assert load_checkpoint(root / "checkpoints/best.pt")["epoch"] == 2
    assert load_checkpoint(root / "features/best.pt")["epoch"] == 2
    assert load_checkpoint(root / "features/last.pt")["epoch"] == 4


def test_eval_every_always_evaluates_the_last_epoch(tmp_path):
    ev = FakeEvaluator()
    run(tmp_path, epochs=5, evaluator=ev, eval_every=2)
    assert ev.epochs == [0, 2, 4, 5]  # 0: the untrained baseline
    df = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert df["test/dense/R@1"].isna().tolist() == [True, False, True, False, False]


def test_resume_reproduces_the_uninterrupted_metrics(tmp_path):
    straight, _ = run(tmp_path, "straight", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "resumed", epochs=3, evaluator=FakeEvaluator(raise_at=3))
    root = tmp_path / "resumed"
    assert read_json(root / "summary.json")["status"] == "failed"
    assert load_checkpoint(root / "checkpoints/last.pt")["epoch"] == 2
    assert len(pd.read_csv(root / "metrics.csv")) == 2
    # a fresh process would rebuild everything from the seed; the RNG is then far from epoch 2's
    torch.manual_seed(999)
    ev = FakeEvaluator()
    resumed, method = run(tmp_path, "resumed", epochs=3, evaluator=ev)
    assert ev.epochs == [3] and method.calls == ["start3", "end3"]
    a = pd.read_csv(tmp_path / "straight" / "metrics.csv")
    b = pd.read_csv(root / "metrics.csv")
    timing = ["images_per_s", "epoch_time_s"]
    assert list(a.columns) == list(b.columns)
    np.testing.assert_allclose(a.drop(columns=timing).to_numpy(), b.drop(columns=timing).to_numpy(),
                               rtol=0, atol=1e-6)
    assert resumed["status"] == "complete" and resumed["best"] == straight["best"]
    sa = load_checkpoint(tmp_path / "straight" / "checkpoints/last.pt")["method"]
    sb = load_checkpoint(root / "checkpoints/last.pt")["method"]
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k])
    assert torch.equal(sa["criterion"]["moving"], sb["criterion"]["moving"])


def test_finished_run_is_skipped(tmp_path):
    first, _ = run(tmp_path, epochs=2)
    ev = FakeEvaluator()
    second, method = run(tmp_path, epochs=2, evaluator=ev)
    assert ev.epochs == [] and method.calls == []
    assert second == read_json(tmp_path / "run" / "summary.json")
    assert second["best"] == first["best"]


def test_nan_loss_stops_cleanly(tmp_path):
    run(tmp_path, epochs=1)  # epoch 1 complete ...
    before = (tmp_path / "run" / "metrics.csv").read_text()
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 3"):
        run(tmp_path, epochs=3, method=FakeMethod(nan_at=(2, 3)))  # ... resumed, NaN in epoch 2
    root = tmp_path / "run"
    summary = read_json(root / "summary.json")
    assert summary["status"] == "failed" and "epoch 2, step 3" in summary["message"]
    assert summary["epochs_completed"] == 1
    assert (root / "metrics.csv").read_text() == before
    assert load_checkpoint(root / "checkpoints/last.pt")["epoch"] == 1
    assert (root / "features/best.pt").is_file() and not list(root.rglob("*.tmp"))


def test_validation_selection(tmp_path):
    class ValEvaluator(FakeEvaluator):
        def __call__(self, model, epoch):
            out = super().__call__(model, epoch)
            out.metrics["val/dense/R@1"] = [0.9, 0.1, 0.2][epoch - 1]
            return out

    summary, _ = run(tmp_path, epochs=3, evaluator=ValEvaluator(),
                     selection_metric="val/dense/R@1")
    assert summary["selection"] == "validation" and summary["best"]["epoch"] == 1
    assert "test/dense/R@1" in summary["best"]["metrics"]  # test reported at the selected epoch
    cols = pd.read_csv(tmp_path / "run" / "metrics.csv").columns.tolist()
    assert cols.index("test/dense/R@2") < cols.index("val/dense/R@1") < cols.index("proxy_norm_mean")


def test_validation_split_is_class_disjoint_and_deterministic():
    labels = np.repeat(np.arange(20), 3)
    train, val = split_classes(labels, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert not set(train) & set(val) and set(train) | set(val) == set(range(20))
    again = split_classes(labels, 0.25, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    assert not np.array_equal(split_classes(labels, 0.25, seed=4)[1], val)
    assert len(split_classes(labels, 0.0, seed=3)[1]) == 0
    with pytest.raises(ValueError):
        split_classes(labels, 1.0)

    class DS:
        def __init__(self):
            self.labels, self.paths = labels, [f"p{i}" for i in range(len(labels))]

        def __getitem__(self, i):
            return torch.tensor([float(i)]), int(self.labels[i])

    sub = ClassSubset(DS(), val)
    assert sub.num_classes == 5 and len(sub) == 15
    assert sorted(set(sub.labels.tolist())) == list(range(5))
    image, label = sub[4]
    original = int(image.item())
    assert labels[original] == val[label] and sub.paths[4] == f"p{original}"


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    import random

    from dml_core.core.io import torch_save

    seed_everything(5)
    torch_save(get_rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_metrics_csv_keeps_full_precision_and_missing_cells():
    text = metrics_csv([{"epoch": 1, "train_loss": 1 / 3}, {"epoch": 2, "test/dense/R@1": 0.5}])
    lines = text.splitlines()
    assert lines[0].startswith("epoch,lr,train_loss")
    assert repr(1 / 3) in lines[1] and float(lines[1].split(",")[2]) == 1 / 3
    assert lines[2].split(",")[2] == ""


def test_no_logits_gives_nan_accuracy_and_progress_prints(tmp_path, capsys):
    class NoLogits(FakeMethod):
        def training_step(self, images, labels):
            out = super().training_step(images, labels)
            return StepOutput(loss=out.loss)

    seed_everything(0)
    fit(NoLogits(), loader(), tmp_path / "run", 1, FakeEvaluator(), progress=True)
    df = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert math.isnan(df["train_accuracy"][0]) and df["train_loss"][0] > 0
    assert "epoch 1: loss" in capsys.readouterr().out


def test_run_folder_detects_a_changed_recipe_and_discards_its_progress(tmp_path):
    """A folder trained with another recipe is not resumed: epochs may grow, nothing else."""
    from dml_core.training import RunFolder

    run = RunFolder(tmp_path)
    recipe = {"name": "x", "lr": 0.1, "epochs": 2}
    assert run.recipe_changes(recipe) == []          # no config yet
    run.write_config(recipe)
    run.write_summary({"status": "complete", "epochs_completed": 2})
    run.write_metrics([{"epoch": 1, "train_loss": 1.0}])
    assert run.recipe_changes(dict(recipe, epochs=5)) == []
    assert run.recipe_changes(dict(recipe, lr=0.2)) == ["lr"]
    run.discard_progress()
    assert not run.summary.exists() and not run.metrics.exists()
    assert run.config.exists()


def test_untrained_baseline_is_recorded_once(tmp_path):
    """The network is evaluated before the first step; a resumed run keeps that baseline."""
    ev = FakeEvaluator()
    summary, _ = run(tmp_path, epochs=1, evaluator=ev)
    assert ev.epochs[0] == 0 and summary["untrained"]["epoch"] == 0
    assert "test/dense/R@1" in summary["untrained"]["metrics"]
    summary2, _ = run(tmp_path, epochs=2, evaluator=ev)
    assert ev.epochs.count(0) == 1 and summary2["untrained"] == summary["untrained"]


def test_a_resumed_run_keeps_its_baseline_from_the_resume_point_not_the_summary(tmp_path):
    """The untrained metrics travel in checkpoints/last.pt: a summary rewritten (or lost) after
    an interruption does not change them."""
    from dml_core.core.io import write_json

    ev = FakeEvaluator(raise_at=2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, epochs=3, evaluator=ev)
    root = tmp_path / "run"
    before = load_checkpoint(root / "checkpoints/last.pt")["untrained"]
    assert before["epoch"] == 0 and "test/dense/R@1" in before["metrics"]
    write_json(root / "summary.json", {"status": "failed", "untrained": {"epoch": 0, "metrics": {}}})
    ev2 = FakeEvaluator()
    summary, _ = run(tmp_path, epochs=3, evaluator=ev2)
    assert 0 not in ev2.epochs and summary["untrained"] == before
