"""SAM 2.1 in the dock: a checkpoint file chosen in the model combo, its memory offered (and
chosen) to follow an object through a stack, a registry entry without its weights failing
cleanly, and the memory gone again with a SAM 1 model. The SAM 2.1 network has random weights
(Hiera-T, saved in the official wrapping); only the wiring is under test here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog

from napari_sam._qt.controls import CHECKPOINT_FILE
from napari_sam.interactive import jobs
from napari_sam.model.loading import build
from napari_sam.segmentation.memory_propagation import track_objects
from napari_sam.model.weights import CACHE_ENV, MIRROR_ENV

from .conftest import TIMEOUT_MS, drag, idle, press, wait_candidates
from .test_stacks import go_to

SLICES, SIDE, STEP = 3, 96, 2  # a small stack: Hiera-T encodes every slice at 1024² on the CPU
NUCLEUS, CENTRE = 19, (141, 166)  # a nucleus of the test image, and its centre (row, col)


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory):
    """A random-weight SAM 2.1 Hiera-T checkpoint file whose object score says "present"
    (as trained weights do on a visible object; near 0 tracking would stop at once)."""
    torch.manual_seed(0)
    net = build("sam2.1_hiera_t")
    with torch.no_grad():
        net.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(4.0)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_random_t.pt"
    torch.save({"model": net.state_dict()}, path)
    return path


def _stack(nuclei2d):
    """(Z, 96, 96) crops of the nucleus image moving STEP px per slice, and its labels."""
    image, labels = nuclei2d
    r0, c0 = CENTRE[0] - SIDE // 2 - STEP * (SLICES // 2), CENTRE[1] - SIDE // 2
    crops = [(slice(r0 + STEP * z, r0 + STEP * z + SIDE), slice(c0, c0 + SIDE)) for z in range(SLICES)]
    return np.stack([image[c] for c in crops]), np.stack([labels[c] for c in crops])


def _choose_file(widget, monkeypatch, path) -> None:
    """The user picks "checkpoint file ..." and then ``path`` in the dialog ("" cancels)."""
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(path), ""))
    widget.ui.model.setCurrentIndex(widget.ui.model.findData(CHECKPOINT_FILE))


def _wait_model(qtbot, widget, name: str) -> None:
    qtbot.waitUntil(lambda: widget.engine is not None and widget.engine.model_name == name, timeout=TIMEOUT_MS)


def test_a_sam2_checkpoint_file_follows_the_object_by_memory_both_ways(sam, qtbot, nuclei2d, sam2_checkpoint,
                                                                       monkeypatch):
    stack, truth = _stack(nuclei2d)
    viewer, widget = sam(stack)
    follow, combo = widget.ui.follow, widget.ui.model
    assert follow.findData("memory") < 0 and follow.currentData() == "intensity"  # LiteMedSAM: no memory

    _choose_file(widget, monkeypatch, sam2_checkpoint)
    assert combo.currentText() == f"file: {sam2_checkpoint.name}" and combo.currentData() == str(sam2_checkpoint)
    _wait_model(qtbot, widget, sam2_checkpoint.stem)
    assert widget.engine.predictor.is_sam2 and widget.ui.point_mode.isChecked()  # SAM 2.1 answers points
    assert follow.currentData() == "memory" and follow.itemText(0) == "memory"
    assert "SAM 2.1" in follow.itemData(0, Qt.ItemDataRole.ToolTipRole) and "memory" in follow.toolTip()

    z = SLICES // 2
    go_to(viewer, widget, qtbot, z)
    qtbot.mouseClick(widget.ui.box_mode, Qt.MouseButton.LeftButton)  # the user switches to boxes ...
    r, c = np.nonzero(truth[z] == NUCLEUS)
    drag(widget.prompts.boxes, (z, r.min() - 2, c.min() - 2), (z, r.max() + 2, c.max() + 2))  # ... and drags one
    wait_candidates(qtbot, widget)

    tracked = []  # the start slice of each memory-tracking run
    monkeypatch.setattr(jobs, "track_objects", lambda *a, **k: tracked.append(a[3]) or track_objects(*a, **k))
    press(viewer, "P")
    qtbot.waitUntil(lambda: not widget.propagator.busy and widget.ui.output.layer() is not None, timeout=TIMEOUT_MS)
    out = widget.ui.output.layer()
    status = widget.ui.status.text()
    assert set(np.unique(out.data)) == {0, 1}, status
    on = np.flatnonzero(out.data.any((1, 2)))
    assert z in on and on.min() < z < on.max(), (on, status)
    assert "committed object 1 through slices" in status and tracked == [z]

    viewer.layers.selection.active = widget.prompts.boxes
    press(viewer, "Control-Z")  # one undo takes the object out of every slice
    assert not out.data.any()

    combo.setCurrentIndex(combo.findData("lite_medsam"))  # back to a SAM 1 model: no memory
    _wait_model(qtbot, widget, "lite_medsam")
    assert follow.findData("memory") < 0 and follow.currentData() == "intensity"
    assert "memory" not in follow.toolTip()
    idle(qtbot, widget)


def test_model_choices_that_cannot_load_leave_the_model_in_use(sam, qtbot, nuclei2d, tmp_path, monkeypatch):
    # No weights cached and none to download: the "server" has no such file.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(MIRROR_ENV, (tmp_path / "no_mirror").as_uri())
    stack, _ = _stack(nuclei2d)
    viewer, widget = sam(stack)
    combo, engine = widget.ui.model, widget.engine
    entries = combo.count()

    _choose_file(widget, monkeypatch, "")  # the dialog cancelled: nothing reloads
    assert combo.currentData() == "lite_medsam" and widget.engine is engine and combo.count() == entries

    notes = tmp_path / "notes.pt"
    notes.write_text("not a checkpoint")
    _choose_file(widget, monkeypatch, notes)
    qtbot.waitUntil(lambda: "could not load" in widget.ui.hint.text(), timeout=TIMEOUT_MS)
    assert widget.ui.hint.text().endswith("still using lite_medsam")
    assert combo.currentData() == "lite_medsam" and widget.engine is engine
    assert combo.count() == entries  # the file that is no model is not offered

    widget.ui.hint.setText("")
    combo.setCurrentIndex(combo.findData("sam2.1_hiera_t"))
    assert "downloading" in widget.ui.status.text()
    qtbot.waitUntil(lambda: "could not load sam2.1_hiera_t" in widget.ui.hint.text(), timeout=TIMEOUT_MS)
    assert widget.ui.hint.text().endswith("still using lite_medsam")
    assert combo.currentData() == "lite_medsam" and widget.engine is engine
    assert widget.ui.follow.findData("memory") < 0
    idle(qtbot, widget)
    assert widget.engine.key(widget.view.source, widget.index) in widget.cache
