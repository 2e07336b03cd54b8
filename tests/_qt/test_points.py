"""Point prompts: with box-only LiteMedSAM a click becomes a box; with a model that
answers points, clicks are positive/negative and refine the previous prediction."""

from __future__ import annotations

import numpy as np
from skimage.measure import regionprops

from .conftest import TIMEOUT_MS, click, iou, press, wait_candidates


def centre(labels: np.ndarray, label: int) -> tuple[float, float]:
    r = next(r for r in regionprops(labels) if r.label == label)
    return tuple(float(v) for v in np.round(r.centroid))


def test_click_with_box_only_model_becomes_a_box(sam, qtbot, nuclei2d):
    image, labels = nuclei2d
    viewer, widget = sam(image)
    assert widget.box_only and widget.ui.box_mode.isChecked()
    widget.ui.point_mode.click()  # as the user does
    points = widget.prompts.points
    assert viewer.layers.selection.active is points and points.mode == "add"
    assert "trained on boxes" in widget.ui.hint.text()

    click(points, centre(labels, 101))
    qtbot.waitUntil(lambda: len(widget.prompts.boxes.data) == 1, timeout=TIMEOUT_MS)
    assert len(points.data) == 0  # the click was turned into the box
    assert "became a box" in widget.ui.hint.text()
    box = widget.prompts.boxes.data[0]
    r = next(r for r in regionprops(labels) if r.label == 101)
    (r0, c0), (r1, c1) = box.min(axis=0), box.max(axis=0)
    assert r0 <= r.bbox[0] + 2 and c0 <= r.bbox[1] + 2 and r1 >= r.bbox[2] - 3 and c1 >= r.bbox[3] - 3
    assert (r1 - r0) * (c1 - c0) < 3 * r.bbox_area  # around the nucleus, not the field
    wait_candidates(qtbot, widget)
    assert iou(widget.candidate_view.mask, labels == 101) > 0.75

    click(points, centre(labels, 71), modifiers=["Shift"])  # a negative click: ignored
    qtbot.waitUntil(lambda: "Negative points are ignored" in widget.ui.hint.text(), timeout=TIMEOUT_MS)
    assert len(points.data) == 0 and len(widget.prompts.boxes.data) == 1


def test_points_are_positive_or_negative_and_refine(sam, qtbot, extra_models, nuclei2d):
    image, labels = nuclei2d
    viewer, widget = sam(image)
    widget.ui.model.setCurrentIndex(widget.ui.model.findData("lite_points"))
    qtbot.waitUntil(lambda: widget.engine is not None and widget.engine.model_name == "lite_points",
                    timeout=TIMEOUT_MS)
    assert not widget.box_only and widget.ui.point_mode.isChecked() and widget.ui.hint.text() == ""
    calls = []
    segment = widget.engine.segment

    def spy(source, index, points=None, labels=None, box=None, mask_input=None, **kw):
        calls.append((None if points is None else np.array(points), None if labels is None else np.array(labels),
                      mask_input is not None))
        return segment(source, index, points, labels, box, mask_input=mask_input, **kw)

    widget.engine.segment = spy
    points = widget.prompts.points
    assert viewer.layers.selection.active is points

    click(points, centre(labels, 175))
    wait_candidates(qtbot, widget)
    assert calls[-1][1].tolist() == [1] and calls[-1][2] is False  # first click: no mask input
    widget.candidate_view.clear()
    click(points, (430.0, 395.0), modifiers=["Shift"])  # background next to it: negative
    wait_candidates(qtbot, widget)
    assert calls[-1][1].tolist() == [1, 0] and calls[-1][2] is True  # refined with the last logits
    assert points.features["positive"].tolist() == [True, False]
    assert points.symbol[1].value == "cross" and np.allclose(points.face_color[1][:3], [1.0, 0.2, 0.8])

    press(viewer, "T")  # negative by default now; shift gives a positive
    assert widget.ui.negative.isChecked()
    click(points, (500.0, 20.0))
    click(points, centre(labels, 175), modifiers=["Shift"])
    qtbot.waitUntil(lambda: len(calls) and len(calls[-1][1]) == 4, timeout=TIMEOUT_MS)
    assert points.features["positive"].tolist() == [True, False, False, True]

    press(viewer, "X")  # clear the plane's prompts
    assert len(points.data) == 0 and widget.candidate_view.candidates is None
