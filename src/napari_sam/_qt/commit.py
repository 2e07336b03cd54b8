"""Write a chosen mask into the output Labels layer as one undoable step."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engine import Index, along
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
    _check_shape(labels, view)
    return _paint(labels, [_free_pixels(labels, mask, view, index, overwrite)])


def commit_volume(labels: Any, masks: np.ndarray, view: PlaneView, index: Index, axis: int,
                  overwrite: bool = False) -> int | None:
    """Paint a (Z, H, W) ``masks`` through stack axis ``axis`` (its position in ``index``) of
    ``labels`` under one new id, in one undoable step; otherwise as :func:`commit_mask`."""
    _check_shape(labels, view)
    slices = np.flatnonzero(np.asarray(masks).any(axis=(1, 2)))
    at = [along(index, axis, k) for k in slices]
    return _paint(labels, [_free_pixels(labels, masks[k], view, i, overwrite) for k, i in zip(slices, at)])


def _check_shape(labels: Any, view: PlaneView) -> None:
    if tuple(labels.data.shape) != view.shape:
        raise ValueError(f"labels layer {labels.name!r} has shape {labels.data.shape}, the image needs {view.shape}")


def _free_pixels(labels: Any, mask: np.ndarray, view: PlaneView, index: Index,
                 overwrite: bool) -> tuple[np.ndarray, ...]:
    """Labels-space indices of the ``mask`` pixels of plane ``index`` that may be painted."""
    mask = np.asarray(mask, dtype=bool)
    if not overwrite:
        mask = mask & (np.asarray(view.plane_of(labels.data, index)) == 0)
    rows, cols = np.nonzero(mask)
    return view.nd_indices(rows, cols, index)


def _paint(labels: Any, parts: list[tuple[np.ndarray, ...]]) -> int | None:
    """Write the next free id at all ``parts`` (labels-space indices) as one history step."""
    indices = tuple(np.concatenate(axis_parts) for axis_parts in zip(*parts)) if parts else ()
    if not indices or indices[0].size == 0:
        return None
    new_id = next_free_id(labels)
    dtype = np.dtype(labels.data.dtype)
    if np.issubdtype(dtype, np.integer) and new_id > np.iinfo(dtype).max:
        raise ValueError(f"labels layer {labels.name!r} is full: its dtype {dtype} cannot hold id {new_id}")
    with labels.block_history():
        labels.data_setitem(indices, new_id)
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
