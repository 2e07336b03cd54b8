"""Write a chosen mask into the output Labels layer as one undoable step.

A commit that would add a sliver (a mask that mostly lies on existing objects), an empty
mask or a candidate the model itself scores as no object is refused with the reason, so
no silent wrong object enters the user's labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..embeddings.engine import Index, along
from .planes import PlaneView


def next_free_id(labels: Any) -> int:
    """One more than the largest label in the layer's data."""
    data = labels.data
    top = data.max() if hasattr(data, "max") else np.max(np.asarray(data))
    return int(np.asarray(top)) + 1  # np.asarray computes a lazy (dask) maximum


MIN_SCORE = 0.25  # predicted IoU below this: the model says there is no object here
MIN_FREE = 0.5  # a commit must add at least this part of its mask


class CommitRefused(ValueError):
    """Nothing was committed; the message says why and what to do."""


def commit_mask(labels: Any, mask: np.ndarray, view: PlaneView, index: Index, overwrite: bool = False,
                score: float | None = None) -> int:
    """Paint ``mask`` (plane pixels) on plane ``index`` of ``labels`` under a new id.

    Existing objects keep their pixels unless ``overwrite``. The edit goes through
    ``Labels.data_setitem`` inside ``block_history``: one Ctrl+Z removes it. Returns the
    new id; raises :class:`CommitRefused` for an empty mask, a ``score`` (the candidate's
    predicted IoU) under MIN_SCORE, or a mask less than MIN_FREE of which is free.
    """
    _check_shape(labels, view)
    mask = np.asarray(mask, dtype=bool)
    _check_score(mask, score)
    return _paint(labels, [_free_pixels(labels, mask, view, index, overwrite)], int(mask.sum()))


def replace_object(labels: Any, mask: np.ndarray, view: PlaneView, index: Index, label: int,
                   overwrite: bool = False, score: float | None = None) -> int:
    """Redraw object ``label`` on plane ``index`` as ``mask``, keeping its id: its pixels
    outside ``mask`` are cleared and ``mask`` is painted, in one undoable step. Other
    objects keep their pixels unless ``overwrite``. Refused like :func:`commit_mask`
    (empty mask, low ``score``, a mask mostly on other objects). Returns ``label``."""
    _check_shape(labels, view)
    mask = np.asarray(mask, dtype=bool)
    _check_score(mask, score)
    wanted = int(mask.sum())
    if not wanted:
        raise CommitRefused("the chosen candidate is empty")
    plane = np.asarray(view.plane_of(labels.data, index))
    own = plane == label
    paint = mask if overwrite else mask & ((plane == 0) | own)
    if paint.sum() < MIN_FREE * wanted:
        raise CommitRefused(f"only {100 * paint.sum() / wanted:.0f}% of the mask is free: it lies on other objects. "
                            "Tick 'overwrite existing labels' to replace them")
    with labels.block_history():
        drop = own & ~paint
        if drop.any():
            labels.data_setitem(view.nd_indices(*np.nonzero(drop), index), 0)
        labels.data_setitem(view.nd_indices(*np.nonzero(paint), index), label)
    labels.selected_label = label
    return label


def commit_planes(labels: Any, planes: Iterable[tuple[int, np.ndarray]], view: PlaneView, index: Index, axis: int,
                  overwrite: bool = False) -> int:
    """Paint each (slice k, plane mask) of ``planes`` on slice k along stack axis ``axis``
    of ``labels`` under one new id, in one undoable step. Planes are taken one at a time
    (a generator keeps a long movie's memory to one plane and the object's pixels)."""
    _check_shape(labels, view)
    parts, wanted = [], 0
    for k, mask in planes:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            wanted += int(mask.sum())
            parts.append(_free_pixels(labels, mask, view, along(index, axis, k), overwrite))
    return _paint(labels, parts, wanted)


def extend_objects(labels: Any, planes: Iterable[tuple[int, np.ndarray]], view: PlaneView, index: Index,
                   axis: int, overwrite: bool = False) -> int:
    """Paint each (slice k, (H, W) label plane) of ``planes`` on slice k along stack axis
    ``axis``, every object under its own id (objects carried from one slice keep their ids),
    in one undoable step. Existing objects keep their pixels unless ``overwrite``. Returns
    the number of pixels painted; raises :class:`CommitRefused` if there is none."""
    _check_shape(labels, view)
    painted = 0
    with labels.block_history():
        for k, plane in planes:
            at = along(index, axis, k)
            plane = np.asarray(plane)
            free = plane > 0
            if not overwrite:
                free &= np.asarray(view.plane_of(labels.data, at)) == 0
            rows, cols = np.nonzero(free)
            if rows.size:
                labels.data_setitem(view.nd_indices(rows, cols, at), plane[rows, cols])
                painted += rows.size
    if not painted:
        raise CommitRefused("nothing to add: every slice the objects reach is taken already")
    return painted


def _check_score(mask: np.ndarray, score: float | None) -> None:
    """Refuse a non-empty mask whose predicted IoU ``score`` says there is no object."""
    if score is not None and score < MIN_SCORE and mask.any():
        raise CommitRefused(f"the candidate scores {score:.2f}: the model sees no object here. "
                            "Draw a box around the object (or click on it) instead")


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


def _paint(labels: Any, parts: list[tuple[np.ndarray, ...]], wanted: int) -> int:
    """Write the next free id at all ``parts`` (labels-space indices) as one history step;
    ``wanted`` is the mask's size, of which at least MIN_FREE must be free."""
    if wanted == 0:
        raise CommitRefused("the chosen candidate is empty")
    indices = tuple(np.concatenate(axis_parts) for axis_parts in zip(*parts)) if parts else ()
    free = indices[0].size if indices else 0
    if free < MIN_FREE * wanted:
        raise CommitRefused(f"only {100 * free / wanted:.0f}% of the mask is free: it lies on existing objects. "
                            "Tick 'overwrite existing labels' to replace them")
    new_id = next_free_id(labels)
    dtype = np.dtype(labels.data.dtype)
    if np.issubdtype(dtype, np.integer) and new_id > np.iinfo(dtype).max:
        raise ValueError(f"labels layer {labels.name!r} is full: its dtype {dtype} cannot hold id {new_id}")
    with labels.block_history():
        labels.data_setitem(indices, new_id)
    labels.selected_label = new_id
    return new_id


def labels_dtype(image_dtype: Any) -> np.dtype:
    """The output labels' dtype: uint16 beside 8- and 16-bit images (65535 objects; a
    500-frame 2048x2048 movie takes 4 GB, not 8), uint32 beside anything wider."""
    dtype = np.dtype(image_dtype)
    small = dtype == bool or (np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2)
    return np.dtype(np.uint16 if small else np.uint32)
