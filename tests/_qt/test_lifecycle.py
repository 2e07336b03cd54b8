"""The widget's life cycle as a user meets it: napari's close button, reopening, clearing
the layers, a second image, and commits that would add a wrong object."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
from skimage.measure import regionprops

from napari_sam._qt import SamDock
from napari_sam.metrics import iou

from .conftest import TIMEOUT_MS, box_corners, click, idle, press, wait_candidates

DATA = Path(__file__).parents[1] / "data"


def region(labels, label):
    return next(r for r in regionprops(labels) if r.label == label)


def open_from_menu(viewer, qtbot):
    """The dock as napari's plugin menu opens it; returns (dock, SamDock, SamWidget) once the
    model is loaded and the image chosen."""
    dock, shell = viewer.window.add_plugin_dock_widget("napari-sam-kit", "Segment Anything")
    assert isinstance(shell, SamDock)
    qtbot.waitUntil(lambda: shell.widget is not None, timeout=TIMEOUT_MS)
    widget = shell.widget
    qtbot.waitUntil(lambda: widget.engine is not None and widget.view is not None
                    and widget.index is not None, timeout=TIMEOUT_MS)
    return dock, shell, widget


def draw_and_commit(viewer, widget, qtbot, labels, label):
    widget.prompts.boxes.add_rectangles(box_corners(region(labels, label).bbox))
    wait_candidates(qtbot, widget)
    viewer.layers.selection.active = widget.prompts.boxes
    press(viewer, "C")


def names(viewer):
    return [layer.name for layer in viewer.layers]


def test_close_then_reopen_reuses_the_layers_and_the_labels(make_napari_viewer, qtbot, nuclei2d):
    image, labels = (a[192:, 256:] for a in nuclei2d)  # the corner holding both nuclei: a quarter of the tiles
    viewer = make_napari_viewer()
    viewer.add_image(image, name="image")
    dock, shell, widget = open_from_menu(viewer, qtbot)
    draw_and_commit(viewer, widget, qtbot, labels, 175)
    out = viewer.layers["image SAM labels"]
    assert out.data.max() == 1 and out.data.dtype == np.uint16
    idle(qtbot, widget)

    ref = weakref.ref(widget)
    dock.title.close_button.click()  # napari's own close (✕) on the dock
    assert shell.widget is None and shell.viewer is None  # napari may keep the empty shell
    del dock, shell, widget
    qtbot.waitUntil(lambda: gc.collect() is not None and ref() is None, timeout=5000)

    # The prompt layers stay, with no key of the widget left on them.
    assert names(viewer) == ["image", "image SAM labels", "SAM points", "SAM boxes"]
    boxes = viewer.layers["SAM boxes"]
    boxes.add_rectangles(box_corners(region(labels, 71).bbox))
    viewer.layers.selection.active = boxes
    press(viewer, "C")
    qtbot.wait(200)
    assert out.data.max() == 1 and "SAM candidates" not in names(viewer)

    viewer.add_image(image[::-1].copy(), name="second")  # nothing is re-created for it
    qtbot.wait(300)
    assert names(viewer) == ["image", "image SAM labels", "SAM points", "SAM boxes", "second"]
    viewer.layers.remove("second")

    dock, shell, widget = open_from_menu(viewer, qtbot)
    assert widget.view.layer is viewer.layers["image"]
    assert widget.prompts.boxes is boxes  # adopted, not a second set
    assert sorted(names(viewer)) == sorted(["image", "image SAM labels", "SAM candidates", "SAM points",
                                            "SAM boxes"])
    assert widget.ui.output.layer() is out
    boxes.data = []
    draw_and_commit(viewer, widget, qtbot, labels, 71)
    assert out.data.max() == 2 and iou(out.data == 2, labels == 71) > 0.7
    assert sum(n.endswith("SAM labels") for n in names(viewer)) == 1
    idle(qtbot, widget)


def test_a_second_image_gets_the_prompts_on_top_and_its_own_labels(sam, qtbot, nuclei2d):
    image, labels = nuclei2d
    viewer, widget = sam(image)
    draw_and_commit(viewer, widget, qtbot, labels, 175)
    first = viewer.layers["image SAM labels"]
    assert first.data.max() == 1

    second = viewer.add_image(image.copy(), name="second")  # same shape: the old labels would fit
    qtbot.waitUntil(lambda: widget.view is not None and widget.view.layer is second, timeout=TIMEOUT_MS)
    top = [layer.name for layer in viewer.layers][-3:]
    assert top == ["SAM candidates", "SAM points", "SAM boxes"]  # above the new image, visible
    assert widget.ui.output.layer() is None  # not the first image's labels
    draw_and_commit(viewer, widget, qtbot, labels, 71)
    assert viewer.layers["second SAM labels"].data.max() == 1
    assert first.data.max() == 1 and (first.data == 1).sum() == (first.data > 0).sum()
    idle(qtbot, widget)


def test_commits_that_would_add_a_wrong_object_are_refused(sam, qtbot, nuclei2d):
    image, labels = nuclei2d
    viewer, widget = sam(image)
    draw_and_commit(viewer, widget, qtbot, labels, 175)
    out = widget.ui.output.layer()
    before = out.data.copy()

    # The same box again: only a ring would be free.
    draw_and_commit(viewer, widget, qtbot, labels, 175)
    assert "of the mask is free" in widget.ui.status.text()
    assert np.array_equal(out.data, before)

    # A click on background, with the box-only model: no box, no candidate, a hint.
    widget.prompts.boxes.data = []
    widget.ui.point_mode.click()
    from scipy import ndimage as ndi

    deep = np.unravel_index(np.argmax(ndi.distance_transform_edt(labels == 0)), labels.shape)
    click(widget.prompts.points, deep)
    qtbot.waitUntil(lambda: "No object under your click" in widget.ui.hint.text(), timeout=TIMEOUT_MS)
    assert len(widget.prompts.boxes.data) == 0 and widget.candidate_view.candidates is None
    press(viewer, "C")
    assert np.array_equal(out.data, before) and "nothing to commit" in widget.ui.status.text()

    # Ctrl+Z on the prompt layer undoes the commit, and the status says so.
    viewer.layers.selection.active = widget.prompts.points
    press(viewer, "Control-Z")
    assert out.data.max() == 0 and "undone" in widget.ui.status.text()
    idle(qtbot, widget)


def test_deleted_prompt_layers_come_back_with_the_mode_button(sam, qtbot, nuclei2d):
    image, _ = nuclei2d
    viewer, widget = sam(image)
    assert widget.ui.box_mode.isChecked()
    viewer.layers.remove("SAM boxes")
    viewer.layers.remove("SAM points")
    assert "prompt layers deleted" in widget.ui.hint.text()
    widget.ui.box_mode.click()  # already checked: the click alone brings them back
    assert widget.prompts.boxes in viewer.layers and widget.prompts.points in viewer.layers
    assert viewer.layers.selection.active is widget.prompts.boxes
    idle(qtbot, widget)


def test_grid_with_a_box_only_model_says_so_at_once(sam, qtbot, nuclei2d):
    image, _ = nuclei2d
    viewer, widget = sam(image)
    from napari_sam.segmentation.auto_params import AutoParams

    form = widget.ui.auto_form  # made by magicgui from AutoParams' table of user fields
    form.method.native.setCurrentText("grid")
    # 0, the default, measures the size from the image, and says so
    assert form.min_diameter.native.text() == form.max_diameter.native.text() == "from the image"
    form.min_diameter.native.setValue(9)
    assert form.min_diameter.native.text() == "9.00"
    assert widget.ui.auto_params() == AutoParams(method="grid", min_diameter=9.0)
    widget.ui.everything_plane.click()
    qtbot.waitUntil(lambda: not widget.everything.busy, timeout=10_000)
    assert "boxes" in widget.ui.status.text() and "failed" in widget.ui.status.text()
    assert "image SAM automatic" not in [layer.name for layer in viewer.layers]


def test_decoding_runs_on_one_torch_thread(sam, qtbot, nuclei2d):
    import torch

    image, labels = nuclei2d
    viewer, widget = sam(image)
    seen = []
    decode = widget.engine.predictor.decode

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return decode(*args, **kwargs)

    widget.engine.predictor.decode = spy
    widget.prompts.boxes.add_rectangles(box_corners(region(labels, 175).bbox))
    wait_candidates(qtbot, widget)
    assert seen == [1]
    del widget.engine.predictor.decode
    idle(qtbot, widget)


CLEAR_THEN_OPEN = """
import time
import numpy as np, napari, tifffile
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer(show=True)
image = tifffile.imread({path!r})
viewer.add_image(image, name="a")
dock, shell = viewer.window.add_plugin_dock_widget("napari-sam-kit", "Segment Anything")
app = QApplication.instance()

def wait(seconds, until=lambda: False):
    end = time.time() + seconds
    while time.time() < end and not until():
        app.processEvents()
        time.sleep(0.005)

wait(120, lambda: shell.widget is not None and shell.widget.engine is not None and shell.widget.view is not None)
widget = shell.widget
widget.prompts.boxes.add_rectangles(np.array([[100.0, 100.0], [140.0, 140.0]]))
wait(60, lambda: widget.candidate_view.candidates is not None)
for step in ("open", "closed"):
    if step == "closed":
        dock.title.close_button.click()
        wait(0.5)
    viewer.layers.clear()
    wait(0.5)
    viewer.add_image(image[::-1].copy(), name="b")
    wait(3)
    print(step, "survived", [layer.name for layer in viewer.layers], flush=True)
viewer.close()
"""


def test_clearing_the_layers_then_opening_an_image_does_not_crash(tmp_path):
    """napari segfaulted drawing the next image after layers.clear() took the widget's layers
    (napari#6472); run in a process of its own, since a crash would end this one."""
    script = tmp_path / "clear_then_open.py"
    script.write_text(textwrap.dedent(CLEAR_THEN_OPEN.format(path=str(DATA / "nuclei2d.tif"))))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "open survived" in run.stdout and "closed survived" in run.stdout
    assert "closed survived ['b']" in run.stdout  # a closed widget re-creates nothing


CLOSE_WHILE_LOADING = """
import numpy as np, napari
from qtpy.QtWidgets import QApplication
from napari_sam._qt.widget import SamWidget
viewer = napari.Viewer(show=True)
viewer.add_image(np.random.default_rng(0).random((64, 64)), name="a")
widget = SamWidget(viewer)
viewer.window.add_dock_widget(widget, name="SAM")
for _ in range(20):
    QApplication.processEvents()
print("loading:", widget.engine is None, flush=True)
viewer.close()
print("closed", flush=True)
"""


def test_quitting_while_the_model_loads_ends_cleanly(tmp_path):
    """napari closed, and Python ended, while the widget's model still loads: the loader
    finished after Qt was gone and aborted the process (exit status 134)."""
    script = tmp_path / "close_while_loading.py"
    script.write_text(textwrap.dedent(CLOSE_WHILE_LOADING))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert "loading: True" in run.stdout and "closed" in run.stdout, run.stdout + run.stderr[-2000:]
    assert run.returncode == 0, run.stderr[-3000:]
