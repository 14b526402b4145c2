"""A batch worker's Jupyter kernel, kept from one run to the next.

A fresh kernel per notebook costs, on 2 CPU cores, about 1–2 s to start and 3–4 s to import
torch, torchvision (which imports ``torch._dynamo``) and matplotlib again: on the demo profile's
short preview runs that was a third of each run. So a local batch keeps each worker's kernel and, before
the next notebook, gives it back the state a new kernel would have:

- ``%reset -f``: an empty namespace (no variable of the last notebook is visible);
- no open matplotlib figure;
- the working directory the kernel was started in (the notebooks folder);
- the execution counter at 1, so the executed notebook numbers its cells as a new kernel would.

What stays is what does not decide a result: imported modules (the point) and their caches
that check their inputs. Every training run seeds every random generator itself
(:mod:`dml_core.training.seeding`), so its numbers do not depend on what ran before; the batch
test checks that a run gives identical metrics in a reused and in a new kernel.

A kernel is not reused — it is shut down and the next run gets a new one — after a run that
failed or was interrupted, when it died, when the reset fails, or when the next run needs another
kernel spec, working directory or environment (the kernel keeps the environment it started with).
``python -m dml_core.batch --fresh-kernels`` (or ``reuse_kernel: False`` in a task) starts a new
kernel for every run, as Slurm jobs always do.
"""
from __future__ import annotations

import multiprocessing.util
from typing import Any

__all__ = ["ReusableKernel", "kernel_for", "release", "close_kernels"]

#: What a reused kernel runs (unrecorded) before the next notebook: the state of a new kernel.
RESET_CODE = """\
get_ipython().run_line_magic("reset", "-f")
import os as _dml_os, sys as _dml_sys
if "matplotlib.pyplot" in _dml_sys.modules:
    _dml_sys.modules["matplotlib.pyplot"].close("all")
_dml_os.chdir({cwd!r})
get_ipython().execution_count = 1
del _dml_os, _dml_sys
"""
RESET_TIMEOUT_S = 60


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
    """One kernel (``km``, a jupyter_client kernel manager; papermill starts it at the first run)
    for runs with the same ``key`` (kernel spec, working directory, environment)."""

    def __init__(self, key: tuple, kernel_name: str, config: Any):
        self.key = key
        self.km = _manager_class()(kernel_name=kernel_name, config=config)
        self.km.dml_clients = []
        self.runs = 0  # notebooks executed in it so far

    def alive(self) -> bool:
        from jupyter_core.utils import run_sync

        return bool(self.km.has_kernel and run_sync(self.km.is_alive)())

    def reset(self, cwd: str) -> None:
        """Give the kernel a new kernel's state (see the module docstring); raises
        ``RuntimeError`` when it does not answer or the reset fails."""
        import time

        # the shell channel only: its reply says whether the reset ran (waiting for the kernel
        # to be "ready" would first drain IOPub for 0.2 s, each run)
        kc = self.km.blocking_client()
        kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        try:
            msg_id = kc.execute(RESET_CODE.format(cwd=cwd), silent=True, store_history=False)
            deadline = time.monotonic() + RESET_TIMEOUT_S
            while True:
                reply = kc.get_shell_msg(timeout=max(0.0, deadline - time.monotonic()))
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        finally:
            kc.stop_channels()
        if reply["content"].get("status") != "ok":
            content = reply["content"]
            raise RuntimeError(f"resetting the kernel failed: {content.get('ename')}: "
                               f"{content.get('evalue')}")

    def after_run(self) -> None:
        """Close the channels the run's client opened."""
        while self.km.dml_clients:
            self.km.dml_clients.pop().stop_channels()
        self.runs += 1

    def shutdown(self) -> None:
        from jupyter_core.utils import run_sync

        self.after_run()
        if self.km.has_kernel:
            try:
                run_sync(self.km.shutdown_kernel)(now=True)
            except Exception:  # noqa: BLE001 - a kernel that is already gone
                pass


_kernel: ReusableKernel | None = None  # this process's kernel (one per batch worker)


def kernel_for(task: dict[str, Any], config: Any) -> ReusableKernel:
    """The kernel to run ``task`` in: this process's kept kernel, reset, when it fits the task
    (same kernel spec, working directory and environment, alive); else a new one (started by
    papermill at the run). The caller passes it to papermill and calls :func:`release` after."""
    global _kernel
    key = (task["kernel_name"], task["cwd"], tuple(sorted((task.get("env") or {}).items())))
    if _kernel is not None and _kernel.key == key and _kernel.runs and _kernel.alive():
        try:
            _kernel.reset(task["cwd"])
            return _kernel
        except Exception:  # noqa: BLE001 - whatever went wrong, a new kernel is the cure
            pass
    close_kernels()
    _kernel = ReusableKernel(key, task["kernel_name"], config)
    multiprocessing.util.Finalize(_kernel, _kernel.shutdown, exitpriority=10)
    return _kernel


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
