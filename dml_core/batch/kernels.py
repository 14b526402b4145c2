"""A batch worker's Jupyter kernel, kept from one run to the next.

A new kernel per notebook costs, on 2 CPU cores, about 1–2 s to start and 3–4 s to import
torch, torchvision (which imports ``torch._dynamo``) and matplotlib again: on the demo profile's
short preview runs that was a third of each run. So a local batch keeps each worker's kernel
and, before the next notebook, gives it back the state a new kernel would have:

- ``%reset -f``: an empty namespace (no variable of the last notebook is visible);
- no open matplotlib figure;
- the working directory the kernel was started in (the notebooks folder);
- the execution counter at 1, so the executed notebook numbers its cells as a new kernel would;
- torch's process-wide settings as they were when the kernel started (:func:`torch_settings`:
  threads, default dtype, deterministic algorithms, grad mode, matmul precision, the cuDNN and
  oneDNN switches). They decide a run's numbers and speed, and a library can change them
  behind a notebook's back: numba's OpenMP runtime, once UMAP had run in a kernel, set the
  process's OpenMP threads to the number of cores, torch's with them, and the run trained next
  in that kernel gave other numbers, 8 times slower beside the other job.

What stays is what does not decide a result: imported modules (the point) and their caches
that check their inputs. Every training run seeds every random generator itself
(:mod:`dml_core.training.seeding`), so its numbers do not depend on what ran before; the batch
test checks that a run gives identical numbers in a kept and in a new kernel, after a notebook
that changed torch's settings.

A kernel is not reused — it is shut down and the next run gets a new one — after a run that
failed or was interrupted, when it died, when the reset fails, or when the next run needs another
kernel spec, working directory or environment (the kernel keeps the environment it started with).
A kernel that cannot import this package and torch is not kept at all. ``python -m
dml_core.batch --fresh-kernels`` (or ``reuse_kernel: False`` in a task) starts a new kernel for
every run, as Slurm jobs always do.
"""
from __future__ import annotations

import multiprocessing.util
from typing import Any

__all__ = ["ReusableKernel", "kernel_for", "release", "close_kernels", "torch_settings",
           "set_torch_settings", "remember_torch_settings", "restore_torch_settings"]

#: What a new kernel runs (unrecorded) before its first notebook: remember torch's settings
#: (in this module, inside the kernel: modules outlive ``%reset``).
START_CODE = """\
from dml_core.batch.kernels import remember_torch_settings
remember_torch_settings()
del remember_torch_settings
"""
#: What a reused kernel runs (unrecorded) before the next notebook: the state of a new kernel.
RESET_CODE = """\
get_ipython().run_line_magic("reset", "-f")
import os as _dml_os, sys as _dml_sys
from dml_core.batch.kernels import restore_torch_settings as _dml_restore
_dml_restore()
if "matplotlib.pyplot" in _dml_sys.modules:
    _dml_sys.modules["matplotlib.pyplot"].close("all")
_dml_os.chdir({cwd!r})
get_ipython().execution_count = 1
del _dml_os, _dml_sys, _dml_restore
"""
RESET_TIMEOUT_S = 60


def torch_settings() -> dict[str, Any]:
    """torch's process-wide settings that decide a run's numbers or speed (imports torch)."""
    import torch

    cudnn, mkldnn = torch.backends.cudnn, torch.backends.mkldnn
    return {"num_threads": torch.get_num_threads(), "default_dtype": torch.get_default_dtype(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "grad_enabled": torch.is_grad_enabled(),
            "matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn": (cudnn.enabled, cudnn.benchmark, cudnn.deterministic),
            "mkldnn": mkldnn.enabled}


_remembered: dict[str, Any] | None = None  # in a kept kernel: torch's settings at its start


def remember_torch_settings() -> None:
    """Run in a new kernel, before its first notebook (:data:`START_CODE`)."""
    global _remembered
    _remembered = torch_settings()


def restore_torch_settings() -> None:
    """Run in a kept kernel, before each later notebook (:data:`RESET_CODE`)."""
    if _remembered is None:
        raise RuntimeError("this kernel did not remember torch's settings at its start")
    set_torch_settings(_remembered)


def set_torch_settings(settings: dict[str, Any]) -> None:
    """Set what :func:`torch_settings` returned."""
    import torch

    if torch.get_num_threads() != settings["num_threads"]:
        torch.set_num_threads(settings["num_threads"])
    torch.set_default_dtype(settings["default_dtype"])
    torch.use_deterministic_algorithms(settings["deterministic"],
                                       warn_only=settings["deterministic_warn_only"])
    torch.set_grad_enabled(settings["grad_enabled"])
    torch.set_float32_matmul_precision(settings["matmul_precision"])
    (torch.backends.cudnn.enabled, torch.backends.cudnn.benchmark,
     torch.backends.cudnn.deterministic) = settings["cudnn"]
    torch.backends.mkldnn.enabled = settings["mkldnn"]


def _manager_class():
    from jupyter_client.manager import AsyncKernelManager

    class _Manager(AsyncKernelManager):
        """Remembers the clients it hands out (nbclient does not stop the channels of a kernel
        it does not own), so that they are closed after each run."""

        def client(self, **kwargs):
            kc = super().client(**kwargs)
            self.dml_clients.append(kc)
            return kc

    return _Manager


class ReusableKernel:
    """One kernel (``km``, a jupyter_client kernel manager) for runs with the same ``key``
    (kernel spec, working directory, environment)."""

    def __init__(self, key: tuple, kernel_name: str, config: Any):
        self.key = key
        self.km = _manager_class()(kernel_name=kernel_name, config=config)
        self.km.dml_clients = []
        self.runs = 0  # notebooks executed in it so far

    def alive(self) -> bool:
        from jupyter_core.utils import run_sync

        return bool(self.km.has_kernel and run_sync(self.km.is_alive)())

    def start(self, cwd: str) -> None:
        """Start the kernel (in ``cwd``, with this process's environment) and let it remember
        torch's settings before any notebook runs; raises when that fails or times out."""
        from jupyter_core.utils import run_sync

        # nbclient's own default: IPython's history in memory, not in a shared SQLite file
        run_sync(self.km.start_kernel)(cwd=cwd,
                                       extra_arguments=["--HistoryManager.hist_file=:memory:"])
        self._run(START_CODE, "remembering torch's settings")

    def reset(self, cwd: str) -> None:
        """Give the kernel a new kernel's state (see the module docstring); raises
        ``RuntimeError`` when the reset fails, ``queue.Empty`` when the kernel does not answer
        within :data:`RESET_TIMEOUT_S`."""
        self._run(RESET_CODE.format(cwd=cwd), "resetting the kernel")

    def _run(self, code: str, what: str) -> None:
        import time

        # the shell channel only: its reply says whether the code ran (waiting for the kernel
        # to be "ready" would first drain IOPub for 0.2 s, each run)
        kc = self.km.blocking_client()
        kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        try:
            msg_id = kc.execute(code, silent=True, store_history=False)
            deadline = time.monotonic() + RESET_TIMEOUT_S
            while True:
                reply = kc.get_shell_msg(timeout=max(0.0, deadline - time.monotonic()))
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        finally:
            kc.stop_channels()
        if reply["content"].get("status") != "ok":
            content = reply["content"]
            raise RuntimeError(f"{what} failed: {content.get('ename')}: {content.get('evalue')}")

    def after_run(self) -> None:
        """Close the channels the run's client opened; count the run."""
        self._close_clients()
        self.runs += 1

    def _close_clients(self) -> None:
        while self.km.dml_clients:
            self.km.dml_clients.pop().stop_channels()

    def shutdown(self) -> None:
        from jupyter_core.utils import run_sync

        self._close_clients()
        if self.km.has_kernel:
            try:
                run_sync(self.km.shutdown_kernel)(now=True)
            except Exception:  # noqa: BLE001 - a kernel that is already gone
                pass


_kernel: ReusableKernel | None = None  # this process's kernel (one per batch worker)


def kernel_for(task: dict[str, Any], config: Any) -> ReusableKernel | None:
    """The kernel to run ``task`` in: this process's kept kernel, reset, when it fits the task
    (same kernel spec, working directory and environment, alive); else a new one, started here
    (call it with the task's environment set). None when a new one cannot remember torch's
    settings (a kernel without this package, or without torch): papermill then starts a kernel
    of its own for the run, as with ``--fresh-kernels``. The caller passes the kernel to
    papermill and calls :func:`release` after."""
    global _kernel
    key = (task["kernel_name"], task["cwd"], tuple(sorted((task.get("env") or {}).items())))
    if _kernel is not None and _kernel.key == key and _kernel.runs and _kernel.alive():
        try:
            _kernel.reset(task["cwd"])
            return _kernel
        except Exception:  # noqa: BLE001 - whatever went wrong, a new kernel is the cure
            pass
    close_kernels()
    kernel = ReusableKernel(key, task["kernel_name"], config)
    multiprocessing.util.Finalize(kernel, kernel.shutdown, exitpriority=10)
    try:
        kernel.start(task["cwd"])
    except Exception:  # noqa: BLE001 - no reuse for this run (see the docstring)
        kernel.shutdown()
        return None
    _kernel = kernel
    return kernel


def release(kernel: ReusableKernel, ok: bool) -> None:
    """After a run: keep the kernel for the next one when the run succeeded, else shut it down."""
    global _kernel
    kernel.after_run()
    if not ok:
        kernel.shutdown()
        if _kernel is kernel:
            _kernel = None


def close_kernels() -> None:
    """Shut this process's kept kernel down (end of a batch run in this process)."""
    global _kernel
    if _kernel is not None:
        _kernel.shutdown()
        _kernel = None
