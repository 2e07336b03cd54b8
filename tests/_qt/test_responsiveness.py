"""The viewer keeps responding while planes are encoded: a 10 ms QTimer must never wait
long while the encoder runs (on a worker thread, with one core left to the GUI)."""

from __future__ import annotations

import time

import numpy as np
from napari.utils import progress
from qtpy.QtCore import QTimer

from napari_sam.embeddings.engine import EmbeddingCache, Engine, PlaneSource

from .conftest import TIMEOUT_MS, idle

MAX_GAP_S = 0.1
# Opening the widget, beyond napari's own cost of adding the layers (the issue: napari froze
# 4-6 s). CI machines are shared: 0.3 s flaked at 1.28 s against napari's 0.82 s there.
MAX_OPEN_GAP_S = 1.0


class Ticker:
    """Records the gaps between the ticks of a 10 ms timer."""

    def __init__(self) -> None:
        self.ticks: list[float] = [time.perf_counter()]
        self.timer = QTimer()
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start(10)

    def worst_gap(self, since: float, until: float) -> float:
        t = np.array(self.ticks + [until])
        t = t[t >= since]
        return float(np.diff(t).max())


def test_event_loop_keeps_ticking_while_encoding(sam, qtbot, lite_predictor, nuclei2d_embedding, nuclei2d,
                                                 record_property):
    image, _ = nuclei2d
    stack = np.stack([image, image[::-1], image[:, ::-1], image.T, image[::-1, ::-1]])
    # Planes 0-3 count as embedded already (any embedding will do for them), so opening the
    # widget on the middle plane encodes nothing and only plane 4 is encoded below.
    cache = EmbeddingCache()
    filler = Engine(lite_predictor, cache)
    for z in range(4):
        cache.put(filler.key(PlaneSource(stack), (z,)), nuclei2d_embedding)
    viewer, widget = sam(stack, cache=cache, show=True)
    assert widget.index == (2,)
    idle(qtbot, widget)
    progress(total=1).close()  # napari builds its activity indicator once per viewer: not ours
    src, key = widget.view.source, widget.engine.key
    assert key(src, (4,)) not in cache

    ticker = Ticker()
    qtbot.wait(200)
    start = time.perf_counter()
    viewer.dims.set_current_step(0, 4)  # napari draws the plane, then the encoder starts
    qtbot.waitUntil(lambda: widget.embedding_worker.busy, timeout=TIMEOUT_MS)
    encoding = time.perf_counter()
    qtbot.waitUntil(lambda: key(src, (4,)) in cache and not widget.embedding_worker.busy, timeout=TIMEOUT_MS)
    end = time.perf_counter()
    ticker.timer.stop()

    while_encoding = ticker.worst_gap(encoding, end)
    overall = ticker.worst_gap(start, end)
    record_property("max_event_loop_gap_ms", round(1000 * while_encoding, 1))
    print(f"\nencoded for {end - encoding:.2f} s: max event-loop gap {1000 * while_encoding:.1f} ms while "
          f"encoding, {1000 * overall:.1f} ms including napari drawing the new plane")
    # the gaps were measured over the encoding: the timer ticked through it
    assert sum(encoding <= t <= end for t in ticker.ticks) >= 5
    assert while_encoding < MAX_GAP_S, f"the event loop stalled {1000 * while_encoding:.0f} ms while encoding"


OPEN_WIDGET = """
import sys, threading, time
import numpy as np, napari, tifffile
from napari.layers import Labels, Points, Shapes
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

first_torch = []  # the thread that imports torch first


class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not first_torch:
            first_torch.append(threading.current_thread() is threading.main_thread())
        return None


sys.meta_path.insert(0, Spy())
viewer = napari.Viewer(show=True)
image = tifffile.imread(sys.argv[1])
viewer.add_image(image, name="image")
app = QApplication.instance()
ticks = [time.perf_counter()]
timer = QTimer()
timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
timer.start(10)


def wait(seconds, until=lambda: False):
    end = time.time() + seconds
    while time.time() < end and not until():
        app.processEvents()
        time.sleep(0.002)


def worst_gap(since):
    t = np.array(ticks + [time.perf_counter()])
    return 1000 * float(np.diff([since, *t[t > since]]).max())


wait(1)  # napari settles before the ticks are counted
assert "torch" not in sys.modules, "torch was imported before the widget opened"
start = time.perf_counter()
if sys.argv[2] == "layers":
    # What napari itself takes to add and first draw three such layers (software OpenGL
    # under xvfb compiles and draws slowly): the part of opening that is napari's.
    for layer in (Labels(np.zeros(image.shape, np.uint8)), Points(ndim=2), Shapes(ndim=2)):
        viewer.layers.append(layer)
    wait(2)
    print(f"LAYERS {worst_gap(start):.0f} TICKS {len(ticks)}")
else:
    dock, shell = viewer.window.add_plugin_dock_widget("napari-sam-kit", "Segment Anything")
    opened = time.perf_counter()
    wait(180, lambda: shell.widget is not None and shell.widget.engine is not None
         and shell.widget.view is not None)
    ready = time.perf_counter()
    wait(2)  # the first plane's embedding comes within these
    print(f"DOCK {1000 * (opened - start):.0f} READY {ready - start:.2f} GAP {worst_gap(opened):.0f} "
          f"TORCH_ON_GUI_THREAD {int(first_torch[0])} TICKS {len(ticks)}")
viewer.close()
"""


def test_opening_the_widget_keeps_the_event_loop_running(tmp_path):
    """From napari's plugin menu to a loaded model, torch is imported and the model loaded on
    workers: the event loop never waits more than MAX_OPEN_GAP_S beyond what napari itself
    takes to add and draw the widget's three layers. A process of its own, where torch is
    not imported yet, as in a user's napari."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "open_widget.py"
    script.write_text(OPEN_WIDGET)
    image = Path(__file__).parents[1] / "data" / "nuclei2d.tif"
    fields = {}
    for mode in ("layers", "widget"):
        run = subprocess.run([sys.executable, str(script), str(image), mode], capture_output=True, text=True,
                             timeout=600, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
        line = next(line for line in run.stdout.splitlines() if line.startswith(("DOCK", "LAYERS")))
        print("\n" + line)
        fields[mode] = dict(zip(line.split()[::2], map(float, line.split()[1::2])))
        assert fields[mode]["TICKS"] >= 100  # the timer ran all along: the gaps were measured
    ours, layers = fields["widget"]["GAP"], fields["layers"]["LAYERS"]
    assert fields["widget"]["TORCH_ON_GUI_THREAD"] == 0
    assert ours <= layers + 1000 * MAX_OPEN_GAP_S, (
        f"opening the widget stalled napari {ours:.0f} ms; napari adding three layers alone: {layers:.0f} ms")
