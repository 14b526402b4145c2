"""The one training loop that serves every method (NormSoftmax, CGD, AsymptoticProxy, PP, LDM).

It knows nothing about data sets or losses: it drives the :class:`dml_core.methods.base.Method`
contract step by step (see that module's docstring), evaluates through a plain callable, and
writes the run folder through :class:`dml_core.core.run_folder.RunFolder`. An interrupted run
resumes from its resume point and, on the CPU, reproduces the uninterrupted metrics.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm  # plain text: no widget warning in notebooks

from dml_core.core.run_folder import RunFolder, plain
from dml_core.models.complexity import count_parameters

from .provenance import git_commit, hardware_info, library_versions
from .seeding import get_rng_state, set_rng_state
from .selection import is_better


class NonFiniteLossError(RuntimeError):
    """A NaN or infinite training loss; names the epoch and the step (both 1-based)."""

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(f"non-finite loss ({value}) at epoch {epoch}, step {step}; training "
                         f"stopped, the resume point keeps the end of epoch {epoch - 1}")


@dataclass
class Evaluation:
    """What an evaluator returns: flat metrics with their split prefix (``test/dense/R@1``,
    ``val/dense/R@1``) and, optionally, the test features to save (``features, labels, paths``
    [+ ``gallery_features, gallery_labels, gallery_paths``])."""

    metrics: dict[str, float]
    features: dict[str, Any] | None = None


#: ``evaluator(model, epoch) -> Evaluation`` (a plain metrics dict is accepted too).
Evaluator = Callable[[torch.nn.Module, int], "Evaluation | dict"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else cuda when available, else cpu."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit(method, train_loader, run_dir: str | Path, epochs: int, evaluator: Evaluator | None = None,
        eval_every: int = 1, *, device: str | torch.device | None = None,
        max_steps_per_epoch: int | None = None, recipe: dict | None = None,
        protocol: str | None = None, selection_metric: str = "test/dense/R@1",
        resume: bool = True, progress: bool = True, summary_extra: dict | None = None,
        evaluate_untrained: bool = True) -> dict:
    """Train ``method`` for ``epochs`` epochs (numbered from 1), writing ``run_dir``; return the
    summary. Evaluates every ``eval_every`` epochs and always after the last one; the best epoch
    is the one whose ``selection_metric`` is strictly greater than the best so far. With
    ``evaluate_untrained`` the network is also evaluated before the first step (summary key
    ``untrained``): the baseline that training has to beat."""
    run = RunFolder(run_dir)
    if resume and run.is_complete(epochs):
        return run.read_summary()  # trained before: nothing to do
    device = resolve_device(device)
    _prepare(method, device)
    eval_every = max(1, int(eval_every or 1))

    # What one epoch hands to the next. The resume point saves all of it, so that a resumed run
    # continues with the same weights, optimiser moments, RNG streams, best epoch and baseline.
    history: list[dict] = []  # one row of the metrics per epoch
    best: dict | None = None  # {"epoch", "value", "metrics"} of the selected epoch
    train_time_s = step_time_s = 0.0  # whole epochs / the optimisation steps alone
    images_seen = 0
    untrained: dict | None = None  # {"epoch": 0, "metrics"}: the network before the first step
    start = 0
    if resume and run.last_checkpoint.exists():
        state = run.read_checkpoint("last")
        method.load_state_dict(state["method"])
        set_rng_state(state["rng"])
        for name, gen in _loader_generators(train_loader).items():
            if name in state.get("loader_rng", {}):
                gen.set_state(state["loader_rng"][name])
        history, best, start = state["history"], state["best"], state["epoch"]
        totals = state["totals"]
        train_time_s, step_time_s = totals["train_time_s"], totals["step_time_s"]
        images_seen = totals["images"]
        untrained = state.get("untrained")
        run.write_metrics(history)
    if recipe is not None:
        run.write_config(recipe)

    # The untrained network's metrics: the baseline a run must beat. Evaluated once, before the
    # first step (a resumed run has them from its resume point).
    if start == 0 and evaluator is not None and evaluate_untrained:
        untrained = {"epoch": 0, "metrics": _evaluate(evaluator, method, 0).metrics}
    header = {"recipe": plain(recipe or {}), "protocol": protocol,
              "selection": "validation" if selection_metric.startswith("val/") else "test",
              "selection_metric": selection_metric, "epochs": int(epochs),
              "num_parameters": count_parameters(method.model, method.criterion),
              "hardware": hardware_info(device), "versions": library_versions(),
              "git_commit": git_commit(), **plain(summary_extra or {}), "untrained": untrained}
    run.write_summary(_summary("running", header, history, best, train_time_s, step_time_s,
                               images_seen))
    try:
        for epoch in range(start + 1, epochs + 1):
            t0 = time.perf_counter()
            # 1. train: one pass over the loader in the Method contract's step order
            stats, images, step_time = train_epoch(method, train_loader, epoch, device,
                                                   max_steps_per_epoch, progress)
            row: dict[str, Any] = {"epoch": epoch, **stats}

            # 2. evaluate every eval_every epochs and after the last one (eval mode, no_grad)
            evaluation = None
            if evaluator is not None and (epoch % eval_every == 0 or epoch == epochs):
                evaluation = _evaluate(evaluator, method, epoch)
                row.update(evaluation.metrics)

            # 3. the method's own per-epoch values (e.g. the margins), then the epoch's clock
            row.update({k: _number(v) for k, v in method.epoch_log().items()})
            row["epoch_time_s"] = time.perf_counter() - t0
            history.append(row)
            train_time_s += row["epoch_time_s"]
            step_time_s += step_time
            images_seen += images

            # 4. model selection: a strictly better epoch replaces the best checkpoint and features
            if evaluation is not None:
                if selection_metric not in evaluation.metrics:
                    raise KeyError(f"selection metric {selection_metric!r} not among the "
                                   f"evaluator's metrics {sorted(evaluation.metrics)}")
                value = evaluation.metrics[selection_metric]
                if is_better(value, None if best is None else best["value"]):
                    best = {"epoch": epoch, "value": value, "metrics": dict(evaluation.metrics)}
                    run.write_best(epoch=epoch, method=method, metrics=evaluation.metrics)
                    if evaluation.features is not None:
                        run.write_features("best", evaluation.features, epoch)
                if epoch == epochs and evaluation.features is not None:
                    run.write_features("last", evaluation.features, epoch)

            # 5. save, so that an interruption from here on loses nothing of this epoch
            run.write_metrics(history)
            run.write_last(
                epoch=epoch, method_state=method.state_dict(), rng=get_rng_state(),
                history=history, best=best, untrained=untrained,
                totals={"train_time_s": train_time_s, "step_time_s": step_time_s,
                        "images": images_seen},
                loader_rng={k: g.get_state() for k, g in _loader_generators(train_loader).items()})
            run.write_summary(_summary("running", header, history, best, train_time_s,
                                       step_time_s, images_seen))
            if progress:
                tqdm.write(_epoch_line(row, selection_metric))
    except BaseException as exc:  # NaN loss, errors, Ctrl-C: record, keep every earlier file
        run.write_summary(_summary("failed", header, history, best, train_time_s, step_time_s,
                                   images_seen, f"{type(exc).__name__}: {exc}"))
        raise
    summary = _summary("complete", header, history, best, train_time_s, step_time_s, images_seen)
    run.write_summary(summary)
    return summary


def _summary(status: str, header: dict, history: list[dict], best: dict | None,
             train_time_s: float, step_time_s: float, images: int,
             message: str | None = None) -> dict:
    """The summary: the run's fixed facts (``header``), the best and the last evaluated epoch,
    the training time and the throughput of the optimisation steps."""
    last = next((r for r in reversed(history) if _eval_metrics(r)), None)
    return {"status": status, **header,
            "best": None if best is None else {"epoch": best["epoch"], "metrics": best["metrics"]},
            "last": None if last is None else {"epoch": last["epoch"],
                                               "metrics": _eval_metrics(last)},
            "epochs_completed": len(history) and history[-1]["epoch"],
            "train_time_s": train_time_s,
            "images_per_s": images / step_time_s if step_time_s else None,
            "message": message}


def to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a training batch reaches the device: images (B, 3, H, W) in channels-last layout
    on CUDA (what cuDNN's convolutions prefer), labels (B,) as int64."""
    cuda = device.type == "cuda"
    images = images.to(device, non_blocking=True,
                       memory_format=torch.channels_last if cuda and images.dim() == 4
                       else torch.preserve_format)
    return images, labels.to(device, non_blocking=True).long()


def device_transform(loader):
    """The conversion a loader's dataset asks to run on the device (``device_transform`` of the
    dataset or of a dataset it wraps: the cached pipeline's uint8 → normalised float), or None."""
    ds = getattr(loader, "dataset", None)
    while ds is not None and getattr(ds, "device_transform", None) is None:
        ds = getattr(ds, "dataset", None)
    return getattr(ds, "device_transform", None)


def train_epoch(method, loader, epoch: int, device: torch.device, max_steps: int | None = None,
                progress: bool = True) -> tuple[dict[str, float], int, float]:
    """One epoch of the Method contract's step order.

    Returns ``(row, images, step_time_s)``: the epoch's columns of the metrics (``lr``,
    ``train_loss``, ``train_accuracy``, ``images_per_s``, ``train/<part>``), the number of
    training images seen and the seconds spent in the optimisation steps.
    """
    # the samplers draw a new, reproducible order each epoch from (seed, epoch)
    for sampler in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
    method.model.train()
    method.criterion.train()
    method.on_epoch_start(epoch)  # after train(): BN freezing and warm-up override it
    optimizers = method.optimizers_for_epoch(epoch)
    lr = float(optimizers[0].param_groups[0]["lr"]) if optimizers else math.nan
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_steps is not None and total is not None:
        total = min(total, max_steps)
    bar = tqdm(total=total, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress)
    n = loss_sum = correct = counted = 0
    parts: dict[str, float] = {}
    on_device = device_transform(loader)
    start = time.perf_counter()
    for step, (images, labels) in enumerate(loader, start=1):
        images, labels = to_device(images, labels, device)
        if on_device is not None:  # the cached pipeline's uint8 batch → float, normalised here
            images = on_device(images)
        method.zero_grad()
        with autocast:
            out = method.training_step(images, labels)
        value = float(out.loss.detach().float().item())
        if not math.isfinite(value):  # stop before a NaN reaches the weights
            raise NonFiniteLossError(epoch, step, value)
        out.loss.backward()
        method.clip_gradients()
        method.optimizer_step(epoch)
        method.after_optimizer_step(out, labels)  # e.g. the moving-proxy update

        # running means over images (the last batch may be smaller)
        b = int(labels.shape[0])
        n, loss_sum = n + b, loss_sum + value * b
        if out.logits is not None:
            correct += int((out.logits.detach().argmax(dim=1) == labels).sum().item())
            counted += b
        for key, part in out.parts.items():
            parts[key] = parts.get(key, 0.0) + float(part) * b
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / n:.4f}", acc=f"{correct / counted:.3f}" if counted else "-",
                        img_s=f"{n / (time.perf_counter() - start):.0f}", refresh=False)
        if max_steps is not None and step >= max_steps:
            break
    bar.close()
    if n == 0:
        raise ValueError(f"epoch {epoch}: the training loader yielded no batch (data set smaller "
                         "than one batch with drop_last?)")
    method.on_epoch_end(epoch)  # the schedulers step once per epoch
    if cuda:
        torch.cuda.synchronize(device)  # queued kernels belong to this epoch's time
    step_time = time.perf_counter() - start
    row = {"lr": lr, "train_loss": loss_sum / n,
           "train_accuracy": correct / counted if counted else math.nan,
           "images_per_s": n / step_time}
    row.update({f"train/{k}": v / n for k, v in parts.items()})
    return row, n, step_time


def _prepare(method, device: torch.device) -> None:
    method.to(device)
    if device.type == "cuda":
        method.model.to(memory_format=torch.channels_last)
        if not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True


def _loader_generators(loader) -> dict[str, torch.Generator]:
    """The loader's own ``torch.Generator`` objects (a plain ``shuffle=True`` loader); their state
    is not in the global RNG, so checkpoints keep it. The project's samplers need only set_epoch."""
    found = {"loader": getattr(loader, "generator", None),
             "sampler": getattr(getattr(loader, "sampler", None), "generator", None),
             "batch_sampler": getattr(getattr(loader, "batch_sampler", None), "generator", None)}
    out: dict[str, torch.Generator] = {}
    for name, gen in found.items():
        if isinstance(gen, torch.Generator) and all(gen is not g for g in out.values()):
            out[name] = gen
    return out


def _evaluate(evaluator: Evaluator, method, epoch: int) -> Evaluation:
    method.model.eval()
    method.criterion.eval()
    with torch.no_grad():
        result = evaluator(method.model, epoch)
    if not isinstance(result, Evaluation):
        result = Evaluation(metrics=dict(result))
    result.metrics = {k: _number(v) for k, v in result.metrics.items()}
    return result


def _eval_metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith(("test/", "val/"))}


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def _epoch_line(row: dict, selection_metric: str) -> str:
    line = (f"epoch {row['epoch']}: loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} "
            f"{row['images_per_s']:.0f} img/s {row['epoch_time_s']:.1f}s")
    if selection_metric in row:
        line += f" {selection_metric} {row[selection_metric]:.4f}"
    return line
