"""The viewer keeps responding while planes are encoded: a 10 ms QTimer must never wait
long while the encoder runs (on a worker thread, with one core left to the GUI)."""

from __future__ import annotations

import time

import numpy as np
from napari.utils import progress
from qtpy.QtCore import QTimer

from napari_sam.engine import EmbeddingCache, Engine, PlaneSource

from .conftest import TIMEOUT_MS, idle

MAX_GAP_S = 0.1


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
    qtbot.waitUntil(lambda: widget.embedder.busy, timeout=TIMEOUT_MS)
    encoding = time.perf_counter()
    qtbot.waitUntil(lambda: key(src, (4,)) in cache and not widget.embedder.busy, timeout=TIMEOUT_MS)
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
