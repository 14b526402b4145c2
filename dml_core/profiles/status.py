"""A run's ``status.json``, read so that a damaged one never stops the reader.

The batch (:func:`dml_core.batch.execution.execute_run`) writes ``<run_dir>/status.json`` with
the fields of :data:`FIELDS`. The batch's report, its progress line, the book and the findings
read it with :func:`read_status`: a file that is not JSON, not an object, or holds a field of the
wrong type (an edit by hand, a disk error) is reported for that run — status ``"malformed"`` with
an error that says what is wrong and how to fix it — and every other run goes on.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["STATUS_FILE", "FIELDS", "MALFORMED", "read_status"]

STATUS_FILE = "status.json"
#: The fields of status.json and their types (each may also be null).
FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "notebook": (str,), "status": (str,), "started_at": (str,),
    "finished_at": (str,), "elapsed_s": (int, float), "error": (str,), "fingerprint": (str,)}
#: The status of a run whose status.json cannot be used.
MALFORMED = "malformed"


def _problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"it holds a {type(data).__name__}, not an object"
    for key, types in FIELDS.items():
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            return (f"its field {key!r} is {value!r}, not "
                    + " or ".join("a number" if t in (int, float) else "a string" for t in types))
        if key == "elapsed_s" and not math.isfinite(value):
            return f"its field 'elapsed_s' is {value!r}, not a finite number"
    return None


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run folder's ``status.json``: ``{}`` when there is none; its contents when every field
    of :data:`FIELDS` has its type (or is null); else ``{"status": "malformed", "error": why}``."""
    path = Path(run_dir) / STATUS_FILE
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        why = f"it cannot be read ({exc.strerror or exc})"
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            why = f"it is not JSON ({exc})"
        else:
            why = _problem(data)
            if why is None:
                return data
    return {"status": MALFORMED,
            "error": f"{path} is malformed: {why}. Run it again (python -m dml_core.batch "
                     f"--profile PROFILE --only {Path(run_dir).name} --force) or delete the file"}
