"""Fixtures for the widget tests: a viewer with the dock widget on real nucleus data."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from napari_sam.embeddings.engine import EmbeddingCache
from napari_sam.metrics import iou  # noqa: F401 (the widget tests import it from here)

# Mesa's software OpenGL (what napari draws with under xvfb) and triton both carry LLVM:
# loading triton after a napari canvas exists segfaults the process, and later test files
# load it (torchvision -> torch._dynamo -> triton). Loaded before any canvas, both work.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

TIMEOUT_MS = 90_000  # one LiteMedSAM embedding is ~1.5 s on 2 idle cores; CI boxes can be busy


@dataclass
class Event:
    """Enough of a vispy mouse event for napari's layer mouse callbacks."""

    type: str
    position: tuple[float, ...] = (0.0, 0.0)
    modifiers: list[str] = field(default_factory=list)
    is_dragging: bool = False
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    view_direction: list[float] | None = None
    up_direction: list[float] | None = None
    dims_displayed: list[int] = field(default_factory=lambda: [0, 1])
    handled: bool = False


def click(layer, position, modifiers=()) -> None:
    """Press and release the mouse on ``layer`` at world ``position``, as napari does."""
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    mouse_press_callbacks(layer, Event("mouse_press", tuple(position), list(modifiers)))
    mouse_release_callbacks(layer, Event("mouse_release", tuple(position), list(modifiers)))


def drag(layer, start, end, steps: int = 4) -> None:
    """Press at world ``start``, move to ``end`` and release, as a mouse drag does in napari
    (a Shapes layer in rectangle mode draws a rectangle from it)."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    def wrap(event: Event) -> ReadOnlyWrapper:  # as napari's canvas hands events to layers
        return ReadOnlyWrapper(event, exceptions=("handled",))

    start, end = np.asarray(start, float), np.asarray(end, float)
    mouse_press_callbacks(layer, wrap(Event("mouse_press", tuple(start))))
    for t in np.linspace(0, 1, steps + 1)[1:]:
        mouse_move_callbacks(layer, wrap(Event("mouse_move", tuple(start + t * (end - start)), is_dragging=True)))
    mouse_release_callbacks(layer, wrap(Event("mouse_release", tuple(end))))


def press(viewer, key: str) -> None:
    """Press and release ``key`` through the viewer's key map (active layer first)."""
    handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key(key)
    handler.release_key(key)


def box_corners(bbox, pad: float = 1.0) -> np.ndarray:
    """Two opposite rectangle corners around a regionprops-style (r0, c0, r1, c1) bbox."""
    r0, c0, r1, c1 = bbox[-4:]
    return np.array([[r0 - pad, c0 - pad], [r1 - 1 + pad, c1 - 1 + pad]], dtype=float)


@pytest.fixture(scope="session")
def shared_cache() -> EmbeddingCache:
    """Embeddings shared across tests: the same data array embeds once per session."""
    return EmbeddingCache()


@pytest.fixture
def sam(make_napari_viewer, qtbot, shared_cache) -> Callable:
    """Factory: (image, cache=shared) -> (viewer, widget) with the model loaded and the
    image selected; waits for the widget's workers before the viewer closes."""
    from napari_sam._qt import SamWidget

    made = []

    def factory(image: np.ndarray, name: str = "image", cache: EmbeddingCache | None = None,
                show: bool = False, prefetch_tiles: bool = False, **kwargs):
        viewer = make_napari_viewer(show=show)
        viewer.add_image(image, name=name, **kwargs)
        widget = SamWidget(viewer, cache=shared_cache if cache is None else cache, prefetch_tiles=prefetch_tiles)
        viewer.window.add_dock_widget(widget, name="Segment Anything")
        made.append(widget)
        qtbot.waitUntil(lambda: widget.engine is not None and widget.view is not None
                        and widget.index is not None, timeout=TIMEOUT_MS)
        return viewer, widget

    yield factory
    for widget in made:
        idle(qtbot, widget)


def idle(qtbot, widget, timeout: int = TIMEOUT_MS) -> None:
    """Wait until the widget has no embedding, decoding or rebuild pending."""
    qtbot.waitUntil(lambda: not widget.embedding_worker.busy and not widget.decoding.busy
                    and not widget._rebuild_timer.isActive() and not widget._request_timer.isActive(),
                    timeout=timeout)


def wait_candidates(qtbot, widget, timeout: int = TIMEOUT_MS) -> None:
    qtbot.waitUntil(lambda: widget.candidate_view.candidates is not None and not widget.decoding.busy, timeout=timeout)


class Gate:
    """Holds a predictor's ``embed`` until opened, to catch the widget mid-embedding;
    with ``held``, only the first ``held`` calls wait."""

    def __init__(self, predictor, held: int | None = None) -> None:
        import threading

        self.predictor, self.event, self.calls, self.held = predictor, threading.Event(), 0, held
        self._embed = predictor.embed
        predictor.embed = self._gated

    def _gated(self, plane, **kwargs):
        self.calls += 1
        if self.held is None or self.calls <= self.held:
            assert self.event.wait(TIMEOUT_MS / 1000), "gate never opened"
        return self._embed(plane, **kwargs)

    def open(self) -> None:
        self.event.set()
        self.predictor.embed = self._embed


@pytest.fixture
def gate():
    """Factory wrapping a predictor's embed in a :class:`Gate`; opened at teardown."""
    made = []

    def factory(predictor, held: int | None = None) -> Gate:
        made.append(Gate(predictor, held))
        return made[-1]

    yield factory
    for g in made:
        g.event.set()


@pytest.fixture
def extra_models():
    """Two more registry entries using the bundled LiteMedSAM weights: a plain copy, and
    one that claims to answer points (to drive the point-prompt path of the widget)."""
    import dataclasses

    from napari_sam.model.registry import get_spec, register, unregister

    base = get_spec("lite_medsam")
    copy = dataclasses.replace(base, name="lite_medsam_copy", title="LiteMedSAM (copy)", aliases=())
    points = dataclasses.replace(base, name="lite_points", title="LiteMedSAM (points test)", aliases=(),
                                 prompts=("points", "boxes", "masks"))
    for spec in (copy, points):
        register(spec, replace=True)
    yield copy, points
    for spec in (copy, points):
        unregister(spec.name)
