"""Square windows of a plane on a grid of levels, the geometry of zoomed prompting.

Level ``l`` has windows of side ``tile * 2**l`` on a grid of half that stride, cut to the
plane; the top level is the whole plane. An extent of up to half a window's side always
lies wholly inside the window whose centre is nearest its own. No torch, no napari here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A rectangle of the plane, half-open: rows r0..r1-1, columns c0..c1-1."""

    r0: int
    c0: int
    r1: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        return self.r0, self.c0, self.r1, self.c1

    @property
    def centre(self) -> tuple[float, float]:
        return (self.r0 + self.r1) / 2.0, (self.c0 + self.c1) / 2.0

    def contains(self, box: np.ndarray) -> bool:
        """Whether the continuous box (r0, c0, r1, c1) lies inside the window."""
        return bool(box[0] >= self.r0 and box[1] >= self.c0 and box[2] <= self.r1 and box[3] <= self.c1)


def top_level(shape: tuple[int, int], tile: int) -> int:
    """The level whose one window is the whole plane."""
    return max(0, math.ceil(math.log2(max(max(shape) / tile, 1.0))))


def window_at(centre: tuple[float, float], shape: tuple[int, int], tile: int, level: int) -> Window:
    """The grid window of ``level`` whose centre is nearest ``centre`` (row, col)."""
    h, w = shape
    side = tile * 2 ** level
    if side >= max(h, w):
        return Window(0, 0, h, w)
    stride = side // 2
    origin = [int(min(max(round((c - side / 2.0) / stride) * stride, 0), max(n - side, 0)))
              for c, n in zip(centre, (h, w))]
    return Window(origin[0], origin[1], min(origin[0] + side, h), min(origin[1] + side, w))


def plan_window(extent: np.ndarray, shape: tuple[int, int], tile: int, context: float,
                min_level: int = 0) -> tuple[Window, int]:
    """The smallest grid window (of ``min_level`` or above) holding ``extent`` with context.

    ``extent`` is a continuous box (r0, c0, r1, c1) in plane pixels (edges, not centres);
    the window must hold it grown by ``(context - 1) / 2`` of its size on every side (at
    least 2 pixels).
    """
    h, w = shape
    size = np.maximum(extent[2:] - extent[:2], 1.0)
    pad = np.maximum(size * (context - 1.0) / 2.0, 2.0)
    need = np.concatenate([np.maximum(extent[:2] - pad, 0), np.minimum(extent[2:] + pad, (h, w))])
    centre = tuple((extent[:2] + extent[2:]) / 2.0)
    top = top_level(shape, tile)
    for level in range(min(min_level, top), top + 1):
        win = window_at(centre, shape, tile, level)
        if win.contains(need):
            return win, level
    return Window(0, 0, h, w), top


def level_windows(shape: tuple[int, int], tile: int, level: int) -> list[Window]:
    """Every grid window of ``level``: the windows :func:`plan_window` can return there."""
    h, w = shape
    side = tile * 2 ** level
    if side >= max(h, w):
        return [Window(0, 0, h, w)]
    rows, cols = grid_origins(h, side), grid_origins(w, side)
    return [Window(r, c, min(r + side, h), min(c + side, w)) for r in rows for c in cols]


def level_for_diameter(diameter: float, shape: tuple[int, int], tile: int, context: float) -> int:
    """The smallest level where an object of ``diameter`` pixels, with context, always fits
    inside the window nearest it (a window side of at least 2 x context x diameter)."""
    need = 2.0 * context * max(float(diameter), 1.0)
    return min(max(0, math.ceil(math.log2(max(need / tile, 1.0)))), top_level(shape, tile))


def nearest_first(windows: list[Window], at: tuple[float, float]) -> list[Window]:
    """``windows`` ordered by the distance of their centres from ``at`` (row, col)."""
    return sorted(windows, key=lambda w: (w.centre[0] - at[0]) ** 2 + (w.centre[1] - at[1]) ** 2)


def grid_origins(length: int, side: int, stride: int | None = None) -> list[int]:
    """Starts of windows of ``side`` every ``stride`` pixels (default: half a side) along
    ``length``, the last one moved back to end at the edge."""
    if side >= length:
        return [0]
    stride = max(side // 2 if stride is None else stride, 1)
    starts = list(range(0, length - side + 1, stride))
    if starts[-1] != length - side:
        starts.append(length - side)
    return starts
