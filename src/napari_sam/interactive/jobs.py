"""The widget's long computations as background-job functions ``fn(progress, cancel)``:
carrying a candidate through the stack, and segmenting everything on a plane or a stack.
They raise :class:`~napari_sam.automatic.Cancelled` when ``cancel()`` turns true."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..automatic import AutoParams, segment_everything
from ..automatic_volume import segment_volume
from ..engine import Engine, Index
from ..propagation import propagate
from .planes import PlaneView
from .prompts import PlanePrompts
from .stack import StackAlong


def propagation_job(engine: Engine, stack: StackAlong, z: int, mask: np.ndarray,
                    fixes: dict[int, PlanePrompts] | None = None) -> Callable[..., np.ndarray]:
    """The work of carrying ``mask`` (plane pixels on slice ``z``) through ``stack``, as a
    :class:`~.workers.BackgroundJob` function. ``fixes`` are the prompts the user drew on
    other slices: their best masks are taken as given there."""

    def embed(k: int) -> Any:
        return engine.embedding(stack.source, stack.at(k))

    def run(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> np.ndarray:
        corrections = {k: _best_mask(engine, stack, k, p) for k, p in (fixes or {}).items()}
        return propagate(engine.predictor, stack, z, mask=mask, corrections=corrections, progress=progress,
                         cancel=cancel, embed=embed)

    return run


def _best_mask(engine: Engine, stack: StackAlong, k: int, prompts: PlanePrompts) -> np.ndarray:
    """The mask the widget shows first for ``prompts`` on slice ``k``: the same prompt service."""
    points = prompts.points if len(prompts.points) else None
    cand = engine.segment(stack.source, stack.at(k), points, prompts.labels if points is not None else None,
                          prompts.box)
    return cand.masks[cand.best]


def everything_job(engine: Engine, view: PlaneView, index: Index, whole_stack: bool,
                   params: AutoParams) -> Callable[..., np.ndarray]:
    """A :class:`~.workers.BackgroundJob` function returning the plane's (H, W) labels, or
    the (Z, H, W) labels of the stack along the axis next to the plane."""
    predictor = engine.predictor

    def run(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> np.ndarray:
        if whole_stack:
            volume = StackAlong(view.source, index)[:, :, :]
            return segment_volume(predictor, volume, params, progress, cancel)
        return segment_everything(predictor, view.source.plane(index), params, progress, cancel)

    return run
