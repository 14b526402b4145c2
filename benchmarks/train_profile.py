"""Where a demo training run's time goes (prints a table; not a test).

For each method under the fair protocol's ``demo`` setting (dml_core.methods.fair), on the embedded demo
data, with the threads given by ``--threads`` (default 1, as each job of ``make report``):

* ``bare step``: forward + loss + backward + optimiser step of the method on ONE fixed batch,
  repeated (no data loading, no logging): the floor of a training step;
* ``loop step``: a step of the real training loop (:func:`dml_core.training.engine.train_epoch`)
  over the real loader (decoding, augmentation, sampler, progress, logging);
* ``eval``: one evaluation (test set + validation split, dense and binary metrics), as the trainer
  runs after each evaluated epoch and once before training (the untrained baseline);
* ``loader start``: the time to the first batch of a fresh loader iterator (worker start-up when
  ``num_workers`` > 0);
* ``import``: ``import torch, dml_core.study`` in a fresh interpreter (paid by every notebook
  kernel, with papermill's own start-up on top).

From these, the estimated cost of one run = import + (epochs + 1) × eval / eval_every-ish +
epochs × steps × loop step. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_profile.py [--methods cgd normsoftmax]
        [--steps 20] [--threads 1] [--workers 0]

Relative costs are what count when other processes share the CPU: bare vs loop vs eval.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import torch


def _time(fn, repeat: int) -> float:
    fn()  # warm-up (allocations, first-call overheads)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def profile_method(variant: str, steps: int, workers: int | None) -> dict:
    from dml_core.data import is_prepared, prepare
    from dml_core.methods.fair import fair_recipe
    from dml_core.methods import build_method
    from dml_core.training.engine import device_transform, train_epoch
    from dml_core.training.seeding import seed_everything
    from dml_core.training.trainer import build_data, build_evaluator

    recipe = fair_recipe(variant, "demo", seed=0)
    if workers is not None:
        recipe["num_workers"] = workers
    if not is_prepared("demo"):
        prepare("demo")
    seed_everything(0)
    data = build_data(recipe)
    method = build_method(recipe, data.num_classes)
    device = torch.device("cpu")
    images, labels = next(iter(data.train_loader))
    on_device = device_transform(data.train_loader)  # the cached pipeline's uint8 -> float
    if on_device is not None:
        images = on_device(images)
    labels = labels.long()

    def bare():
        method.zero_grad()
        out = method.training_step(images, labels)
        out.loss.backward()
        method.clip_gradients()
        method.optimizer_step(recipe["warmup_epochs"] + 1 if "warmup_epochs" in recipe else 1)
        method.after_optimizer_step(out, labels)

    method.model.train()
    method.on_epoch_start(1)
    t_bare = _time(bare, steps)

    t0 = time.perf_counter()
    it = iter(data.train_loader)
    next(it)
    t_start = time.perf_counter() - t0
    del it

    t0 = time.perf_counter()
    train_epoch(method, data.train_loader, 2, device, max_steps=steps, progress=False)
    t_loop = (time.perf_counter() - t0) / steps

    evaluator = build_evaluator(data.test_loader, data.protocol, device, None, data.val_loader,
                                data.val_protocol, progress=False)
    t0 = time.perf_counter()
    evaluator(method.model, 1)
    t_eval = time.perf_counter() - t0
    n_test = len(data.test_loader.dataset)
    n_val = len(data.val_loader.dataset) if data.val_loader is not None else 0
    steps_per_epoch = len(data.train_loader)
    epochs, every = int(recipe["epochs"]), int(recipe["eval_every"] or 1)
    n_evals = 1 + len([e for e in range(1, epochs + 1) if e % every == 0 or e == epochs])
    est = epochs * steps_per_epoch * t_loop + n_evals * t_eval
    return {"variant": variant, "bare step (s)": t_bare, "loop step (s)": t_loop,
            "loop/bare": t_loop / t_bare, "eval (s)": t_eval, "eval images": n_test + n_val,
            "loader start (s)": t_start, "steps/epoch": steps_per_epoch, "epochs": epochs,
            "evaluations": n_evals, "est. training (s)": est,
            "eval share": n_evals * t_eval / est}


def import_time() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, dml_core.study"], check=True)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    from dml_core.methods.fair import SETTINGS, VARIANTS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="*", default=[v for v, x in VARIANTS.items() if x.headline])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None,
                    help="override num_workers (default: the setting's)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = SETTINGS["demo"]
    print(f"fair protocol 'demo': batch {s.batch_size}, {s.crop_size}-px crops, {s.epochs} epochs, "
          f"eval every {s.eval_every}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory():
        rows = [profile_method(v, args.steps, args.workers) for v in args.methods]
    import pandas as pd

    t = pd.DataFrame(rows).set_index("variant")
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.3f}".format):
        print(t)
    print(f"import torch + dml_core.study in a fresh interpreter: {import_time():.1f} s")
    print(f"sum of estimated training time, one seed of every variant: "
          f"{t['est. training (s)'].sum():.0f} s")


if __name__ == "__main__":
    main()
