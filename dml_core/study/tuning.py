"""The same tuning budget for every method, on the validation classes only.

    python -m dml_core.study.tuning --setting demo                 # the declared budget
    python -m dml_core.study.tuning --setting demo --trials 2 \\
        --set epochs=1 --set max_steps_per_epoch=2 --out /tmp/smoke.json   # a smoke run

For every headline variant of the fair protocol (:data:`dml_core.methods.fair.VARIANTS`), a
seeded Optuna study (TPE sampler) searches the method's own loss hyper-parameters
(:data:`dml_core.methods.fair.SEARCH_SPACE`, minus the keys the variant fixes) with the same
budget for every method: :attr:`Setting.tuning_trials` trials, each trained once per tuning seed
(:attr:`Setting.tuning_seeds`, not the seeds the study reports; each seed draws its own
validation classes) for the setting's short budget of epochs (:attr:`Setting.short_epochs`;
the study then trains its full budget with the chosen values). Trial 0 is the untuned values
(the papers'), so the search never ends below them on validation. A trial's value is the mean
over its seeds of the validation R@1 at the validation-selected epoch (:func:`objective_value`;
a seed whose loss diverges counts 0).

**The test set chooses nothing**: a trial trains with ``evaluate_test=False``
(:func:`dml_core.training.train`), which never loads the test split; :func:`objective_value`
refuses any metric that is not a validation one. Every trial and the chosen values go to
``results/tuning/<setting>.json`` (:func:`dml_core.methods.fair.tuning_file`), which the fair
protocol reads (every profile, so ``make report`` and ``make study``, uses the committed
values). A shortened search (``--set epochs=...``) must be written elsewhere (``--out``): it can
test the machinery, never choose the study's values.

Resumable: the trials are journalled in ``<runs root>/tuning/<setting>/journal.log``; running
the command again continues where it stopped (``--restart`` starts over).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from dml_core.core import io, paths

__all__ = ["tune", "objective_value", "suggest", "trial_runs", "OBJECTIVE", "main"]

#: The objective's metric: validation R@1 at the validation-selected epoch (summary ``best``).
OBJECTIVE = "val/dense/R@1"
#: Recipe keys a smoke search may shorten (they make the search "shortened").
SHORTENING = frozenset({"epochs", "max_steps_per_epoch", "crop_size", "resize_size",
                        "batch_size", "eval_batch_size"})


def objective_value(metrics: dict[str, float]) -> float:
    """The trial's value from one training run's selected-epoch metrics: only validation keys
    may reach the objective (a ``test/`` key is an error: the test set chooses nothing)."""
    leaked = sorted(k for k in metrics if not str(k).startswith("val/"))
    if leaked:
        raise ValueError(f"the tuning objective received non-validation metrics {leaked}: the "
                         "test set must never reach the search")
    return float(metrics[OBJECTIVE])


def _round(x: float, digits: int = 3) -> float:
    """``x`` to ``digits`` significant digits: the value trained is the value stored."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(round(x, digits - 1 - int(math.floor(math.log10(abs(x))))))


def suggest(trial, space: dict[str, tuple[str, float, float]]) -> dict[str, float]:
    """One trial's values: ``trial.suggest_float`` for every key (log scale where declared),
    rounded to 3 significant digits."""
    return {k: _round(trial.suggest_float(k, lo, hi, log=(scale == "log")))
            for k, (scale, lo, hi) in space.items()}


def _space(variant: str) -> dict[str, tuple[str, float, float]]:
    from dml_core.methods import fair

    v = fair.VARIANTS[variant]
    return {k: spec for k, spec in fair.SEARCH_SPACE[v.method].items() if k not in v.fixed}


def _start(variant: str, space: dict) -> dict[str, float]:
    """Trial 0: the untuned values, clipped into the space."""
    from dml_core.methods import fair

    loss = fair.VARIANTS[variant].loss
    from dml_core.methods import METHODS

    defaults = METHODS[fair.VARIANTS[variant].method].loss_spec.defaults
    out = {}
    for k, (_scale, lo, hi) in space.items():
        x = float(loss.get(k, defaults[k]))
        out[k] = min(max(x, lo), hi)
    return out


def trial_runs(variant: str, setting_name: str, params: dict, seeds: Sequence[int],
               overrides: dict | None = None) -> list[dict]:
    """The recipes one trial trains: the fair recipe of ``variant`` with ``params`` (its loss
    keys) on the setting's short budget (:func:`dml_core.methods.fair.short_budget`), once per
    seed, plus ``overrides`` (a smoke search's shortening)."""
    from dml_core.methods import fair

    out = []
    short = fair.short_budget(fair.setting(setting_name))
    for seed in seeds:
        r = fair.fair_recipe(variant, setting_name, seed=int(seed), **params)
        r.update(short)
        r.update(overrides or {})
        r["name"] = f"tuning/{setting_name}/{variant}/seed{seed}"
        out.append(r)
    return out


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_one(recipe: dict, run_dir: str, data_root: str | None, device: str | None) -> dict:
    """Train one trial seed, validation only; return the selected epoch and its metrics (the
    run folder is removed: only the numbers are kept)."""
    from dml_core.training import NonFiniteLossError, train

    try:
        summary = train(recipe, run_dir, data_root=data_root, device=device, progress=False,
                        evaluate_test=False)
        best = summary.get("best") or {}
        return {"epoch": best.get("epoch"), "metrics": best.get("metrics") or {},
                "time_s": summary.get("train_time_s"), "status": summary.get("status")}
    except NonFiniteLossError as exc:  # a diverging configuration: the worst value, not a crash
        return {"epoch": None, "metrics": {}, "time_s": None, "status": f"diverged ({exc})"}
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _seed_value(result: dict) -> float:
    """A seed's objective: validation R@1 of a complete run, 0 for a diverged one."""
    if result["status"] != "complete":
        return 0.0
    return objective_value(result["metrics"])


def _environment() -> dict:
    from dml_core.training import git_commit, hardware_info, library_versions

    return {"hardware": hardware_info("cpu"), "versions": library_versions(),
            "git_commit": git_commit()}


def setting_weights_file(s, data_root: Path | None = None) -> str | None:
    """The file of the pretrained weights every run of the fair setting ``s`` fine-tunes (the
    demo's stand-in is built first when missing); None for a setting trained from scratch. The
    search and the convergence probe record it, so their results name the trunk they tuned."""
    from dml_core.training.trainer import pretrained_weights

    weights = pretrained_weights({"pretrained": s.pretrained, "dataset": s.datasets[0],
                                  "backbone": s.backbone}, data_root, verbose=False)
    return None if weights is None else weights["file"]


def tune(setting_name: str = "demo", trials: int | None = None,
         seeds: Sequence[int] | None = None, variants: Sequence[str] | None = None,
         overrides: dict | None = None, out: Path | None = None, jobs: int = 1,
         data_root: Path | None = None, device: str | None = None, work_dir: Path | None = None,
         restart: bool = False, sampler_seed: int = 0, log=print) -> dict:
    """Run the search of ``setting_name`` and write its result (see the module docstring).

    ``trials`` / ``seeds`` default to the setting's declared budget; ``variants`` to every
    headline variant; ``jobs`` trains that many seeds of a trial at once (one thread each).
    Returns the written document."""
    import optuna

    from dml_core.data import prepare
    from dml_core.methods import fair

    s = fair.setting(setting_name)
    if len(s.datasets) != 1:
        raise SystemExit(f"setting {s.name!r} has {len(s.datasets)} data sets; the search covers "
                         "one-data-set settings (the GPU setting keeps its LOSS_GRID)")
    trials = int(trials if trials is not None else s.tuning_trials)
    seeds = tuple(int(x) for x in (seeds if seeds is not None else s.tuning_seeds))
    if trials < 1 or len(seeds) < 2:
        raise SystemExit(f"the budget needs at least 1 trial and 2 seeds, got {trials} trial(s) "
                         f"and seeds {seeds}")
    overrides = dict(overrides or {})
    shortened = bool(SHORTENING & set(overrides))
    target = Path(out) if out is not None else fair.tuning_file(s.name)
    if shortened and out is None:
        raise SystemExit(f"a shortened search ({sorted(SHORTENING & set(overrides))}) cannot "
                         f"choose the study's values: give --out (not {target})")
    headline = [v for v, x in fair.VARIANTS.items() if x.headline]
    variants = list(variants or headline)
    bad = sorted(set(variants) - set(headline))
    if bad:
        raise SystemExit(f"{bad} are not headline variants; an ablation takes its headline "
                         f"variant's values (Variant.tuned_as). Valid: {', '.join(headline)}")
    for ds in s.datasets:
        prepare(ds, data_root)
    # the weights every trial fine-tunes (the demo's stand-in is built here when missing): part of
    # the journal's key, so trials made from other weights are never resumed
    pretrained = setting_weights_file(s, data_root)
    work = Path(work_dir) if work_dir is not None else paths.runs_root() / "tuning" / s.name
    if restart and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(work / "journal.log")))
    # the setting is part of the key: a journal of another trunk, input or schedule is not resumed
    budget_key = json.dumps({"trials": trials, "seeds": seeds, "overrides": overrides,
                             "sampler_seed": sampler_seed, "setting": dataclasses.asdict(s),
                             "pretrained": pretrained},
                            sort_keys=True, default=str)
    t_start = time.time()
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(1,),
                               mp_context=multiprocessing.get_context("spawn")) \
        if jobs > 1 else None
    try:
        for variant in variants:
            space = _space(variant)
            sampler = optuna.samplers.TPESampler(seed=sampler_seed,
                                                 n_startup_trials=max(1, trials // 3))
            study = optuna.create_study(
                study_name=f"{s.name}/{variant}/{budget_key}", storage=storage,
                direction="maximize", sampler=sampler, load_if_exists=True)
            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if not study.trials:
                study.enqueue_trial(_start(variant, space))
            for t in study.trials:  # interrupted before: ask the same values again
                if t.state == optuna.trial.TrialState.RUNNING:
                    study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                    study.enqueue_trial(t.params)
            for number in range(len(done), trials):
                trial = study.ask()
                params = suggest(trial, space)
                recipes = trial_runs(variant, s.name, params, seeds, overrides)
                args = [(r, str(work / f"{variant}_t{trial.number}_s{r['seed']}"),
                         None if data_root is None else str(data_root), device) for r in recipes]
                t0 = time.time()
                results = (list(pool.map(_train_one, *zip(*args))) if pool else
                           [_train_one(*a) for a in args])
                per_seed = [_seed_value(r) for r in results]
                value = sum(per_seed) / len(per_seed)
                trial.set_user_attr("values", {str(sd): x for sd, x in zip(seeds, per_seed)})
                trial.set_user_attr("epochs", {str(sd): r["epoch"] for sd, r in zip(seeds,
                                                                                   results)})
                trial.set_user_attr("time_s", round(time.time() - t0, 1))
                trial.set_user_attr("status", sorted({r["status"] for r in results}))
                study.tell(trial, value)
                log(f"[tuning {s.name}] {variant} trial {number + 1}/{trials}: "
                    + ", ".join(f"{k}={v:g}" for k, v in params.items())
                    + f" -> validation R@1 {100 * value:.1f} (seeds "
                    + ", ".join(f"{100 * x:.1f}" for x in per_seed)
                    + f"), {time.time() - t0:.0f} s")
            if len(done):
                log(f"[tuning {s.name}] {variant}: {len(done)} trial(s) resumed from "
                    f"{work / 'journal.log'}")
    finally:
        if pool is not None:
            pool.shutdown()
    doc = _document(s, variants, trials, seeds, overrides, shortened, sampler_seed, storage,
                    budget_key, time.time() - t_start, pretrained)
    io.write_text(target, json.dumps(doc, indent=1, default=str) + "\n")
    log(f"[tuning {s.name}] wrote {target}")
    return doc


def _document(s, variants, trials, seeds, overrides, shortened, sampler_seed, storage,
              budget_key, elapsed, pretrained) -> dict:
    """The committed result: budget, space, every trial, the chosen values."""
    import optuna

    from dml_core.methods import fair

    all_trials, chosen, best = [], {}, {}
    for variant in variants:
        study = optuna.load_study(study_name=f"{s.name}/{variant}/{budget_key}", storage=storage)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        for t in complete:
            all_trials.append({"variant": variant, "number": t.number,
                               "params": {k: _round(v) for k, v in t.params.items()},
                               "value": t.value, **{k: t.user_attrs.get(k) for k in
                                                    ("values", "epochs", "time_s", "status")}})
        top = max(complete, key=lambda t: (t.value, -t.number))
        chosen[variant] = {k: _round(v) for k, v in top.params.items()}
        best[variant] = {"trial": top.number, "value": top.value, "trials": len(complete)}
    return {
        "setting": s.name, "dataset": s.datasets[0],
        "command": "python -m dml_core.study.tuning " + " ".join(sys.argv[1:]),
        "budget": {"trials": trials, "seeds": list(seeds),
                   **(fair.short_budget(s) or {"epochs": s.epochs, "eval_every": s.eval_every}),
                   "sampler": f"optuna TPESampler(seed={sampler_seed}, n_startup_trials="
                              f"{max(1, trials // 3)}); trial 0 = the untuned values",
                   "optuna": optuna.__version__},
        "objective": f"mean over the seeds of {OBJECTIVE} at the validation-selected epoch "
                     "(the test split is never loaded)",
        "overrides": overrides, "shortened": shortened, "pretrained": pretrained,
        "search_space": {v: {k: list(spec) for k, spec in _space(v).items()} for v in variants},
        "fixed": {v: list(fair.VARIANTS[v].fixed) for v in variants},
        "chosen": chosen, "best": best, "trials": all_trials,
        # the search's time: every trial's (seeds in parallel), also when it was resumed
        "time_s": round(sum(t.get("time_s") or 0.0 for t in all_trials), 1),
        "time_s_last_call": round(elapsed, 1), **_environment()}


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dml_core.study.tuning",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--setting", default="demo")
    ap.add_argument("--trials", type=int, default=None, help="default: the setting's budget")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="tuning seeds (default: the setting's)")
    ap.add_argument("--variants", nargs="+", default=None, help="default: every headline variant")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key of every trial (a smoke search; needs --out)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: results/tuning/<setting>.json (read by every profile)")
    ap.add_argument("--jobs", type=int, default=1, help="seeds of a trial trained at once")
    ap.add_argument("--device", default=None)
    ap.add_argument("--restart", action="store_true", help="forget the journalled trials")
    a = ap.parse_args(argv)
    tune(a.setting, a.trials, a.seeds, a.variants, _parse_set(a.overrides), a.out, a.jobs,
         device=a.device, restart=a.restart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
