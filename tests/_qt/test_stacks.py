"""Stacks and changes mid-work: moving through z, prompting a plane still embedding,
switching the image layer or the model while a plane is being embedded."""

from __future__ import annotations

import numpy as np
from skimage.measure import regionprops

from napari_sam.embeddings.engine import EmbeddingCache

from .conftest import TIMEOUT_MS, box_corners, idle, iou, wait_candidates


def box3d(z: int, bbox, pad: float = 1.0) -> np.ndarray:
    (r0, c0), (r1, c1) = box_corners(bbox, pad)
    return np.array([[z, r0, c0], [z, r0, c1], [z, r1, c1], [z, r1, c0]], dtype=float)


def region(labels2d: np.ndarray, label: int):
    return next(r for r in regionprops(labels2d) if r.label == label)


def go_to(viewer, widget, qtbot, z: int) -> None:
    viewer.dims.set_current_step(0, z)
    qtbot.waitUntil(lambda: widget.index == (z,), timeout=TIMEOUT_MS)


def test_moving_through_a_3d_stack(sam, qtbot, nuclei3d):
    image, labels = nuclei3d
    viewer, widget = sam(image)
    go_to(viewer, widget, qtbot, 15)
    idle(qtbot, widget)
    key = widget.engine.key
    src = widget.view.source
    assert all(key(src, (z,)) in widget.cache for z in (14, 15, 16))  # neighbours prefetched

    # nucleus 55 on plane 15
    widget.prompts.boxes.add_rectangles(box3d(15, region(labels[15], 55).bbox))
    wait_candidates(qtbot, widget)
    assert iou(widget.candidate_view.mask, labels[15] == 55) > 0.6
    # the candidates layer holds one plane, placed on plane 15: not a stack-sized array
    cands_layer = widget.candidate_view.layer
    assert cands_layer.data.shape == (1, *labels.shape[1:]) and cands_layer.data[0].any()
    assert cands_layer.translate[0] == 15 and viewer.layers["image"].translate[0] == 0

    go_to(viewer, widget, qtbot, 16)  # the box of plane 15 does not apply here
    assert widget.candidate_view.candidates is None and not widget.candidate_view.layer.data.any()
    assert widget.prompts.for_plane(widget.view, (16,)).empty
    widget.prompts.boxes.add_rectangles(box3d(16, region(labels[16], 59).bbox))
    wait_candidates(qtbot, widget)
    assert iou(widget.candidate_view.mask, labels[16] == 59) > 0.6
    assert widget.commit() == 1
    out = widget.ui.output.layer()
    assert out.data.shape == image.shape
    assert out.data[16].any() and not np.delete(out.data, 16, 0).any()

    go_to(viewer, widget, qtbot, 15)  # plane 15's box is still there: its candidates come back
    wait_candidates(qtbot, widget)
    assert widget.candidate_view.where[1] == (15,)
    assert widget.commit() == 2
    assert (out.data[15] == 2).any() and (out.data[16] == 1).any() and not (out.data[16] == 2).any()

    viewer.dims.ndisplay = 3  # SAM works on planes: the widget waits for the 2D view
    qtbot.waitUntil(lambda: widget.view is None, timeout=TIMEOUT_MS)
    assert "2D view" in widget.ui.status.text()
    viewer.dims.ndisplay = 2
    qtbot.waitUntil(lambda: widget.view is not None and widget.index == (15,), timeout=TIMEOUT_MS)
    assert "embedded" in widget.ui.plane.text()


def test_prompt_on_a_plane_still_embedding_is_answered_at_once(sam, qtbot, gate, nuclei2d):
    """A prompt does not wait for the whole plane's embedding: its zoomed window is
    embedded on the decoder's worker while the plane's embedding is still under way."""
    image, labels = nuclei2d
    viewer, widget = sam(image)
    fresh = image.copy()  # another array: not in any cache
    g = gate(widget.engine.predictor, held=1)  # the whole plane's embedding waits
    widget.ui.image.set_layer(viewer.add_image(fresh, name="fresh"))
    qtbot.waitUntil(lambda: widget.view is not None and widget.view.layer.name == "fresh", timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: g.calls == 1, timeout=TIMEOUT_MS)  # the encoder is on it

    assert "embedding ..." in widget.ui.plane.text()
    widget.prompts.boxes.add_rectangles(box_corners(region(labels, 175).bbox))
    wait_candidates(qtbot, widget)
    assert widget.embedding_worker.busy and g.calls == 2  # the plane still waits; the prompt's window did not
    assert iou(widget.candidate_view.mask, labels == 175) > 0.8
    g.open()
    idle(qtbot, widget)
    assert widget.ui.plane.text() == "image: embedded; a prompt embeds its zoomed tile when first needed"


def test_switching_image_mid_embedding(sam, qtbot, gate, nuclei2d, nuclei3d):
    image, labels = nuclei2d
    viewer, widget = sam(image)
    widget.prompts.boxes.add_rectangles(box_corners(region(labels, 175).bbox))
    wait_candidates(qtbot, widget)
    assert widget.commit() == 1
    first_output = widget.ui.output.layer()

    g = gate(widget.engine.predictor)
    stack = viewer.add_image(nuclei3d[0].copy(), name="stack")
    widget.ui.image.set_layer(stack)
    qtbot.waitUntil(lambda: g.calls == 1, timeout=TIMEOUT_MS)
    widget.ui.image.set_layer(viewer.layers["image"])  # back, while "stack" is embedding
    g.open()
    qtbot.waitUntil(lambda: widget.view is not None and widget.view.layer.name == "image", timeout=TIMEOUT_MS)
    assert widget.view.shape == image.shape and widget.candidate_view.layer.data.shape == image.shape
    assert widget.ui.output.layer() is first_output  # back to this image: its labels again
    widget.prompts.boxes.add_rectangles(box_corners(region(labels, 71).bbox))
    wait_candidates(qtbot, widget)
    assert iou(widget.candidate_view.mask, labels == 71) > 0.7
    assert widget.commit() == 2
    assert (first_output.data == 1).sum() > 100 and (first_output.data == 2).sum() > 100

    widget.ui.image.set_layer(stack)  # a 3D image: new prompt layers, a new output layer
    qtbot.waitUntil(lambda: widget.view is not None and widget.view.layer is stack, timeout=TIMEOUT_MS)
    assert widget.prompts.boxes.ndim == 3 and widget.candidate_view.layer.data.shape == (1, *stack.data.shape[1:])
    assert widget.ui.output.layer() is None  # the 2D labels do not fit a 3D image
    assert (first_output.data > 0).sum() > 200  # the labels made so far are untouched
    idle(qtbot, widget)


def test_switching_model_mid_embedding(sam, qtbot, gate, extra_models, nuclei2d):
    image, labels = nuclei2d
    viewer, widget = sam(image, cache=EmbeddingCache())
    old = widget.engine
    g = gate(old.predictor, held=1)  # the plane's embedding; the prompt's own window passes
    widget.ui.image.set_layer(viewer.add_image(image.copy(), name="fresh"))
    qtbot.waitUntil(lambda: g.calls == 1, timeout=TIMEOUT_MS)  # "fresh" is being embedded
    widget.prompts.boxes.add_rectangles(box_corners(region(labels, 175).bbox))
    widget.ui.model.setCurrentIndex(widget.ui.model.findData("lite_medsam_copy"))
    qtbot.waitUntil(lambda: widget.engine is not None and widget.engine is not old, timeout=TIMEOUT_MS)
    assert widget.engine.model_name == "lite_medsam_copy"
    assert old.cancelled
    g.open()
    wait_candidates(qtbot, widget)
    assert widget.candidate_view.where is not None
    assert iou(widget.candidate_view.mask, labels == 175) > 0.75
    idle(qtbot, widget)
    key = widget.engine.key(widget.view.source, widget.index)
    assert key[0] == "lite_medsam_copy" and key in widget.cache
    widget.ui.device.setCurrentIndex(widget.ui.device.findText("cpu"))  # a device change reloads too
    qtbot.waitUntil(lambda: widget.engine is not None and str(widget.engine.predictor.device) == "cpu",
                    timeout=TIMEOUT_MS)
    wait_candidates(qtbot, widget)
    assert widget.commit() == 1
