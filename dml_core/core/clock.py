"""Time as the project records and prints it: :func:`now` for time stamps in status files,
:func:`fmt_time` for durations in progress lines, tables and the report."""
from __future__ import annotations

import datetime as _dt


def now() -> str:
    """The local time with its offset, to the second (ISO 8601): ``2026-01-31T14:05:09+01:00``."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def fmt_time(seconds: float | None) -> str:
    """A duration: ``12.3 s``, ``4m 05s``, ``1h 02m 03s``; ``-`` for None or NaN."""
    if seconds is None or seconds != seconds:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"
