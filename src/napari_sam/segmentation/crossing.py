"""Following an object of an anisotropic volume along its coarse axis, whatever axis the
user propagates through.

Most volumes are sampled more coarsely along one axis (z of confocal and light-sheet
stacks, often 2-5 times). In planes that hold that axis (z x x, z x y) objects are
squashed to a few rows and blurred, so carrying one plane to the next along y or x loses
them: on the bundled nucleus volume (z spacing twice y and x) propagation along y gave a
mean 3D IoU of 0.31 (intensity carry) or 0.44 (SAM at each plane), against 0.63 for SAM
given the true box on every plane. The same object followed along z, through the planes
it is sharp in, is found as well as when the user works in z.

So when the stack axis is finely sampled and a plane axis coarsely (from the layer's
``scale``, or ``spacing=`` in the API), the start mask's trace on the sharp plane through
its centre becomes the prompt there, and the object is propagated along the coarse axis.
This module holds the geometry; :func:`napari_sam.segmentation.propagation.propagate_piece` uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

COARSER = 1.5  # a plane axis this many times coarser than the stack axis is crossed


def coarse_plane_axis(spacing: Sequence[float] | None, ratio: float = COARSER) -> int | None:
    """The plane axis (1: rows, 2: columns) of a (stack, rows, cols) volume sampled at least
    ``ratio`` times more coarsely than the stack axis (the coarser if both are), or None."""
    if spacing is None:
        return None
    s = [float(x) for x in spacing]
    if len(s) != 3 or not all(np.isfinite(s)) or min(s) <= 0:
        raise ValueError(f"spacing must be three positive numbers (stack, rows, cols), got {tuple(spacing)}")
    b = 1 if s[1] >= s[2] else 2
    return b if s[b] >= ratio * s[0] else None


class MovedAxis:
    """A (A, R, C) volume seen with axis ``b`` (1 or 2) first, reading only what is asked:
    ``[k]`` is plane k of axis b, ``[slices, a, other]`` a block. Works over NumPy, dask or
    zarr arrays and over :class:`~napari_sam.interactive.stack.PlaneStack`."""

    def __init__(self, volume: Any, b: int) -> None:
        if b not in (1, 2):
            raise ValueError(f"the moved axis must be 1 or 2, got {b}")
        self.volume, self.b = volume, b
        shape = tuple(int(n) for n in getattr(volume, "shape", np.shape(volume)))
        self.shape = (shape[b], shape[0], shape[3 - b])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            k = int(key)
            return np.asarray(self.volume[:, k, :] if self.b == 1 else self.volume[:, :, k])
        if isinstance(key, tuple) and len(key) == 3 and all(isinstance(s, slice) for s in key):
            along, a, other = key
            block = self.volume[a, along, other] if self.b == 1 else self.volume[a, other, along]
            return np.moveaxis(np.asarray(block), self.b, 0)
        raise TypeError(f"MovedAxis supports [k] and [slice, slice, slice], not {key!r}")


def crossing_prompt(mask: np.ndarray, index: int, b: int, spacing: Sequence[float],
                    at: int | None = None) -> tuple[int, np.ndarray]:
    """Where the object of ``mask`` (on plane ``index`` of the stack) starts along axis ``b``:
    the plane of axis b through the mask's centre (or row / column ``at``), and a box there
    around the mask's trace. Across the trace the box is as wide, in physical units, as the
    trace is long (objects taken as roughly round in the sharp planes). The box is in that
    plane's pixels: (stack index, other plane axis)."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        raise ValueError("the start mask is empty")
    across = mask if b == 1 else mask.T  # rows: the positions along axis b
    k = int(round((rows if b == 1 else cols).mean())) if at is None else int(at)
    line = np.flatnonzero(across[k])
    line = line if len(line) else np.flatnonzero(across.any(0))
    extent = across.shape[1]
    half = (line[-1] - line[0] + 1) * float(spacing[3 - b]) / float(spacing[0]) / 2
    box = np.array([index - half, line[0], index + half, line[-1]], np.float32)
    return k, np.clip(box, 0, [np.inf, extent - 1, np.inf, extent - 1]).astype(np.float32)


def unmove(mask: np.ndarray, b: int) -> np.ndarray:
    """A block in :class:`MovedAxis` order (b, stack, other) back in (stack, rows, cols) order."""
    return mask.transpose(1, 0, 2) if b == 1 else mask.transpose(1, 2, 0)


__all__ = ["COARSER", "MovedAxis", "coarse_plane_axis", "crossing_prompt", "unmove"]
