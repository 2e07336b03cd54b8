"""Committing a mask: next free id, no overwriting, one undo step, full dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_sam.interactive.commit import (
    CommitRefused, commit_mask, commit_planes, labels_dtype, next_free_id, replace_object,
)
from napari_sam.interactive.planes import PlaneView


def stack_view(shape=(3, 6, 7)) -> PlaneView:
    return PlaneView.from_layer(Image(np.zeros(shape)), (1, 2))


def test_commit_paints_one_plane_under_a_new_id_and_undoes_in_one_step():
    view = stack_view()
    labels = Labels(np.zeros(view.shape, dtype=np.int32))
    labels.data[0, 0, 0] = 4
    mask = np.zeros((6, 7), bool)
    mask[1:4, 2:5] = True
    assert commit_mask(labels, mask, view, (2,)) == 5
    assert np.array_equal(labels.data[2] == 5, mask) and labels.data[:2].max() == 4
    assert labels.selected_label == 5
    mask2 = np.zeros((6, 7), bool)
    mask2[3:6, 4:7] = True  # overlaps the first object
    assert commit_mask(labels, mask2, view, (2,)) == 6
    assert (labels.data[2] == 5).sum() == mask.sum()  # object 5 kept all its pixels
    labels.undo()
    assert not (labels.data == 6).any() and (labels.data[2] == 5).sum() == mask.sum()
    labels.undo()
    assert labels.data.max() == 4 and next_free_id(labels) == 5


def test_commit_nothing_free_overwrite_and_errors():
    view = stack_view()
    labels = Labels(np.ones(view.shape, dtype=np.uint8))
    mask = np.ones((6, 7), bool)
    with pytest.raises(CommitRefused, match="0% of the mask is free"):
        commit_mask(labels, mask, view, (0,))  # every pixel is taken
    assert (labels.data == 1).all()
    assert commit_mask(labels, mask, view, (0,), overwrite=True) == 2
    assert (labels.data[0] == 2).all() and (labels.data[1] == 1).all()
    full = Labels(np.full(view.shape, 255, dtype=np.uint8))
    with pytest.raises(ValueError, match="cannot hold id 256"):
        commit_mask(full, mask, view, (0,), overwrite=True)
    with pytest.raises(ValueError, match="shape"):
        commit_mask(Labels(np.zeros((6, 7), np.int32)), mask, view, (0,))


def test_slivers_empty_masks_and_no_object_candidates_are_refused():
    view = PlaneView.from_layer(Image(np.zeros((6, 7))), (0, 1))
    labels = Labels(np.zeros(view.shape, dtype=np.uint16))
    labels.data[1:6, 1:6] = 3
    over = np.ones((6, 7), bool)  # a box drawn over object 3: only its ring would be free
    with pytest.raises(CommitRefused, match=r"only 40% of the mask is free"):
        commit_mask(labels, over, view, ())
    with pytest.raises(CommitRefused, match="empty"):
        commit_mask(labels, np.zeros((6, 7), bool), view, ())
    blob = np.zeros((6, 7), bool)
    blob[0, 0:3] = True
    with pytest.raises(CommitRefused, match="scores 0.01"):
        commit_mask(labels, blob, view, (), score=0.01)
    assert labels.data.max() == 3 and (labels.data == 3).sum() == 25  # nothing was written
    assert commit_mask(labels, blob, view, (), score=0.9) == 4
    assert commit_mask(labels, over, view, (), overwrite=True) == 5


def test_output_labels_are_as_small_as_the_image_allows():
    assert labels_dtype(np.uint8) == labels_dtype(np.uint16) == labels_dtype(bool) == np.uint16
    assert labels_dtype(np.float32) == labels_dtype(np.int32) == labels_dtype(np.float64) == np.uint32


def test_commit_planes_paints_a_movie_object_frame_by_frame_in_one_undo():
    view = PlaneView.from_layer(Image(np.zeros((2, 5, 6, 7))), (2, 3))  # (t, z, y, x)
    labels = Labels(np.zeros(view.shape, dtype=np.uint16))
    labels.data[1, 3, 0, 0] = 2

    def frames():  # a generator: one plane at a time
        for t in (0, 1):
            mask = np.zeros((6, 7), bool)
            mask[t:t + 2, 1:3] = True
            yield t, mask

    assert commit_planes(labels, frames(), view, (0, 3), axis=0) == 3  # along t, at z = 3
    assert (labels.data == 3).sum() == 8 and (labels.data[:, 3] == 3).sum() == 8
    assert labels.data[0, 3, 0, 1] == 3 and labels.data[1, 3, 2, 1] == 3
    labels.undo()
    assert not (labels.data == 3).any() and labels.data[1, 3, 0, 0] == 2
    with pytest.raises(CommitRefused, match="empty"):
        commit_planes(labels, iter([(0, np.zeros((6, 7), bool))]), view, (0, 3), axis=0)


def test_replace_object_redraws_one_object_under_its_id_in_one_undo():
    view = stack_view()
    labels = Labels(np.zeros(view.shape, dtype=np.int32))
    labels.data[1, 0:3, 0:3] = 7  # the object to redraw
    labels.data[1, 0:3, 5:7] = 9  # its neighbour
    labels.data[0, 0:3, 0:3] = 7  # the same id on another plane stays
    before = labels.data.copy()
    mask = np.zeros((6, 7), bool)
    mask[1:5, 2:6] = True  # moved, grown, and reaching into the neighbour
    assert replace_object(labels, mask, view, (1,), 7) == 7
    plane = labels.data[1]
    assert np.array_equal(plane == 7, mask & (before[1] != 9))  # the neighbour keeps its pixels
    assert (plane == 9).sum() == 6 and labels.data.max() == 9 and np.array_equal(labels.data[0], before[0])
    assert labels.selected_label == 7
    labels.undo()  # clearing and painting were one step
    assert np.array_equal(labels.data, before)
    assert replace_object(labels, mask, view, (1,), 7, overwrite=True) == 7
    assert np.array_equal(labels.data[1] == 7, mask) and (labels.data[1] == 9).sum() == 4
    onto = np.zeros((6, 7), bool)
    onto[0:3, 5:7] = True  # all of it on object 9
    with pytest.raises(CommitRefused, match="lies on other objects"):
        replace_object(labels, onto, view, (1,), 7)
    with pytest.raises(CommitRefused, match="empty"):
        replace_object(labels, np.zeros((6, 7), bool), view, (1,), 7)
    with pytest.raises(CommitRefused, match="no object here"):
        replace_object(labels, mask, view, (1,), 7, score=0.05)
