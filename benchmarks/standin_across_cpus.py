"""Does the demo's stand-in come out byte-identical on other x86-64 CPUs? Printed, not a test.

Runs the stand-in's builder (``python -m dml_core.models.standin --build-into``, the child that
:func:`dml_core.models.standin.build_standin` starts) natively and under QEMU's user-mode
emulator with other CPU models (``qemu-x86_64 -cpu <model>``: another vendor, another
instruction set; install it with ``apt-get install qemu-user``), then prints each file's name
(its SHA-256 prefix). The same name on every line: the pinned numeric path gives the same bytes.
``--unpinned`` also trains one step on torch's default path (oneDNN, AVX-512 or AVX2 kernels)
natively and under the first model, to show that the emulator does change the result there.

A build under emulation is ~100x slower, so the default is a tiny one (1 step of 64 images
drawn from 50): every kernel of a training step runs, and any rounding difference changes the
file. Usage::

    python benchmarks/standin_across_cpus.py [--models EPYC Haswell] [--unpinned]

Measured on 2026-12-07 (a 2-core Intel Xeon VM with AVX-512; QEMU 7.2): the pinned builder gave
``resnet18_digits-v2-18a63034.pth`` natively, under ``-cpu EPYC`` (AMD, AVX2) and under
``-cpu Haswell`` (Intel, AVX2); torch's default path gave ``05cada3b`` natively and
``a70d9dcc`` under ``-cpu EPYC`` (one step, measured with the trainer's earlier single-pixel
convolutions; ``--unpinned`` now runs the im2col ones, whose bytes differ). 2-4 minutes per
emulated build.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

UNPINNED = """
import hashlib, io, torch
from dml_core.models import standin
torch.set_num_threads(standin.THREADS)
images, labels = standin.source_images(standin.source_plan(per_digit=5))
model, _ = standin._train(images, labels, 1, lambda *_: None)
state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
buffer = io.BytesIO()
torch.save(state, buffer)
print("unpinned", hashlib.sha256(buffer.getvalue()).hexdigest()[:8])
"""


def _prefix(model: str | None) -> list[str]:
    return [] if model is None else ["qemu-x86_64", "-cpu", model]


def pinned(model: str | None, steps: int, per_digit: int) -> str:
    """The file name the pinned builder writes on ``model`` (None: this CPU)."""
    from dml_core.models.standin import PINNED_ENV

    with tempfile.TemporaryDirectory() as out:
        cmd = _prefix(model) + [sys.executable, "-m", "dml_core.models.standin", "--build-into",
                                out, "--steps", str(steps), "--images-per-digit", str(per_digit)]
        subprocess.run(cmd, env={**os.environ, **PINNED_ENV}, check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return " ".join(p.name for p in Path(out).glob("*.pth"))


def unpinned(model: str | None) -> str:
    """One training step on torch's default path, on ``model``: its state's SHA-256 prefix."""
    out = subprocess.run(_prefix(model) + [sys.executable, "-c", UNPINNED], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return out.split()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["EPYC", "Haswell"],
                    help="QEMU CPU models (qemu-x86_64 -cpu help lists them)")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--images-per-digit", type=int, default=5)
    ap.add_argument("--unpinned", action="store_true")
    args = ap.parse_args()
    if shutil.which("qemu-x86_64") is None:
        raise SystemExit("qemu-x86_64 not found: apt-get install qemu-user")
    for model in [None, *args.models]:
        t0 = time.time()
        name = pinned(model, args.steps, args.images_per_digit)
        print(f"pinned   {model or 'this CPU':10s} {name}  ({time.time() - t0:.0f} s)", flush=True)
    if args.unpinned:
        for model in [None, args.models[0]]:
            t0 = time.time()
            print(f"unpinned {model or 'this CPU':10s} {unpinned(model)}  "
                  f"({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
