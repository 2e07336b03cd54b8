"""Stacks in the widget: the planes along one stack axis as a (Z, H, W) array, and the work
of carrying the chosen candidate through them (:func:`napari_sam.propagate`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine import Engine, Index, PlaneSource, along
from ..propagation import propagate
from .prompts import PlanePrompts


class StackAlong:
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
        if isinstance(key, tuple) and key and key[0] == slice(None):
            return np.stack([self._plane(k)[key[1:]] for k in range(self.shape[0])])
        raise TypeError(f"StackAlong supports [k] and [:, rows, cols], not {key!r}")


def propagation_job(engine: Engine, stack: StackAlong, z: int, mask: np.ndarray,
                    fixes: dict[int, PlanePrompts] | None = None) -> Callable[..., np.ndarray]:
    """The work of carrying ``mask`` (plane pixels on slice ``z``) through ``stack``, as a
    :class:`~.workers.BackgroundJob` function. ``fixes`` are the prompts the user drew on
    other slices: their best masks are taken as given there."""

    def embed(k: int) -> Any:
        return engine.embedding(stack.source, stack.at(k))

    def run(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> np.ndarray:
        corrections = {k: _best_mask(engine, embed(k), p) for k, p in (fixes or {}).items()}
        return propagate(engine.predictor, stack, z, mask=mask, corrections=corrections, progress=progress,
                         cancel=cancel, embed=embed)

    return run


def _best_mask(engine: Engine, embedding: Any, prompts: PlanePrompts) -> np.ndarray:
    points = prompts.points if len(prompts.points) else None
    cand = engine.predictor.predict(embedding, points, prompts.labels if points is not None else None, prompts.box)
    return cand.masks[cand.best]
