"""Write a chosen mask into the output Labels layer as one undoable step."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engine import Index
from .planes import PlaneView


def next_free_id(labels: Any) -> int:
    """One more than the largest label in the layer's data."""
    data = labels.data
    top = data.max() if hasattr(data, "max") else np.max(np.asarray(data))
    return int(np.asarray(top)) + 1  # np.asarray computes a lazy (dask) maximum


def commit_mask(labels: Any, mask: np.ndarray, view: PlaneView, index: Index, overwrite: bool = False) -> int | None:
    """Paint ``mask`` (plane pixels) on plane ``index`` of ``labels`` under a new id.

    Existing objects keep their pixels unless ``overwrite``. The edit goes through
    ``Labels.data_setitem`` inside ``block_history``: one Ctrl+Z removes it. Returns the
    new id, or None when no pixel was free to paint.
    """
    if tuple(labels.data.shape) != view.shape:
        raise ValueError(f"labels layer {labels.name!r} has shape {labels.data.shape}, the image needs {view.shape}")
    mask = np.asarray(mask, dtype=bool)
    if not overwrite:
        plane = np.asarray(view.plane_of(labels.data, index))
        mask = mask & (plane == 0)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    new_id = next_free_id(labels)
    dtype = np.dtype(labels.data.dtype)
    if np.issubdtype(dtype, np.integer) and new_id > np.iinfo(dtype).max:
        raise ValueError(f"labels layer {labels.name!r} is full: its dtype {dtype} cannot hold id {new_id}")
    with labels.block_history():
        labels.data_setitem(view.nd_indices(rows, cols, index), new_id)
    labels.selected_label = new_id
    return new_id


def new_output_layer(viewer: Any, view: PlaneView) -> Any:
    """An empty int32 Labels layer matching the image, added without stealing focus."""
    from napari.layers import Labels

    scale, translate = view.scale_translate()
    labels = Labels(np.zeros(view.shape, dtype=np.int32), name=f"{view.layer.name} SAM labels",
                    scale=scale, translate=translate)
    active = viewer.layers.selection.active
    viewer.layers.append(labels)
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    return labels
