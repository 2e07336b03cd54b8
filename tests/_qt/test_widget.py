"""The dock widget on a real 2D nucleus image: dock, box, three candidates, keys,
commit, undo, existing labels, deleted layers."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from skimage.measure import regionprops

from napari_sam._qt import SamDock, SamWidget

from .conftest import TIMEOUT_MS, box_corners, idle, iou, press, wait_candidates

TARGET = 175  # a nucleus of tests/data/nuclei2d.tif that LiteMedSAM segments well from its box


def target(labels: np.ndarray, label: int = TARGET):
    return next(r for r in regionprops(labels) if r.label == label)


def test_widget_docks_from_the_manifest_and_loads_samples(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sam-kit", "nuclei_2d")
    dock, shell = viewer.window.add_plugin_dock_widget("napari-sam-kit", "Segment Anything")
    assert isinstance(shell, SamDock)  # shows at once; the SAM widget follows from a worker
    qtbot.waitUntil(lambda: shell.widget is not None, timeout=TIMEOUT_MS)
    widget = shell.widget
    assert isinstance(widget, SamWidget) and widget.parent() is shell
    qtbot.waitUntil(lambda: widget.engine is not None and widget.view is not None, timeout=TIMEOUT_MS)
    assert widget.ui.image.layer() is viewer.layers["nuclei 2D (synthetic)"]
    assert widget.engine.model_name == "lite_medsam"
    assert widget.ui.box_mode.isChecked()  # LiteMedSAM answers boxes: box mode by default
    assert viewer.layers.selection.active is widget.prompts.boxes
    assert viewer.layers.selection.active.mode == "add_rectangle"
    names = [layer.name for layer in viewer.layers]
    assert {"SAM points", "SAM boxes", "SAM candidates"} <= set(names)
    viewer.open_sample("napari-sam-kit", "nuclei_3d")
    assert viewer.layers["nuclei 3D (synthetic)"].data.shape == (16, 128, 128)
    qtbot.waitUntil(lambda: widget.ui.through.currentText() == "z (16 slices)", timeout=TIMEOUT_MS)
    assert widget.ui.follow.currentData() == "intensity"
    viewer.open_sample("napari-sam-kit", "nuclei_movie")  # named axes: the movie's frames follow motion
    qtbot.waitUntil(lambda: widget.ui.through.currentText() == "t (12 frames)", timeout=TIMEOUT_MS)
    assert widget.ui.follow.currentData() == "motion"
    idle(qtbot, widget)


def test_box_gives_three_scored_candidates_keys_choose_commit_and_undo(sam, qtbot, nuclei2d):
    image, labels = nuclei2d
    viewer, widget = sam(image)
    region = target(labels)
    widget.prompts.boxes.add_rectangles(box_corners(region.bbox))
    wait_candidates(qtbot, widget)

    candidates = widget.candidate_view.candidates
    assert candidates.masks.shape == (3, *image.shape) and len(candidates.scores) == 3
    # every candidate stays inside the box, and the chosen (best-scored) one fits the nucleus
    r0, c0, r1, c1 = region.bbox
    outside = np.ones(image.shape, bool)
    outside[r0 - 3:r1 + 3, c0 - 3:c1 + 3] = False
    assert not (candidates.masks & outside).any()
    assert widget.candidate_view.selected == candidates.best
    assert iou(widget.candidate_view.mask, labels == TARGET) > 0.75
    texts = [b.text() for b in widget.ui.candidate_buttons.buttons]
    assert texts == [f"{i + 1}: {s:.2f}" for i, s in enumerate(candidates.scores)]
    assert widget.ui.candidate_buttons.buttons[candidates.best].isChecked()
    shown = widget.candidate_view.layer.data
    assert set(np.unique(shown)) == {0, candidates.best + 1}

    # keys 1/2/3 and N, through napari's key map on the active prompt layer
    for key, expected in (("1", 0), ("3", 2), ("2", 1), ("N", 2)):
        press(viewer, key)
        assert widget.candidate_view.selected == expected
        assert widget.ui.candidate_buttons.buttons[expected].isChecked()
        assert np.array_equal(shown == expected + 1, candidates.masks[expected])
    widget.ui.candidate_buttons.buttons[0].click()  # clicking a radio button chooses too
    assert widget.candidate_view.selected == 0

    press(viewer, "C")  # commit
    out = widget.ui.output.layer()
    assert isinstance(out, Labels) and out.name == "image SAM labels"
    assert np.array_equal(out.data == 1, candidates.masks[0]) and out.data.max() == 1
    assert len(widget.prompts.boxes.data) == 0 and widget.candidate_view.candidates is None
    assert not widget.candidate_view.layer.data.any()
    assert "committed object 1" in widget.ui.status.text()

    viewer.layers.selection.active = out
    press(viewer, "Control-Z")  # napari's own undo on the labels layer
    assert not out.data.any()
    press(viewer, "Control-Shift-Z")
    assert np.array_equal(out.data == 1, candidates.masks[0])
    widget.ui.undo.click()
    assert not out.data.any()


def test_commit_keeps_existing_labels_unless_overwrite(sam, qtbot, nuclei2d):
    image, labels = nuclei2d
    viewer, widget = sam(image)
    existing = np.where(labels == TARGET, 0, labels).astype(np.int32)
    # the user's work: every nucleus but the target, plus a blob painted over its left third
    r0, c0, r1, c1 = target(labels).bbox
    existing[r0:r1, c0:c0 + (c1 - c0) // 3] = 999
    before = existing.copy()
    user = viewer.add_labels(existing, name="my labels")
    widget.ui.output.set_layer(user)
    assert widget.ui.output.layer() is user

    widget.prompts.boxes.add_rectangles(box_corners((r0, c0, r1, c1)))
    wait_candidates(qtbot, widget)
    mask = widget.candidate_view.mask.copy()
    assert (mask & (before == 999)).any()  # the candidate overlaps the painted blob
    new_id = widget.commit()
    assert new_id == 1000, widget.ui.status.text()  # next free id
    assert np.array_equal(user.data[before != 0], before[before != 0])  # nothing overwritten
    assert np.array_equal(user.data == new_id, mask & (before == 0))

    user.undo()
    assert np.array_equal(user.data, before)
    widget.ui.overwrite.setChecked(True)
    widget.prompts.boxes.add_rectangles(box_corners((r0, c0, r1, c1)))
    wait_candidates(qtbot, widget)
    assert widget.commit() == 1000
    assert np.array_equal(user.data == 1000, mask)  # overwrite replaces the blob under the mask
    assert np.array_equal(user.data[~mask], before[~mask])


def test_deleting_prompt_candidate_and_output_layers(sam, qtbot, nuclei2d):
    image, labels = nuclei2d
    viewer, widget = sam(image)
    region = target(labels)
    widget.prompts.boxes.add_rectangles(box_corners(region.bbox))
    wait_candidates(qtbot, widget)
    widget.commit()
    out = widget.ui.output.layer()

    viewer.layers.remove(widget.prompts.points)
    viewer.layers.remove(widget.prompts.boxes)
    viewer.layers.remove(widget.candidate_view.layer)
    viewer.layers.remove(out)
    assert widget.prompts.points is None and widget.prompts.boxes is None
    assert "deleted" in widget.ui.hint.text()
    assert widget.commit() is None  # nothing to commit, no crash
    assert widget.ui.output.layer() is None

    widget.ui.clear.click()  # brings the prompt and candidate layers back
    names = {layer.name for layer in viewer.layers}
    assert {"SAM points", "SAM boxes", "SAM candidates"} <= names
    widget.prompts.boxes.add_rectangles(box_corners(region.bbox))
    wait_candidates(qtbot, widget)
    assert widget.commit() == 1
    assert widget.ui.output.layer() is not out and widget.ui.output.layer().data.max() == 1
    assert out.data.max() == 1  # the removed layer's labels were not touched

    kept = widget.ui.output.layer()
    kept.name = "renamed labels"
    assert widget.ui.output.currentText() == "renamed labels"
    viewer.layers.remove(viewer.layers["image"])  # the image itself goes
    qtbot.waitUntil(lambda: widget.view is None and widget.prompts.boxes is None, timeout=TIMEOUT_MS)
    assert widget.ui.image.layer() is None and widget.candidate_view.layer is None
    assert kept in viewer.layers and kept.data.max() == 1
    assert widget.commit() is None


def test_rgb_and_channel_axis_images(sam, qtbot, nuclei2d):
    image, labels = nuclei2d
    rgb = np.repeat((image / image.max() * 255).astype(np.uint8)[..., None], 3, axis=-1)
    viewer, widget = sam(rgb, name="rgb", rgb=True)
    assert widget.view.shape == image.shape and widget.view.source.plane(()).shape == (*image.shape, 3)
    widget.prompts.boxes.add_rectangles(box_corners(target(labels).bbox))
    wait_candidates(qtbot, widget)
    assert iou(widget.candidate_view.mask, labels == TARGET) > 0.7
    assert widget.commit() == 1 and widget.ui.output.layer().data.shape == image.shape

    two = np.stack([image, np.zeros_like(image)])  # (channel, y, x): not a stack of 2 planes
    layer = viewer.add_image(two, name="two channels")
    widget.ui.image.set_layer(layer)
    qtbot.waitUntil(lambda: widget.view is not None and widget.view.layer is layer, timeout=TIMEOUT_MS)
    assert widget.view.shape == (2, *image.shape) and widget.view.stack_axes == (0,)
    widget.ui.channels.setChecked(True)
    qtbot.waitUntil(lambda: widget.view is not None and widget.view.shape == image.shape, timeout=TIMEOUT_MS)
    assert widget.view.source.plane(()).shape == (*image.shape, 3)
    assert widget.prompts.boxes.ndim == 2 and widget.candidate_view.layer.data.shape == image.shape
    widget.prompts.boxes.add_rectangles(box_corners(target(labels).bbox))
    wait_candidates(qtbot, widget)
    assert iou(widget.candidate_view.mask, labels == TARGET) > 0.7
    idle(qtbot, widget)
