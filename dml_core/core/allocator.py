"""Keep freed memory inside the process: a CPU training step without page-fault storms.

glibc's ``malloc`` serves a block above its mmap threshold with a fresh ``mmap`` and returns
the heap's free top to the system above its trim threshold. A CPU training step of the demo
allocates and frees the same large tensors every step (the gradient of each 512×512×3×3
convolution weight is 9.4 MB), so with the defaults each step faults those pages in again: on
one thread of a 2-core VM the zero-fill of three such gradients took ~13 ms of a ~135 ms step.
:func:`keep_freed_memory` raises both thresholds (32 MB, glibc's largest mmap threshold; 1 GB),
so freed blocks are reused; the arithmetic is unchanged (bit-identical results), the resident
memory stays at its peak. ``benchmarks/conv_speed.py`` measures the step with and without it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_MMAP_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
_TRIM_THRESHOLD = 1024 * 1024 * 1024
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they are set
    (False on another C library or platform, where nothing changes)."""
    global _done
    if _done is None:
        _done = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                         and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _done
