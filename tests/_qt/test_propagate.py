"""The widget's stack actions: "commit through stack" (the chosen candidate carried through z
on a worker, committed as one 3D object that one undo removes, cancellable, corrected by
boxes on other slices) and "segment everything" on the plane or through the stack."""

from __future__ import annotations

import threading

import numpy as np
from skimage.measure import regionprops

from qtpy.QtCore import Qt

from napari_sam.variants import moving

from .conftest import TIMEOUT_MS, drag, idle, iou, press, wait_candidates
from .test_stacks import box3d, go_to


def _stack():
    """Two nuclei stacked in z (touching) and one on its own, in noise."""
    shape = (24, 64, 64)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]

    def ellipsoid(c, r):
        return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1

    a = ellipsoid((6, 30, 30), (4.5, 12, 12))
    b = ellipsoid((15, 32, 31), (4.5, 13, 12)) & ~a
    volume = 100 + 120 * a + 90 * b + np.random.default_rng(3).normal(0, 12, shape)
    return volume.astype(np.float32), a, b


def test_commit_through_the_stack_is_one_3d_object_and_one_undo(sam, qtbot):
    volume, a, b = _stack()
    viewer, widget = sam(volume)
    go_to(viewer, widget, qtbot, 6)
    widget.prompts.boxes.add_rectangles(box3d(6, regionprops(a[6].astype(int))[0].bbox))
    wait_candidates(qtbot, widget)

    widget.ui.propagate.click()
    qtbot.waitUntil(lambda: not widget.propagator.busy and widget.ui.output.layer() is not None, timeout=TIMEOUT_MS)
    out = widget.ui.output.layer()
    assert set(np.unique(out.data)) == {0, 1}
    assert iou(out.data == 1, a) > 0.7, iou(out.data == 1, a)
    assert ((out.data == 1) & b).sum() < 0.05 * b.sum()  # stopped at the nucleus stacked above
    assert np.flatnonzero(out.data.any((1, 2))).size >= 5
    assert "committed object 1 through slices" in widget.ui.status.text()
    assert widget.ui.propagate.text().startswith("Commit through stack")
    assert widget.prompts.for_plane(widget.view, (6,)).empty  # prompts cleared, as after a commit

    viewer.layers.selection.active = out
    out.undo()  # one step takes the whole object out
    assert not out.data.any()
    idle(qtbot, widget)


def _movie(nuclei2d, frames: int, speed: float):
    """Real nuclei moving ``speed`` px per frame, and the ids of those seen well on every frame."""
    image, labels = nuclei2d
    movie, truth = moving(image[:160, :160], labels[:160, :160], frames=frames, speed_px=speed, seed=1)
    ids = [k for k in np.unique(truth[0]) if k and all((truth[t] == k).sum() > 150 for t in range(frames))]
    return movie, truth, ids


def _drag_box(widget, qtbot, mask) -> None:
    """Drag a box around ``mask`` on frame 0 and wait for its candidates."""
    r, c = np.nonzero(mask)
    drag(widget.prompts.boxes, (0, r.min() - 1, c.min() - 1), (0, r.max() + 1, c.max() + 1))
    wait_candidates(qtbot, widget)


def test_commit_through_the_frames_of_a_movie_follows_the_moving_nucleus(sam, qtbot, nuclei2d):
    frames = 6
    movie, truth, (k, *_) = _movie(nuclei2d, frames, 3.0)
    viewer, widget = sam(movie, axis_labels=("t", "y", "x"))
    # a time axis, named so by the layer: frames, followed by their motion
    assert widget.ui.through.currentText() == f"t ({frames} frames)"
    assert widget.ui.follow.currentData() == "motion"
    go_to(viewer, widget, qtbot, 0)
    _drag_box(widget, qtbot, truth[0] == k)

    press(viewer, "P")
    qtbot.waitUntil(lambda: not widget.propagator.busy and widget.ui.output.layer() is not None, timeout=TIMEOUT_MS)
    out = widget.ui.output.layer()
    per_frame = [iou(out.data[t] == 1, truth[t] == k) for t in range(frames)]
    assert np.mean(per_frame) >= 0.7, per_frame  # the intensity carry loses it within 2-3 frames
    assert f"committed object 1 through frames 0-{frames - 1}" in widget.ui.status.text()
    rows = widget.ui.frames.rows
    assert not widget.ui.frames.isHidden() and rows.count() == frames
    assert rows.item(0).text().startswith("frame 0: 1.00")

    item = rows.item(4)  # the user clicks a frame's row: the viewer goes there
    qtbot.mouseClick(rows.viewport(), Qt.MouseButton.LeftButton, pos=rows.visualItemRect(item).center())
    qtbot.waitUntil(lambda: widget.index == (4,), timeout=TIMEOUT_MS)
    assert viewer.dims.current_step[0] == 4

    viewer.layers.selection.active = widget.prompts.boxes
    press(viewer, "Control-Z")  # one undo takes the object out of every frame
    assert not out.data.any()
    idle(qtbot, widget)


def test_all_objects_of_a_plane_are_carried_through_the_frames_keeping_their_ids(sam, qtbot, nuclei2d):
    frames = 5
    movie, truth, ids = _movie(nuclei2d, frames, 2.0)
    ids = ids[:2]
    viewer, widget = sam(movie, axis_labels=("time", "y", "x"))
    go_to(viewer, widget, qtbot, 0)
    for k in ids:  # the user commits two nuclei on the first frame
        _drag_box(widget, qtbot, truth[0] == k)
        press(viewer, "C")
    out = widget.ui.output.layer()
    first = out.data.copy()
    assert set(np.unique(first)) == {0, 1, 2} and not first[1:].any()

    widget.ui.propagate_all.click()
    qtbot.waitUntil(lambda: not widget.propagator.busy, timeout=TIMEOUT_MS)
    assert "carried 2 objects through the frames" in widget.ui.status.text(), widget.ui.status.text()
    np.testing.assert_array_equal(out.data[0], first[0])  # the committed objects are left as they were
    for new_id, k in zip((1, 2), ids):
        per_frame = [iou(out.data[t] == new_id, truth[t] == k) for t in range(frames)]
        assert np.mean(per_frame) >= 0.7, (new_id, per_frame)
    viewer.layers.selection.active = widget.prompts.boxes
    press(viewer, "Control-Z")  # one undo takes back what propagation added, not the commits
    np.testing.assert_array_equal(out.data, first)
    idle(qtbot, widget)


def test_any_stack_axis_can_be_chosen_and_unsure_slices_are_listed(sam, qtbot):
    volume, a, b = _stack()
    movie = np.stack([volume, volume])  # (t, z, y, x): two time points of the same stack
    viewer, widget = sam(movie, axis_labels=("t", "z", "y", "x"))
    combo = widget.ui.through
    assert [combo.itemText(i) for i in range(combo.count())] == ["t (2 frames)", "z (24 slices)"]
    assert combo.currentText().startswith("z") and widget.ui.follow.currentData() == "intensity"
    combo.setCurrentIndex(0)
    assert widget.ui.follow.currentData() == "motion"  # time: follow motion
    combo.setCurrentIndex(1)
    viewer.dims.set_current_step(1, 6)
    qtbot.waitUntil(lambda: widget.index == (0, 6), timeout=TIMEOUT_MS)
    widget.prompts.boxes.add_rectangles(np.c_[np.zeros(4), box3d(6, regionprops(a[6].astype(int))[0].bbox)])
    wait_candidates(qtbot, widget)
    press(viewer, "P")
    qtbot.waitUntil(lambda: not widget.propagator.busy and widget.ui.output.layer() is not None, timeout=TIMEOUT_MS)
    out = widget.ui.output.layer().data
    assert not out[1].any() and iou(out[0] == 1, a) > 0.7  # through z at t = 0 only
    assert "through slices" in widget.ui.status.text()
    listed = [widget.ui.frames.rows.item(i).text() for i in range(widget.ui.frames.rows.count())]
    # one row per committed slice, each with its confidence
    assert [int(t.split()[1].rstrip(":")) for t in listed] == list(np.flatnonzero((out[0] == 1).any((1, 2))))
    assert all(0 <= float(t.split()[2]) <= 1 for t in listed)
    idle(qtbot, widget)


def test_propagation_can_be_cancelled_and_commits_nothing(sam, qtbot, monkeypatch):
    from napari_sam.interactive import jobs

    volume, a, _ = _stack()
    release = threading.Event()
    real = jobs.propagate_piece

    def held(*args, cancel, **kwargs):
        assert release.wait(TIMEOUT_MS / 1000)
        return real(*args, cancel=cancel, **kwargs)

    monkeypatch.setattr(jobs, "propagate_piece", held)
    viewer, widget = sam(volume)
    go_to(viewer, widget, qtbot, 6)
    widget.prompts.boxes.add_rectangles(box3d(6, regionprops(a[6].astype(int))[0].bbox))
    wait_candidates(qtbot, widget)
    widget.propagate()
    assert widget.propagator.busy and widget.ui.propagate.text().startswith("Cancel")
    widget.propagate()  # the same action again cancels
    release.set()
    qtbot.waitUntil(lambda: not widget.propagator.busy, timeout=TIMEOUT_MS)
    assert "cancelled" in widget.ui.status.text()
    assert widget.ui.output.layer() is None  # nothing was committed
    assert widget.ui.propagate.text().startswith("Commit through stack")
    idle(qtbot, widget)


def test_a_result_that_arrives_after_switching_images_goes_to_its_own_image(sam, qtbot, monkeypatch):
    from napari_sam.interactive import jobs

    volume, a, _ = _stack()
    release = threading.Event()
    real = jobs.propagate_piece

    def held(*args, **kwargs):
        assert release.wait(TIMEOUT_MS / 1000)
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "propagate_piece", held)
    viewer, widget = sam(volume)
    first = widget.view.layer
    go_to(viewer, widget, qtbot, 6)
    widget.prompts.boxes.add_rectangles(box3d(6, regionprops(a[6].astype(int))[0].bbox))
    wait_candidates(qtbot, widget)
    widget.propagate()
    # meanwhile the user opens a second stack of the same shape, with its own labels chosen
    second = viewer.add_image(volume[::-1].copy(), name="second")
    qtbot.waitUntil(lambda: widget.view is not None and widget.view.layer is second, timeout=TIMEOUT_MS)
    theirs = viewer.add_labels(np.zeros(volume.shape, np.uint16), name="second labels")
    widget.ui.output.set_layer(theirs)
    release.set()
    qtbot.waitUntil(lambda: not widget.propagator.busy, timeout=TIMEOUT_MS)
    assert not theirs.data.any()  # nothing written into the labels of the image on screen
    ours = [layer for layer in viewer.layers if layer.metadata.get("napari_sam_image") == str(first.unique_id)]
    assert len(ours) == 1 and iou(ours[0].data == 1, a) > 0.7
    assert widget.ui.output.layer() is theirs  # the choice on screen is left alone
    idle(qtbot, widget)


def test_single_plane_images_have_nothing_to_propagate_through(sam, qtbot, nuclei2d):
    image, labels = nuclei2d
    viewer, widget = sam(image)
    r = regionprops(labels)[0]
    widget.prompts.boxes.add_rectangles(np.array([[r.bbox[0] - 1, r.bbox[1] - 1], [r.bbox[2], r.bbox[3]]], float))
    wait_candidates(qtbot, widget)
    widget.propagate()
    assert "single plane" in widget.ui.status.text() and not widget.propagator.busy


def test_prompts_on_other_slices_correct_the_propagation(sam, qtbot):
    volume, a, _ = _stack()
    viewer, widget = sam(volume)
    go_to(viewer, widget, qtbot, 3)
    r0, c0, r1, c1 = regionprops(a[3].astype(int))[0].bbox
    # the user: only this quarter of the nucleus on slice 3
    widget.prompts.boxes.add_rectangles(box3d(3, (r0, c0, (r0 + r1) // 2 + 1, (c0 + c1) // 2 + 1), pad=0))
    wait_candidates(qtbot, widget)
    expected = widget.candidate_view.mask.copy()
    assert expected.sum() < 0.6 * a[3].sum()
    go_to(viewer, widget, qtbot, 6)
    widget.prompts.boxes.add_rectangles(box3d(6, regionprops(a[6].astype(int))[0].bbox))
    wait_candidates(qtbot, widget)

    widget.propagate()
    qtbot.waitUntil(lambda: not widget.propagator.busy and widget.ui.output.layer() is not None, timeout=TIMEOUT_MS)
    out = widget.ui.output.layer().data == 1
    np.testing.assert_array_equal(out[3], expected)  # the correction is taken as given
    assert iou(out[6:], a[6:]) > 0.7  # the rest follows the object as before
    assert widget.prompts.for_plane(widget.view, (3,)).empty and widget.prompts.for_plane(widget.view, (6,)).empty
    idle(qtbot, widget)


def test_segment_everything_on_the_plane_and_through_the_stack(sam, qtbot, nuclei3d):
    from napari_sam.metrics import f1

    volume, truth = nuclei3d
    viewer, widget = sam(volume)
    go_to(viewer, widget, qtbot, 15)
    widget.ui.everything_stack.click()
    assert widget.everything.busy and widget.ui.everything_plane.text() == "Cancel"
    qtbot.waitUntil(lambda: not widget.everything.busy, timeout=TIMEOUT_MS)
    layer = viewer.layers["image SAM automatic"]
    assert layer.data.shape == volume.shape
    # under the prompt layers, which keep the focus: the next box goes on drawing
    assert viewer.layers[-1] is widget.prompts.boxes and viewer.layers.selection.active is widget.prompts.boxes
    assert f1(truth, layer.data) >= 0.6
    assert "objects in" in widget.ui.status.text() and widget.ui.everything_stack.text() == "Whole stack"

    widget.segment_everything(whole_stack=False)
    widget.segment_everything(whole_stack=False)  # pressed again: cancels
    qtbot.waitUntil(lambda: not widget.everything.busy, timeout=TIMEOUT_MS)
    assert "cancelled" in widget.ui.status.text() or "objects in" in widget.ui.status.text()
    widget.segment_everything(whole_stack=False)
    qtbot.waitUntil(lambda: not widget.everything.busy, timeout=TIMEOUT_MS)
    plane = [layer for layer in viewer.layers if layer.name.startswith("image SAM automatic")][-1].data
    assert plane[15].any() and not np.delete(plane, 15, 0).any()
    idle(qtbot, widget)


def test_the_frame_list_marks_unsure_frames_and_asks_to_go_there(qtbot):
    from napari_sam._qt.frames import UNSURE_COLOUR, FrameList

    frames = FrameList()
    qtbot.addWidget(frames)
    assert frames.isHidden()
    frames.show_confidence({0: 1.0, 1: 0.82, 2: 0.31, 3: 0.2}, [2, 3], "frame")
    assert not frames.isHidden() and frames.unsure_rows() == [2, 3] and "2 unsure" in frames.title.text()
    assert frames.rows.item(2).foreground().color().name() == UNSURE_COLOUR
    assert frames.rows.item(1).text() == "frame 1: 0.82"
    rows = frames.rows
    with qtbot.waitSignal(frames.jump) as jumped:
        qtbot.mouseClick(rows.viewport(), Qt.MouseButton.LeftButton, pos=rows.visualItemRect(rows.item(3)).center())
    assert jumped.args == [3]
    frames.clear()
    assert frames.isHidden() and rows.count() == 0


def test_a_volume_seen_across_z_is_carried_along_z_by_its_scale(sam, qtbot, nuclei3d):
    # The real volume (z sampled twice as coarsely) viewed as z x x planes, propagated through
    # y: with the layer's scale the nucleus is followed along z, where it is sharp.
    volume, labels = nuclei3d
    viewer, widget = sam(volume, axis_labels=("z", "y", "x"), scale=(2.0, 1.0, 1.0))
    viewer.dims.order = (1, 0, 2)  # y on the slider; z down, x across
    truth = labels == 79
    y = int(np.flatnonzero(truth.any((0, 2))).mean())
    viewer.dims.set_current_step(1, y)
    qtbot.waitUntil(lambda: widget.index == (y,), timeout=TIMEOUT_MS)
    assert widget.ui.through.currentText() == "y (61 slices)"
    z, x = np.nonzero(truth[:, y])
    viewer.layers.selection.active = widget.prompts.boxes
    drag(widget.prompts.boxes, (2 * (z.min() - 1), y, x.min() - 1), (2 * (z.max() + 1), y, x.max() + 1))
    wait_candidates(qtbot, widget)
    press(viewer, "P")
    qtbot.waitUntil(lambda: not widget.propagator.busy and widget.ui.output.layer() is not None, timeout=TIMEOUT_MS)
    out = widget.ui.output.layer().data == 1
    assert "through slices" in widget.ui.status.text(), widget.ui.status.text()
    assert iou(out, truth) > 0.7, iou(out, truth)  # carried along y plane by plane: about 0.3
    idle(qtbot, widget)
