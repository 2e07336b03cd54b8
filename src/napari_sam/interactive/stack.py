"""The planes of an image along one stack axis, as a (Z, H, W) array that reads planes only
when asked."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..embeddings.engine import Index, PlaneSource, along


class PlaneStack:
    """Planes of ``source`` along one stack axis, the other stack indices fixed: a (Z, H, W)
    array-like of intensities (colours averaged) that reads planes only when asked.

    ``axis`` is a position in ``index``; by default the last, the stack axis next to the
    plane (z in (t, z, y, x)).
    """

    def __init__(self, source: PlaneSource, index: Index, axis: int | None = None) -> None:
        axis = len(index) - 1 if axis is None else axis
        self.source, self.index, self.axis = source, tuple(index), axis
        n = source.stack_shape[axis]
        h, w = (int(source.data.shape[a]) for a in source.plane_axes)
        self.shape = (n, h, w)

    def at(self, k: int) -> Index:
        return along(self.index, self.axis, k)

    def _plane(self, k: int) -> np.ndarray:
        plane = np.asarray(self.source.plane(self.at(k)), dtype=np.float32)
        return plane.mean(axis=-1) if plane.ndim == 3 else plane

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._plane(int(key))
        if isinstance(key, tuple) and len(key) == 3 and isinstance(key[0], slice):
            return np.stack([self._plane(k)[key[1:]] for k in range(self.shape[0])[key[0]]])
        raise TypeError(f"PlaneStack supports [k] and [slices, rows, cols], not {key!r}")
