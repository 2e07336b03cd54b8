"""Refining existing labels: real nuclei whose outlines a weaker method drew a few pixels off."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam import refine_labels
from napari_sam.errors import Cancelled
from napari_sam.metrics import iou
from napari_sam.variants import corrupted_labels


def test_refine_labels_restores_corrupted_nuclei_and_ranks_the_worst_first(lite_predictor, nuclei2d):
    """Issue 20's bar: mean IoU >= 0.80 back from labels shifted, dilated or eroded by up to
    2 px (0.75 as given; 0.83-0.84 over six draws, 0.81-0.83 at 3 px), and the lowest-ranked
    20 % hold at least half of the 20 % truly worst (here 16 of 25; 13-16 over twelve draws)."""
    image, truth = nuclei2d
    given = corrupted_labels(truth, pixels=2, seed=4)
    untouched = given.copy()
    refined = refine_labels(lite_predictor, image, given)
    assert np.array_equal(given, untouched)  # the user's labels are never written
    assert refined.labels.dtype == given.dtype and refined.labels.shape == given.shape
    assert np.array_equal(refined.ids, np.unique(truth)[1:])
    assert set(np.unique(refined.labels)) <= {0, *refined.ids.tolist()}
    before = np.mean([iou(truth == i, given == i) for i in refined.ids])
    after = np.array([iou(truth == i, refined.labels == i) for i in refined.ids])
    assert after.mean() >= 0.80 and after.mean() > before + 0.04, (before, after.mean())
    n = round(0.2 * len(refined.ids))
    truly_worst = set(refined.ids[np.argsort(after, kind="stable")[:n]].tolist())
    flagged = set(refined.worst_first()[:n].tolist())
    assert len(flagged & truly_worst) >= n / 2, (len(flagged & truly_worst), n)
    assert np.all(np.diff(refined.quality[np.searchsorted(refined.ids, refined.worst_first())]) >= 0)
    assert refined.quality_of(int(refined.worst_first()[0])) == refined.quality.min()


def test_refine_labels_refuses_mismatched_labels_and_stops_when_cancelled(lite_predictor, nuclei2d):
    image, truth = nuclei2d
    with pytest.raises(ValueError, match="labels have shape"):
        refine_labels(lite_predictor, image, truth[:100])
    with pytest.raises(TypeError, match="integers"):
        refine_labels(lite_predictor, image, truth.astype(np.float32))
    with pytest.raises(Cancelled):
        refine_labels(lite_predictor, image, truth, cancel=lambda: True)
    empty = refine_labels(lite_predictor, image, np.zeros_like(truth))
    assert len(empty.ids) == 0 and not empty.labels.any() and len(empty.worst_first()) == 0
