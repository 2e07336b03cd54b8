"""The layers the widget adds to the viewer: the labels that commits go into, the results of
segment everything; each added without taking the focus from the layer the user works on."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..embeddings.engine import Index
from ..interactive.commit import labels_dtype
from ..interactive.planes import PlaneView
from ..interactive.stack import PlaneStack


def camera(viewer: Any) -> Any:
    """The viewer's 2D camera: ``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before."""
    return getattr(viewer, "scene", viewer).camera


def add_quietly(viewer: Any, layer: Any) -> Any:
    """Add ``layer`` to the viewer and give the focus back to the layer that had it (napari
    makes a new layer the active one): the user goes on prompting where they were."""
    active = viewer.layers.selection.active
    viewer.layers.append(layer)
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    return layer


def new_output_layer(viewer: Any, view: PlaneView, metadata: dict[str, Any] | None = None) -> Any:
    """An empty Labels layer matching the image, added without stealing focus."""
    from napari.layers import Labels

    scale, translate = view.scale_translate()
    labels = Labels(np.zeros(view.shape, dtype=labels_dtype(view.source.data.dtype)),
                    name=f"{view.layer.name} SAM labels", scale=scale, translate=translate,
                    metadata=dict(metadata or {}))
    return add_quietly(viewer, labels)


def add_labels(viewer: Any, view: PlaneView, index: Index, labels: np.ndarray) -> Any:
    """A new Labels layer matching the image, holding ``labels`` at ``index``: a plane, or
    a (Z, H, W) stack along the axis next to the plane."""
    from napari.layers import Labels

    data = np.zeros(view.shape, dtype=labels_dtype(view.source.data.dtype))
    if labels.ndim == 2:
        view.plane_of(data, index)[...] = labels
    else:
        stack = PlaneStack(view.source, index)
        for k in range(labels.shape[0]):
            view.plane_of(data, stack.at(k))[...] = labels[k]
    scale, translate = view.scale_translate()
    layer = Labels(data, name=f"{view.layer.name} SAM automatic", scale=scale, translate=translate)
    return add_quietly(viewer, layer)
