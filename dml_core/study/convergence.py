"""How long to train: the epoch budget read from validation curves.

    python -m dml_core.study.convergence --setting demo --epochs 15 --seeds 100 101

The criterion (the fair protocol's): a configuration has **plateaued** at a budget of E epochs
when the mean over seeds of the validation R@1 it gains over the last third of training,
``R@1(E) − R@1(E − round(E/3))``, is at most :data:`PLATEAU_POINTS` (2 points of R@1).

:func:`probe` trains every configuration the study compares (:data:`dml_core.methods.fair.VARIANTS`,
the headline variants and the ablations) for ``epochs`` epochs with validation after every epoch, never loading the test split
(``evaluate_test=False``), once per seed, and writes every curve to
``results/convergence/<setting>.json``. Under the fair protocol's step schedule (a fixed step
size in epochs), a shorter run is the beginning of a longer one, so one probe gives the curve of
every budget up to ``epochs``; :func:`dml_core.report.plateau.smallest_plateaued_budget` is the
shortest budget from which on (up to ``epochs``) every variant has plateaued. The probe uses the development seeds of
the tuning (not the study's) and each seed draws its own validation classes;
:func:`dml_core.report.plateau.plateau_table` applies the same criterion to the runs of a profile
(the report shows it).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

from dml_core.core import io, paths
from dml_core.methods.fair import PLATEAU_POINTS, convergence_file
from dml_core.report.plateau import METRIC, smallest_plateaued_budget

__all__ = ["probe", "main"]


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _curve(recipe: dict, run_dir: str, data_root: str | None) -> dict:
    """Train one probe run, validation only; return its curve (the run folder is removed)."""
    from dml_core.core.run_folder import RunFolder
    from dml_core.training import train

    t0 = time.time()
    try:
        summary = train(recipe, run_dir, data_root=data_root, progress=False,
                        evaluate_test=False)
        rows = RunFolder(run_dir).read_metrics()
        curve = {int(r["epoch"]): float(r[METRIC]) for r in rows if METRIC in r
                 and not math.isnan(float(r[METRIC]))}
        untrained = ((summary.get("untrained") or {}).get("metrics") or {}).get(METRIC)
        if untrained is not None:
            curve[0] = float(untrained)
        return {"curve": curve, "status": summary.get("status"), "time_s": time.time() - t0}
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def probe(setting_name: str = "demo", epochs: int = 15, seeds: Sequence[int] = (100, 101),
          variants: Sequence[str] | None = None, jobs: int = 1, out: Path | None = None,
          data_root: Path | None = None, overrides: dict | None = None, log=None) -> dict:
    """Train the curves and write them with the chosen budget (see the module docstring)."""
    from dml_core.data import prepare
    from dml_core.methods import fair

    log = log or (lambda msg: print(msg, flush=True))
    s = fair.setting(setting_name)
    # every configuration the study compares: the headline variants and the ablations, less
    # those the search made identical to a headline one (trained once, under its name)
    aliases = fair.variant_aliases(s.name)
    variants = list(variants or [v for v in fair.VARIANTS if v not in aliases])
    for ds in s.datasets:
        prepare(ds, data_root)
    from dml_core.study.tuning import setting_weights_file

    pretrained = setting_weights_file(s, data_root)
    work = paths.runs_root() / "convergence" / s.name
    work.mkdir(parents=True, exist_ok=True)
    jobs_list = []
    for variant in variants:
        for seed in seeds:
            r = fair.fair_recipe(variant, s.name, seed=int(seed))  # committed tuned values
            r.update({"epochs": int(epochs), "eval_every": 1, **(overrides or {})})
            r["name"] = f"convergence/{s.name}/{variant}/seed{seed}"
            jobs_list.append((variant, int(seed), r, str(work / f"{variant}_s{seed}")))
    t0 = time.time()
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(1,),
                               mp_context=multiprocessing.get_context("spawn")) if jobs > 1 else None
    curves: dict[str, dict[int, dict[int, float]]] = {}
    try:
        args = [(r, d, None if data_root is None else str(data_root)) for _, _, r, d in jobs_list]
        results = pool.map(_curve, *zip(*args)) if pool else (_curve(*a) for a in args)
        for (variant, seed, _, _), res in zip(jobs_list, results):  # each as it finishes
            curves.setdefault(variant, {})[seed] = res["curve"]
            log(f"[convergence {s.name}] {variant} seed {seed}: validation R@1 "
                + " ".join(f"{100 * res['curve'][e]:.1f}" for e in sorted(res["curve"]))
                + f" ({res['time_s']:.0f} s)")
    finally:
        if pool is not None:
            pool.shutdown()
    chosen, gains = smallest_plateaued_budget(curves, int(epochs))
    from dml_core.training import git_commit, hardware_info, library_versions

    doc = {"setting": s.name, "metric": METRIC, "criterion": (
               f"mean over seeds of R@1(E) - R@1(E - round(E/3)) <= {PLATEAU_POINTS} points"),
           "epochs": int(epochs), "seeds": [int(x) for x in seeds],
           "overrides": overrides or {}, "chosen_epochs": chosen,
           "pretrained": pretrained,
           "mean_last_third_gain": {str(e): {v: round(g, 2) for v, g in row.items()}
                                    for e, row in gains.items()},
           "curves": {v: {str(sd): {str(e): round(x, 4) for e, x in sorted(c.items())}
                          for sd, c in by.items()} for v, by in curves.items()},
           "time_s": round(time.time() - t0, 1), "hardware": hardware_info("cpu"),
           "versions": library_versions(), "git_commit": git_commit(),
           "command": "python -m dml_core.study.convergence " + " ".join(sys.argv[1:])}
    target = Path(out) if out is not None else convergence_file(s.name)
    io.write_text(target, json.dumps(doc, indent=1) + "\n")
    log(f"[convergence {s.name}] shortest plateaued budget: {chosen} epochs; wrote {target}")
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dml_core.study.convergence",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--setting", default="demo")
    ap.add_argument("--epochs", type=int, default=15, help="the longest budget probed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--variants", nargs="+", default=None,
                    help="default: every variant the study compares (headline and ablations)")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once (one thread each)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: results/convergence/<setting>.json")
    a = ap.parse_args(argv)
    probe(a.setting, a.epochs, a.seeds, a.variants, a.jobs, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
