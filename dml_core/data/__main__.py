"""CLI: ``python -m dml_core.data DATASET [DATASET ...] --data-root DIR [--force]``.

A thin shim over :func:`dml_core.data.prepare` (see docs/DATA.md for the raw layouts).
"""
from dml_core.data.preparation import main

if __name__ == "__main__":
    raise SystemExit(main())
