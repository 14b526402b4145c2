"""Tiny raw data sets in every real on-disk format, for the data-layer tests.

Each ``make_<ds>_raw(folder, ...)`` writes ``folder`` (normally ``<data_root>/<ds>``) in the exact
layout of the real download and returns a description of what it wrote. The generators live in
:mod:`tools.rehearsal` (which also writes them at realistic sizes for ``make rehearsal``).
"""
from __future__ import annotations

from tools.rehearsal import (make_car_raw, make_cub_raw, make_isc_raw, make_sop_raw,  # noqa: F401
                                make_stl10_raw, write_image)
