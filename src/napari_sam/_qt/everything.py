"""'Segment everything' in the widget: the current plane (:func:`~napari_sam.automatic.segment_everything`)
or the whole stack (:func:`~napari_sam.automatic_volume.segment_volume`), as background jobs,
into a new Labels layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..automatic import AutoParams, segment_everything
from ..automatic_volume import segment_volume
from ..engine import Engine, Index
from .commit import labels_dtype
from .planes import PlaneView
from .stack import StackAlong


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


def add_labels(viewer: Any, view: PlaneView, index: Index, labels: np.ndarray) -> Any:
    """A new Labels layer matching the image, holding ``labels`` at ``index``: a plane, or
    a (Z, H, W) stack along the axis next to the plane."""
    from napari.layers import Labels

    data = np.zeros(view.shape, dtype=labels_dtype(view.source.data.dtype))
    if labels.ndim == 2:
        view.plane_of(data, index)[...] = labels
    else:
        stack = StackAlong(view.source, index)
        for k in range(labels.shape[0]):
            view.plane_of(data, stack.at(k))[...] = labels[k]
    scale, translate = view.scale_translate()
    layer = Labels(data, name=f"{view.layer.name} SAM automatic", scale=scale, translate=translate)
    active = viewer.layers.selection.active
    viewer.layers.append(layer)
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active  # the user goes on prompting where they were
    return layer
