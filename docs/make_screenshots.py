"""Screenshot of the dock widget at work, for the README: ``docs/images/widget.png``.

Run from the repository root, under a display or a virtual one:

    xvfb-run -a python docs/make_screenshots.py

It opens napari, loads the plugin's synthetic 2D nuclei sample, docks the widget from
the plugin manifest, draws a box around one nucleus, waits for the three candidates and
saves a screenshot of the whole window.
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

from napari_sam._sample_data import sample_nuclei_2d, synthetic_nuclei

OUT = Path(__file__).parent / "images" / "widget.png"


def wait(condition, timeout: float = 120.0) -> None:
    app = QApplication.instance()
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the widget did not get there in time")
        app.processEvents()
        time.sleep(0.01)


def main() -> int:
    viewer = napari.Viewer(title="napari-sam-kit")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-sam-kit", "nuclei_2d")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam-kit", "Segment Anything")
    wait(lambda: widget.engine is not None and widget.view is not None and widget.index is not None)
    wait(lambda: widget.engine.cached(widget.view.source, widget.index) is not None)

    # The sample is seeded: regenerate its labels to put the box around a real nucleus.
    image, labels = synthetic_nuclei((256, 256), n=30, seed=1)
    assert np.array_equal(image, sample_nuclei_2d()[0][0])
    nucleus = max(regionprops(labels), key=lambda r: r.area if 40 < r.centroid[0] < 216 else 0)
    r0, c0, r1, c1 = nucleus.bbox
    widget.prompts.boxes.add_rectangles(np.array([[r0 - 1.5, c0 - 1.5], [r1 + 0.5, c1 + 0.5]]))
    wait(lambda: widget.cands.candidates is not None and not widget.predictions.busy)
    widget.choose(widget.cands.selected)
    camera = viewer.scene.camera
    camera.center = (0.0, (r0 + r1) / 2, (c0 + c1) / 2)
    camera.zoom *= 2.0
    for _ in range(30):
        QApplication.instance().processEvents()
        time.sleep(0.02)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    imsave(OUT, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print(f"saved {OUT} ({', '.join(b.text() for b in widget.ui.candidates.buttons)})")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
