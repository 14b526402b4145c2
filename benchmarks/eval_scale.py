"""SOP-scale evaluation benchmark: dml_core.evaluation against faiss-cpu IndexFlatIP.

Data: SOP-sized (default 60,502 × 512) unit vectors, classes of 2–12 items (seeded); each item is
its class centre plus noise, so recalls are neither 0 nor 1. Each engine runs in its own
subprocess so that the peak resident memory (ru_maxrss) of each is its own:

- ours: Recall@{1,10,100,1000}, MAP@R and R-precision in one exact chunked pass;
- faiss: exact k-NN search with k = 1001 (self-retrieval), the query dropped by index, Recall@K
  from the neighbour labels. faiss is a benchmark-only dependency.

Usage: ``python benchmarks/eval_scale.py`` (full) or ``--n 5000`` (quick). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KS = (1, 10, 100, 1000)
SIZES = np.arange(2, 13)
SIZE_P = 0.78 ** SIZES / (0.78 ** SIZES).sum()  # mean ≈ 5.3 images per class, as in SOP's test set


def make_data(n: int, dim: int, seed: int, noise: float):
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.choice(SIZES, p=SIZE_P)))
    sizes[-1] -= sum(sizes) - n
    if sizes[-1] < 2:  # keep every class at ≥ 2 items (pop first: `sizes[-2] += sizes.pop()` hits the wrong slot)
        last = sizes.pop()
        sizes[-1] += last
    labels = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
    centres = rng.standard_normal((len(sizes), dim), dtype=np.float32)
    x = centres[labels] + noise * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_ours(x_path: str, y_path: str, budget: float) -> dict:
    import torch

    from dml_core.evaluation import retrieval_stats

    x, y = np.load(x_path), np.load(y_path)
    base = peak_rss_mb()
    t, c = time.perf_counter(), cpu_s()
    st = retrieval_stats(torch.from_numpy(x), torch.from_numpy(y), memory_budget_mb=budget)
    rec = st.recall(KS)
    out = {"time_s": time.perf_counter() - t, "cpu_s": cpu_s() - c, "peak_mb": peak_rss_mb(), "base_mb": base,
           "recall": rec, "map_at_r": st.map_at_r(), "rp": st.r_precision(), "threads": torch.get_num_threads()}
    return out


def run_faiss(x_path: str, y_path: str) -> dict:
    try:
        import faiss
    except ImportError:
        return {"error": "faiss is not installed (benchmark-only dependency): pip install faiss-cpu"}
    x, y = np.load(x_path), np.load(y_path)
    base = peak_rss_mb()
    t, c = time.perf_counter(), cpu_s()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    k = min(max(KS) + 1, len(x))
    _, nn = index.search(x, k)
    keep = nn != np.arange(len(x))[:, None]  # drop the query by index, not by position
    first = np.full(len(x), np.iinfo(np.int64).max)
    for i in range(len(x)):  # rank of the first same-class neighbour among the others
        hits = np.flatnonzero(y[nn[i][keep[i]]] == y[i])
        if hits.size:
            first[i] = hits[0] + 1
    rec = {k_: float(np.mean(first <= k_)) for k_ in KS}
    return {"time_s": time.perf_counter() - t, "cpu_s": cpu_s() - c, "peak_mb": peak_rss_mb(), "base_mb": base, "recall": rec,
            "threads": faiss.omp_get_max_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60502, help="number of items (SOP test set: 60502)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=3.0, help="within-class noise relative to the centre")
    ap.add_argument("--budget-mb", type=float, default=None, help="memory_budget_mb for ours (default: library's)")
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--worker", choices=["ours", "faiss"], help=argparse.SUPPRESS)
    ap.add_argument("--data", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        if a.worker == "ours":
            from dml_core.evaluation import DEFAULT_MEMORY_BUDGET_MB
            res = run_ours(*a.data, a.budget_mb or DEFAULT_MEMORY_BUDGET_MB)
        else:
            res = run_faiss(*a.data)
        print(json.dumps(res))
        return

    x, y = make_data(a.n, a.dim, a.seed, a.noise)
    print(f"data: {a.n} × {a.dim} float32 ({x.nbytes / 2**20:.0f} MiB), {y.max() + 1} classes of 2–12, "
          f"cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        xp, yp = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
        np.save(xp, x)
        np.save(yp, y)
        del x
        for name in ["ours"] + ([] if a.skip_faiss else ["faiss"]):
            cmd = [sys.executable, __file__, "--worker", name, "--data", xp, yp]
            if a.budget_mb:
                cmd += ["--budget-mb", str(a.budget_mb)]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"{name} worker failed:\n{p.stderr}")
            results[name] = json.loads(p.stdout.strip().splitlines()[-1])
            if "error" in results[name]:
                print(results[name]["error"])
                del results[name]

    print("\n| engine | time (s) | CPU time (s) | peak RSS (MB) | RSS before (MB) | " + " | ".join(f"R@{k}" for k in KS)
          + " | MAP@R | RP |")
    print("|---|---|---|---|---|" + "---|" * (len(KS) + 2))
    for name, r in results.items():
        rec = " | ".join(f"{r['recall'][str(k)] if str(k) in r['recall'] else r['recall'][k]:.4f}" for k in KS)
        extra = f"{r['map_at_r']:.4f} | {r['rp']:.4f}" if "map_at_r" in r else "– | –"
        print(f"| {name} ({r['threads']} threads) | {r['time_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_mb']:.0f} | {r['base_mb']:.0f} "
              f"| {rec} | {extra} |")
    if "faiss" in results:
        same = results["ours"]["recall"] == results["faiss"]["recall"]
        print(f"\nrecalls identical: {same}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
