r"""The demo's stand-in for ImageNet: its ResNet-18 pretrained on single digits.

Every method of the study fine-tunes an ImageNet-pretrained trunk (BatchNorm statistics frozen,
a warm-up in which only the head and the proxies move, small trunk learning rates). The embedded
demo (two-digit numbers, :mod:`dml_core.data.demo`) has no ImageNet, so its trunk is pretrained
here, once per machine, on a **source task** built from the same scikit-learn scans:

* **task**: recognise a SINGLE digit (10 classes, cross-entropy), rendered exactly as the demo
  renders its numbers (48-px canvas, random digit size, stroke, colours, gradient, noise and
  position; :func:`dml_core.data.demo.render_number`), resized to 27 px and randomly cropped to
  24 px (the demo recipes' sizes); ``IMAGES_PER_DIGIT`` images per digit;
* **data**: only training scans (``scan_role == "train"``): no test or validation scan is ever
  seen, and no source class is a demo class (a single digit is not a two-digit number). Like
  ImageNet for CUB, it teaches parts (digits) that the target task composes; how to tell "57"
  from "75" or from "58" is left to fine-tuning;
* **training**: ``STEPS`` steps of ``BATCH_SIZE`` (Adam, one-cycle learning rate up to ``LR``)
  in a separate process on one **pinned numeric path**, so that every x86-64 CPU builds the same
  bytes (see below).

**Why pinned.** Training is chaotic: a last-bit difference in one sum grows into another
network. Left to themselves, torch's CPU libraries pick their kernels by the CPU's instruction
set (AVX-512, AVX2, ...) and its cache sizes, which changes the order of the sums: the version-1
stand-in came out as ``fb722af0`` on an AMD EPYC (AVX2) and ``1c4c8077`` on an Intel Xeon
(AVX-512), whose pretrained test R@1 differed by 3 points, and every fine-tuned number by ~7.
The builder process (:func:`build_standin`) therefore runs with ``PINNED_ENV`` (ATen's
unvectorised kernels, MKL's SSE2 branch that Intel documents as reproducible on Intel and
compatible CPUs, ``THREADS`` threads whatever the machine's core count) and with oneDNN and
NNPACK off (their kernels and blocking follow the CPU); its convolutions are one im2col product
over the whole batch (:class:`~dml_core.models.pixel_conv.BatchIm2colConv2d`, 2x faster there
than torch's per-image fallback). The same instructions then run on every CPU, at a price: on
an Intel Xeon with AVX-512 the build takes 25 s on 2 threads where the native path took 17 s
on one. ``benchmarks/standin_across_cpus.py`` checks the bytes under QEMU's CPU models.

The result, ``torchvision.models.resnet18(num_classes=10)``'s state dict (torchvision's format;
the loader drops ``fc.*`` as it does for ImageNet files), is saved as
``$TORCH_HOME/hub/checkpoints/resnet18_digits-v<VERSION>-<first 8 hex of its SHA-256>.pth``
and loaded by :func:`dml_core.models.backbones.build_backbone` with ``pretrained=True,
source="digits"`` (every demo recipe), with the same loader and errors as ImageNet weights.
:func:`ensure_standin` builds it when missing, under the demo data set's lock (the demo's data
preparation and the first demo run call it). Its cost and the pretrained network's R@1 on the
demo's test split are in docs/DEMO.md. Change ``VERSION`` whenever the source task or the
numeric path changes (version 2: the pinned path).
"""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

BACKBONE = "resnet18"
#: The trunks that load the stand-in: ResNet-18 and the demo's ResNet-18 up to layer2.
TRUNKS = (BACKBONE, "resnet18_s2")
VERSION = 2
FILE_STEM = f"{BACKBONE}_digits-v{VERSION}"
SEED = 0
NUM_CLASSES = 10         # the digits 0-9
IMAGES_PER_DIGIT = 400   # rendered once, from the training scans of the digit
RESIZE, CROP = 27, 24    # the demo recipes' resize_size and crop_size
STEPS = 100              # with BATCH_SIZE and LR: chosen on the demo's validation images
BATCH_SIZE = 64          # (docs/DEMO.md), within 2 min on a slow 2-core machine
LR = 2e-3                # peak of the one-cycle schedule (Adam)
WARMUP_FRACTION = 0.15   # of the steps, rising to LR
THREADS = 2              # fixed: the bytes depend on the thread count, not on the machine's cores
#: The builder process's environment: the same instructions and order of sums on every x86-64 CPU.
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "default",  # ATen's kernels without AVX2/AVX-512 vectorisation
    "MKL_CBWR": "COMPATIBLE",           # MKL's SSE2 branch: reproducible on Intel and AMD alike
    "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
    # Not arithmetic: a thread waiting at a barrier sleeps instead of spinning. The builder runs
    # beside other work (make report's toy, UMAP's compilation; the tests' xdist workers), and
    # spinning threads then starve each other: on the 2-core Xeon VM one busy process beside
    # the build made it 206 s instead of 32; sleeping, 53 s (41 s alone).
    "OMP_WAIT_POLICY": "PASSIVE",
}


def standin_files(folder: str | os.PathLike) -> list[Path]:
    """The stand-in files of this :data:`VERSION` in ``folder`` (normally one), sorted."""
    folder = Path(folder)
    return sorted(folder.glob(f"{FILE_STEM}-*.pth")) if folder.is_dir() else []


def source_plan(labels: np.ndarray | None = None, per_digit: int = IMAGES_PER_DIGIT
                ) -> list[tuple[int, int]]:
    """``[(digit, scan), ...]``: every source image, ``per_digit`` per digit, each one scan
    of ``load_digits()`` (whose ``target`` may be passed as ``labels``) drawn from the digit's
    training scans (:func:`dml_core.data.demo.scan_pool`)."""
    from dml_core.data.demo import scan_pool

    if labels is None:
        from sklearn.datasets import load_digits

        labels = load_digits().target
    rng = np.random.default_rng(SEED)
    plan = []
    for digit in range(NUM_CLASSES):
        pool = scan_pool("train", digit, labels)
        plan += [(digit, int(s)) for s in rng.choice(pool, size=per_digit)]
    return plan


def source_images(plan: list[tuple[int, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The source task's images, uint8 ``(N, RESIZE, RESIZE, 3)``, and digit labels ``(N,)``:
    each plan entry rendered alone by the demo's renderer (nuisances from one child generator
    per image) and resized like the demo's evaluation images (PIL bilinear)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from dml_core.data.demo import render_number

    digits = load_digits()
    plan = source_plan(digits.target) if plan is None else plan
    children = np.random.SeedSequence([SEED, VERSION]).spawn(len(plan))
    images = np.empty((len(plan), RESIZE, RESIZE, 3), dtype=np.uint8)
    for i, ((_, scan), child) in enumerate(zip(plan, children)):
        rgb, _ = render_number([digits.images[scan]], np.random.default_rng(child))
        images[i] = np.asarray(Image.fromarray(rgb).resize((RESIZE, RESIZE), Image.BILINEAR))
    return images, np.array([d for d, _ in plan], dtype=np.int64)


def train_standin(images: np.ndarray, labels: np.ndarray, steps: int = STEPS,
                  say: Callable[[str], None] = print):
    """Train ``torchvision.models.resnet18(num_classes=10)`` on the source task; returns the
    network and the training accuracy of the last 20 steps. Seeded, ``THREADS`` threads, oneDNN
    and NNPACK off; in a process started with ``PINNED_ENV`` (:func:`build_standin`) the bytes
    are the same on every x86-64 CPU, elsewhere only on the same CPU type."""
    import torch

    from dml_core.core.allocator import keep_freed_memory

    keep_freed_memory()  # exact; fewer page faults per step (dml_core.core.allocator)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    # oneDNN and NNPACK choose their kernels and blocking by the CPU: off, so that convolutions
    # are im2col + MKL products (pinned by PINNED_ENV)
    try:
        with warnings.catch_warnings():  # switching oneDNN warns about Intel GPUs' TF32
            warnings.simplefilter("ignore", UserWarning)
            with torch.backends.mkldnn.flags(enabled=False), torch.backends.nnpack.flags(False):
                return _train(images, labels, steps, say)
    finally:
        torch.set_num_threads(threads)


def _train(images: np.ndarray, labels: np.ndarray, steps: int, say: Callable[[str], None]):
    """:func:`train_standin`'s loop, on whatever torch settings are in force."""
    import torch
    import torch.nn.functional as F
    import torchvision

    from dml_core.models.conventions import input_convention
    from dml_core.models.pixel_conv import use_batch_im2col_convs

    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    model = use_batch_im2col_convs(model).train()  # the pinned path's fast convolutions
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps,
                                                pct_start=WARMUP_FRACTION)
    conv = input_convention(BACKBONE)
    mean = torch.tensor(conv.mean).view(1, 3, 1, 1)
    std = torch.tensor(conv.std).view(1, 3, 1, 1)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, r, r)
    y_all = torch.from_numpy(labels)
    g = torch.Generator().manual_seed(SEED)
    hits: list[float] = []
    for step in range(steps):
        ids = torch.randint(0, len(y_all), (BATCH_SIZE,), generator=g)
        oy, ox = torch.randint(0, RESIZE - CROP + 1, (2,), generator=g).tolist()
        x = x_all[ids, :, oy:oy + CROP, ox:ox + CROP].float().div(255).sub(mean).div(std)
        out = model(x)
        loss = F.cross_entropy(out, y_all[ids])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hits = (hits + [float((out.argmax(1) == y_all[ids]).float().mean())])[-20:]
        if (step + 1) % 50 == 0 or step + 1 == steps:
            say(f"stand-in: step {step + 1}/{steps}, loss {float(loss.detach()):.3f}, "
                f"accuracy (last 20 steps) {np.mean(hits):.2f}")
    return model.to(memory_format=torch.contiguous_format).eval(), float(np.mean(hits))


_BUILT = "stand-in file: "  # the builder's last line: the path it wrote


class StandinBuild:
    """A running builder process (:func:`start_standin_build`): :meth:`wait` gives the file's
    path, :meth:`cancel` ends it (its file is written atomically: a cancelled build leaves
    none). Its lines go to ``say`` as they come, from a reader thread."""

    def __init__(self, cmd: list[str], say: Callable[[str], None]):
        import threading

        self.proc = subprocess.Popen(cmd, env={**os.environ, **PINNED_ENV},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.path: Path | None = None
        self._reader = threading.Thread(target=self._read, args=(say,), daemon=True)
        self._reader.start()

    def _read(self, say: Callable[[str], None]) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            line = line.rstrip("\n")
            self.lines.append(line)
            if line.startswith(_BUILT):
                self.path = Path(line[len(_BUILT):])
            else:
                say(line)

    def wait(self) -> Path:
        """The built file's path; RuntimeError with the builder's last lines if it failed."""
        code = self.proc.wait()
        self._reader.join()
        if code != 0 or self.path is None or not self.path.is_file():
            tail = "\n".join(self.lines[-15:])
            raise RuntimeError(f"building the demo's stand-in weights failed (exit code {code}); "
                               f"the builder's last lines:\n{tail}")
        return self.path

    def cancel(self) -> None:
        """End the builder (nothing is left behind: its file is written atomically)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self._reader.join()


def start_standin_build(folder: str | os.PathLike | None = None, *, steps: int = STEPS,
                        images_per_digit: int = IMAGES_PER_DIGIT,
                        say: Callable[[str], None] = print) -> StandinBuild:
    """Start building the stand-in into ``folder`` (default ``torch_checkpoint_dir()``): a child
    process started with ``PINNED_ENV`` renders the source images, trains and writes the file
    (atomically). ``steps`` and ``images_per_digit`` below the defaults are for tests. Not
    locked: see :func:`ensure_standin`."""
    from dml_core.core.paths import torch_checkpoint_dir

    folder = Path(folder) if folder is not None else torch_checkpoint_dir()
    return StandinBuild([sys.executable, "-m", "dml_core.models.standin", "--build-into",
                         str(folder), "--steps", str(steps), "--images-per-digit",
                         str(images_per_digit)], say)


def build_standin(folder: str | os.PathLike | None = None, *, steps: int = STEPS,
                  images_per_digit: int = IMAGES_PER_DIGIT,
                  say: Callable[[str], None] = print) -> Path:
    """Build the stand-in into ``folder`` and return its path (:func:`start_standin_build`,
    waited for). A failed build raises RuntimeError with the builder's last lines and leaves
    no file. Not locked: call :func:`ensure_standin`."""
    return start_standin_build(folder, steps=steps, images_per_digit=images_per_digit,
                               say=say).wait()


def _build_here(folder: Path, steps: int, images_per_digit: int,
                say: Callable[[str], None] = print) -> Path:
    """The builder process's work (:func:`build_standin`): refuses to run unpinned."""
    import torch

    from dml_core.core.locks import FileLock

    unpinned = {k: os.environ.get(k) for k, v in PINNED_ENV.items() if os.environ.get(k) != v}
    if unpinned or torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        raise RuntimeError(f"the stand-in is trained only on the pinned numeric path {PINNED_ENV} "
                           f"(found {unpinned or torch.backends.cpu.get_cpu_capability()}): "
                           "build it with dml_core.models.standin.build_standin")
    # One builder per torch cache: a second one (another data root's preparation, a test
    # worker) waits, then takes the file the first wrote (same version, same bytes).
    with FileLock(folder / f".{FILE_STEM}.lock", what=f"the stand-in weights in {folder}"):
        found = standin_files(folder)
        if found:
            say(f"stand-in: {found[0]} was built meanwhile by another process")
            return found[0]
        return _train_and_write(folder, steps, images_per_digit, say)


def _train_and_write(folder: Path, steps: int, images_per_digit: int,
                     say: Callable[[str], None]) -> Path:
    import torch

    from dml_core.core.io import atomic_path

    t0 = time.perf_counter()
    n = NUM_CLASSES * images_per_digit
    say(f"stand-in: pretraining {BACKBONE} on single digits (the demo's ImageNet; {n} images, "
        f"{steps} steps of {BATCH_SIZE}, {THREADS} thread{'s' if THREADS > 1 else ''}, "
        "pinned numeric path)")
    images, labels = source_images(source_plan(per_digit=images_per_digit))
    model, accuracy = train_standin(images, labels, steps, say)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = folder / f"{FILE_STEM}-{digest[:8]}.pth"  # torch.hub's naming: the hash is checked
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    say(f"stand-in: wrote {path} in {time.perf_counter() - t0:.0f} s (source accuracy "
        f"{accuracy:.2f}; SHA-256 {digest[:16]}...)")
    return path


def ensure_standin(data_root: str | os.PathLike | None = None, *, verbose: bool = True) -> Path:
    """The stand-in's path, built first when ``torch_checkpoint_dir()`` has none of this
    :data:`VERSION` — under the demo data set's lock (``<data_root>/demo/.prepare.lock``), so
    that concurrent notebooks build it once and the others wait and reuse it."""
    from dml_core.core.locks import FileLock
    from dml_core.core.paths import torch_checkpoint_dir
    from dml_core.data.layout import LOCK_FILE, dataset_dir

    folder = torch_checkpoint_dir()
    found = standin_files(folder)
    if found:
        return found[0]
    with FileLock(dataset_dir("demo", data_root) / LOCK_FILE,
                  what="the data set 'demo' (building the stand-in weights)"):
        found = standin_files(folder)
        if found:
            return found[0]
        return build_standin(folder, say=print if verbose else (lambda *_: None))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Build the demo's stand-in pretrained trunk "
                                 "(if missing) and print its path.")
    ap.add_argument("--data-root", default=None, help="the data root whose demo lock to take")
    ap.add_argument("--build-into", default=None, help=argparse.SUPPRESS)  # build_standin's child
    ap.add_argument("--steps", type=int, default=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--images-per-digit", type=int, default=IMAGES_PER_DIGIT,
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_into is None:
        print(ensure_standin(args.data_root))
    else:
        built = _build_here(Path(args.build_into), args.steps, args.images_per_digit,
                            say=lambda line: print(line, flush=True))
        print(f"{_BUILT}{built}", flush=True)
