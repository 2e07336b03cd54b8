"""Screenshots of the dock widget at work, for the README and docs/usage.md.

Run from the repository root, under a display or a virtual one:

    xvfb-run -a python docs/make_screenshots.py [widget|stack ...]

- ``docs/images/widget.png``: napari with the plugin's synthetic 2D nuclei sample, the
  widget docked from the plugin manifest, a box drawn around one nucleus and its three
  scored candidates.
- ``docs/images/stack.png``: the synthetic 3D stack on a middle slice, one nucleus
  committed to the output labels and a second one committed through the stack, with its
  confidence per slice listed in the dock.

Each is a screenshot of the whole window, taken with the real model (LiteMedSAM).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication
from skimage.io import imsave
from skimage.measure import regionprops

from napari_sam._sample_data import sample_nuclei_2d, sample_nuclei_3d, synthetic_nuclei

IMAGES = Path(__file__).parent / "images"


def open_widget(viewer):
    """The SAM widget, docked from the plugin manifest as napari's menu does."""
    _, dock = viewer.window.add_plugin_dock_widget("napari-sam-kit", "Segment Anything")
    wait(lambda: dock.widget is not None)  # the dock imports PyTorch on a worker first
    return dock.widget


def wait(condition, timeout: float = 120.0) -> None:
    app = QApplication.instance()
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the widget did not get there in time")
        app.processEvents()
        time.sleep(0.01)


def settle(viewer, frames: int = 30) -> None:
    """Let napari draw what changed before taking the screenshot."""
    for _ in range(frames):
        QApplication.instance().processEvents()
        time.sleep(0.02)


def save(viewer, name: str) -> Path:
    out = IMAGES / name
    out.parent.mkdir(parents=True, exist_ok=True)
    imsave(out, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    return out


def widget_screenshot() -> None:
    viewer = napari.Viewer(title="napari-sam-kit")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-sam-kit", "nuclei_2d")
    widget = open_widget(viewer)
    wait(lambda: widget.engine is not None and widget.view is not None and widget.index is not None)
    wait(lambda: widget.engine.cached(widget.view.source, widget.index) is not None)

    # The sample is seeded: regenerate its labels to put the box around a real nucleus.
    image, labels = synthetic_nuclei((256, 256), n=30, seed=1)
    assert np.array_equal(image, sample_nuclei_2d()[0][0])
    nucleus = max(regionprops(labels), key=lambda r: r.area if 40 < r.centroid[0] < 216 else 0)
    r0, c0, r1, c1 = nucleus.bbox
    widget.prompts.boxes.add_rectangles(np.array([[r0 - 1.5, c0 - 1.5], [r1 + 0.5, c1 + 0.5]]))
    wait(lambda: widget.candidate_view.candidates is not None and not widget.decoding.busy)
    widget.choose(widget.candidate_view.selected)
    camera = viewer.scene.camera
    camera.center = (0.0, (r0 + r1) / 2, (c0 + c1) / 2)
    camera.zoom *= 2.0
    settle(viewer)

    out = save(viewer, "widget.png")
    print(f"saved {out} ({', '.join(b.text() for b in widget.ui.candidate_buttons.buttons)})")
    viewer.close()


def box3d(z: int, bbox: tuple[int, int, int, int], pad: float = 1.5) -> np.ndarray:
    """A rectangle on plane ``z`` around a regionprops bbox (r0, c0, r1, c1)."""
    r0, c0, r1, c1 = bbox
    r0, c0, r1, c1 = r0 - pad, c0 - pad, r1 - 1 + pad, c1 - 1 + pad
    return np.array([[z, r0, c0], [z, r0, c1], [z, r1, c1], [z, r1, c0]], dtype=float)


def stack_screenshot() -> None:
    viewer = napari.Viewer(title="napari-sam-kit")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-sam-kit", "nuclei_3d")
    widget = open_widget(viewer)
    wait(lambda: widget.engine is not None and widget.view is not None)
    z = 8
    viewer.dims.set_current_step(0, z)
    wait(lambda: widget.index == (z,))
    wait(lambda: widget.engine.cached(widget.view.source, widget.index) is not None)

    # The sample is seeded: regenerate its labels to box the two largest nuclei on plane z.
    image, labels = synthetic_nuclei((16, 128, 128), n=20, radius=(8.0, 12.0), seed=2)
    assert np.array_equal(image, sample_nuclei_3d()[0][0])
    first, second = sorted(regionprops(labels[z]), key=lambda r: r.area)[-2:]
    widget.prompts.boxes.add_rectangles(box3d(z, first.bbox))
    wait(lambda: widget.candidate_view.candidates is not None and not widget.decoding.busy)
    assert widget.commit() == 1
    widget.prompts.boxes.add_rectangles(box3d(z, second.bbox))
    wait(lambda: widget.candidate_view.candidates is not None and not widget.decoding.busy)
    widget.propagate()  # the second one through the stack: its confidence per slice is listed
    wait(lambda: not widget.propagator.busy)
    viewer.layers.selection.active = widget.prompts.boxes
    settle(viewer)

    out = save(viewer, "stack.png")
    print(f"saved {out} (plane {z}; {widget.ui.plane.text()}; {widget.ui.status.text()})")
    viewer.close()


SHOTS = {"widget": widget_screenshot, "stack": stack_screenshot}


def main(argv: list[str]) -> int:
    names = argv or list(SHOTS)
    unknown = [n for n in names if n not in SHOTS]
    if unknown:
        print(f"unknown screenshot(s) {unknown}; choose from {list(SHOTS)}", file=sys.stderr)
        return 2
    for name in names:
        SHOTS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
