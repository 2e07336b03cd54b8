"""Refine labels in the dock: a labels layer drawn a few pixels off (as another method or a
hurried hand draws it) is re-segmented into a new layer, its objects listed worst first;
a click on a row goes to the object, a dragged box and C redraw it under its id, Ctrl+Z
takes that back. The given layer is never written."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from scipy import ndimage as ndi

from napari_sam.variants import corrupted_labels

from .conftest import TIMEOUT_MS, drag, iou, press, wait_candidates


def click_row(qtbot, object_list, row: int) -> None:
    rows = object_list.rows
    rect = rows.visualItemRect(rows.item(row))
    qtbot.mouseClick(rows.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_refine_labels_then_review_and_redraw_the_worst_object(sam, qtbot, nuclei2d):
    image, truth = (np.ascontiguousarray(a[:200, :200]) for a in nuclei2d)
    viewer, widget = sam(image, name="nuclei")
    drawn = corrupted_labels(truth, pixels=2, seed=4)
    given = viewer.add_labels(drawn.copy(), name="cellpose")
    widget.ui.output.set_layer(given)  # the user picks the layer to refine under 'labels'

    qtbot.mouseClick(widget.ui.refine, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.ui.review.isHidden(), timeout=2 * TIMEOUT_MS)
    refined = viewer.layers["cellpose refined"]
    assert np.array_equal(given.data, drawn)  # never written
    assert widget.ui.output.layer() is refined  # corrections go to the new layer
    ids = widget.ui.review.ids()
    assert sorted(ids) == sorted(np.unique(truth)[1:].tolist())
    before = np.mean([iou(truth == k, drawn == k) for k in ids])
    after = np.mean([iou(truth == k, refined.data == k) for k in ids])
    assert after > before + 0.03, (before, after)

    # Review: go to the object the refinement got most wrong (off the border), redraw it.
    h, w = truth.shape
    inside = [k for k, sl in enumerate(ndi.find_objects(truth), 1) if sl is not None and sl[0].start > 0
              and sl[1].start > 0 and sl[0].stop < h and sl[1].stop < w]
    label = min(inside, key=lambda k: iou(truth == k, refined.data == k))
    worse = iou(truth == label, refined.data == label)
    click_row(qtbot, widget.ui.review, ids.index(label))
    assert widget.review.current == label and refined.selected_label == label
    rows, cols = np.nonzero(refined.data == label)
    centre = np.array(widget.viewer.camera.center[-2:])
    assert np.allclose(centre, [rows.mean(), cols.mean()], atol=1.0), centre

    top = int(refined.data.max())
    snapshot = refined.data.copy()
    sl = ndi.find_objects(truth)[label - 1]
    widget.ui.box_mode.click()  # the boxes layer takes the drag and the keys
    drag(widget.prompts.boxes, (sl[0].start - 2, sl[1].start - 2), (sl[0].stop + 1, sl[1].stop + 1))
    wait_candidates(qtbot, widget)
    chosen = widget.candidate_view.mask.copy()
    press(viewer, "C")
    redrawn = refined.data == label
    # The object is now the chosen candidate, where no other object lies.
    assert np.array_equal(redrawn, chosen & ((snapshot == 0) | (snapshot == label)))
    assert iou(truth == label, redrawn) >= 0.7, (worse, iou(truth == label, redrawn))
    assert int(refined.data.max()) == top  # the same id, no new object
    others = (snapshot != label) & (snapshot > 0)
    assert np.array_equal(refined.data[others & ~redrawn], snapshot[others & ~redrawn])  # the rest kept
    assert CORRECTED_MARK in widget.ui.review.rows.item(ids.index(label)).text()
    assert widget.review.current not in (None, label)  # on to the next object to review

    press(viewer, "Control-Z")  # one undo takes the redraw back
    assert np.array_equal(refined.data, snapshot)

    # A second image: the list no longer applies, and a commit there is a plain commit.
    viewer.add_image(image[::-1].copy(), name="other")
    qtbot.waitUntil(lambda: widget.view is not None and widget.view.layer.name == "other", timeout=TIMEOUT_MS)
    assert widget.ui.review.isHidden() and widget.review.current is None
    assert np.array_equal(given.data, drawn)


CORRECTED_MARK = "corrected"
