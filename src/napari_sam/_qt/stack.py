"""Carry the chosen candidate through the stack (:func:`napari_sam.propagate`) on a
worker thread, with a progress bar and a cancel, and hand the 3D mask back for committing.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from ..automatic import Cancelled
from ..engine import Engine, Index, PlaneSource
from ..propagation import propagate
from .prompts import PlanePrompts
from .workers import ActivityBar, guarded


class StackAlong:
    """Planes of ``source`` along one stack axis, the other stack indices fixed: a (Z, H, W)
    array-like of intensities (colours averaged) that reads planes only when asked."""

    def __init__(self, source: PlaneSource, index: Index, axis: int) -> None:
        self.source, self.index, self.axis = source, tuple(index), axis
        n = source.stack_shape[axis]
        h, w = (int(source.data.shape[a]) for a in source.plane_axes)
        self.shape = (n, h, w)

    def at(self, k: int) -> Index:
        return self.index[:self.axis] + (k,) + self.index[self.axis + 1:]

    def _plane(self, k: int) -> np.ndarray:
        plane = np.asarray(self.source.plane(self.at(k)), dtype=np.float32)
        return plane.mean(axis=-1) if plane.ndim == 3 else plane

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._plane(int(key))
        if isinstance(key, tuple) and key and key[0] == slice(None):
            return np.stack([self._plane(k)[key[1:]] for k in range(self.shape[0])])
        raise TypeError(f"StackAlong supports [k] and [:, rows, cols], not {key!r}")


def _best_mask(engine: Engine, embedding: Any, prompts: PlanePrompts) -> np.ndarray:
    points = prompts.points if len(prompts.points) else None
    cand = engine.predictor.predict(embedding, points, prompts.labels if points is not None else None, prompts.box)
    return cand.masks[cand.best]


class Propagator(QObject):
    """Runs one propagation at a time; ``done`` carries the (Z, H, W) mask and the context."""

    done = Signal(object, object)
    failed = Signal(str)
    cancelled = Signal()
    _progress = Signal(int, int)  # from the worker thread

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bar = ActivityBar(self)
        self._stop = threading.Event()
        self._running = False
        self._progress.connect(lambda done, total: self.bar.show(done, total, "SAM: propagating through the stack"))

    @property
    def busy(self) -> bool:
        return self._running

    def start(self, engine: Engine, stack: StackAlong, z: int, mask: np.ndarray, context: Any,
              fixes: dict[int, PlanePrompts] | None = None) -> None:
        """Propagate ``mask`` (plane pixels on slice ``z``) through ``stack``. ``fixes`` are
        the prompts the user drew on other slices: their best masks are taken as given there."""
        self._stop.clear()
        self._running = True
        report = guarded(self, self._progress.emit)

        def embed(k: int) -> Any:
            return engine.embedding(stack.source, stack.at(k))

        def run() -> np.ndarray:
            corrections = {k: _best_mask(engine, embed(k), p) for k, p in (fixes or {}).items()}
            return propagate(engine.predictor, stack, z, mask=mask, corrections=corrections, progress=report,
                             cancel=self._stop.is_set, embed=embed)

        worker = create_worker(run, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(guarded(self, lambda out: self.done.emit(out, context)))
        worker.errored.connect(guarded(self, self._on_error))
        worker.finished.connect(guarded(self, self._on_finished))
        worker.start()

    def cancel(self) -> None:
        self._stop.set()

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.cancelled.emit()
        else:
            self.failed.emit(f"{type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self._running = False
        self.bar.close()
