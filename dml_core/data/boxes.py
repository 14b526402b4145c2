"""Bounding-box conversions to integer PIL boxes ``(x1, y1, x2, y2)``: left/top inclusive,
right/bottom exclusive, 0-based pixel coordinates.

Two conventions (``box_convention``):

- ``"corrected"`` (default): the pixel box that the annotation actually means.
    * CARS ``.mat`` boxes are MATLAB 1-based and inclusive: ``(x1-1, y1-1, x2, y2)``.
    * CUB float ``(x, y, w, h)`` boxes (0-based, as every reader including the original code treats them):
      the smallest pixel box containing them, ``(floor(x), floor(y), ceil(x+w), ceil(y+h))``.
- ``"original"``: the original code's literal conversion (the leftthomas repositories' preprocessing).
    * CARS: the ``.mat`` integers used as they are, ``(x1, y1, x2, y2)``: shifted one pixel
      right/down, and one pixel narrower on the left/top than the annotated box.
    * CUB: ``(int(x), int(y), int(x)+int(w), int(y)+int(h))`` (truncation).

CUB's released boxes are integer-valued floats, so for CUB (and the demo) both conventions give
the same box; they differ only for CARS. Boxes are clipped to the image when an image is loaded.
"""
from __future__ import annotations

import math

Box = tuple[int, int, int, int]


def _check_convention(box_convention: str) -> None:
    if box_convention not in ("corrected", "original"):
        raise ValueError(f"box_convention must be 'corrected' or 'original', got {box_convention!r}")


def mat_box(x1: int, y1: int, x2: int, y2: int, box_convention: str = "corrected") -> Box:
    """CARS ``cars_annos.mat`` box (1-based, inclusive) → PIL box."""
    _check_convention(box_convention)
    if box_convention == "original":
        return (int(x1), int(y1), int(x2), int(y2))
    return (int(x1) - 1, int(y1) - 1, int(x2), int(y2))


def xywh_box(x: float, y: float, w: float, h: float, box_convention: str = "corrected") -> Box:
    """CUB ``bounding_boxes.txt`` float ``(x, y, w, h)`` → PIL box."""
    _check_convention(box_convention)
    if box_convention == "original":
        x1, y1 = int(float(x)), int(float(y))
        return (x1, y1, x1 + int(float(w)), y1 + int(float(h)))
    x, y, w, h = (float(v) for v in (x, y, w, h))
    return (math.floor(x), math.floor(y), math.ceil(x + w), math.ceil(y + h))


def clip_box(box: Box, width: int, height: int) -> Box:
    """Clip ``box`` to a ``width`` × ``height`` image; an empty result keeps at least one pixel."""
    x1, y1, x2, y2 = box
    x1 = min(max(0, x1), width - 1)
    y1 = min(max(0, y1), height - 1)
    x2 = max(min(width, x2), x1 + 1)
    y2 = max(min(height, y2), y1 + 1)
    return (x1, y1, x2, y2)


def box_inside(box: Box, width: int, height: int) -> bool:
    """True when ``box`` is non-empty and lies inside the image."""
    x1, y1, x2, y2 = box
    return 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
