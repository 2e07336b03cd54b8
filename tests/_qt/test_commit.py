"""Committing a mask: next free id, no overwriting, one undo step, full dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_sam._qt.commit import commit_mask, next_free_id
from napari_sam._qt.planes import PlaneView


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
    assert commit_mask(labels, mask, view, (0,)) is None  # every pixel is taken
    assert commit_mask(labels, mask, view, (0,), overwrite=True) == 2
    assert (labels.data[0] == 2).all() and (labels.data[1] == 1).all()
    full = Labels(np.full(view.shape, 255, dtype=np.uint8))
    with pytest.raises(ValueError, match="cannot hold id 256"):
        commit_mask(full, mask, view, (0,), overwrite=True)
    with pytest.raises(ValueError, match="shape"):
        commit_mask(Labels(np.zeros((6, 7), np.int32)), mask, view, (0,))
