"""Everything that runs off the GUI thread: model loading, embedding, decoding.

Each runner starts its work with :func:`~.lifecycle.run_on_worker` and reports back
through Qt signals, which Qt delivers on the GUI thread. Results of superseded work are dropped by the caller
(they carry what they were computed for), never applied late to newer state.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from napari.utils import progress
from qtpy.QtCore import QObject, QTimer, Signal

from ..embeddings.engine import Engine, EmbeddingCache, Index, PlaneReady, PlaneSource
from ..errors import Cancelled
from .lifecycle import guarded, run_on_worker


BAR_DELAY_MS = 300  # embeddings quicker than this (GPU) get no progress bar
BAR_LINGER_MS = 5000  # a finished bar stays this long, to be reused by the next request


def encoder_threads() -> int:
    """Torch threads for the encoder on the CPU: all cores but one, kept for the GUI."""
    return max(1, (os.cpu_count() or 2) - 1)


DECODER_THREADS = 1  # the decoder's matrices are small: more threads only wait on each other


class ActivityBar(QObject):
    """One napari progress bar reused from batch to batch, closed after a quiet spell.

    Adding a bar to napari's activity dock relayouts the window (it even runs
    processEvents): done once per burst of work, not once per plane or slice change.
    Reports that arrive while the bar is being made (delivered by that processEvents)
    update it instead of making more bars.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._bar: progress | None = None
        self._making = False
        self._desc = ""
        self._latest: tuple[int, int, str] | None = None
        self._linger = QTimer(self)
        self._linger.setSingleShot(True)
        self._linger.timeout.connect(self.close)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def show(self, done: int, total: int, desc: str) -> None:
        self._linger.stop()
        self._latest = (done, total, desc)
        if self._making:
            return
        if self._bar is None:
            self._making = True
            try:
                bar = progress(total=total, desc=desc)
            finally:
                self._making = False
            self._bar, self._desc = bar, desc
            if self._latest is None:  # closed while it was being made
                self.close()
                return
            done, total, desc = self._latest
        if self._desc != desc:
            self._desc = desc
            self._bar.set_description(desc)
        self.set(done, total)

    def set(self, done: int, total: int) -> None:
        """Show ``done`` of ``total``. Each update of napari's bar processes Qt events (a
        redraw of the canvas, tens of ms): only real changes are sent."""
        bar = self._bar
        if bar is None:
            return
        total = max(total, done)
        if (bar.n, bar.total) == (done, total):
            return
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()  # the "done/total" text, in step with the bar's percentage
        bar.events.value(value=done)

    def finish(self) -> None:
        """Close the bar unless new work shows up within BAR_LINGER_MS."""
        if self._bar is not None:
            self._linger.start(BAR_LINGER_MS)

    def close(self) -> None:
        self._linger.stop()
        self._latest = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EmbeddingWorker(QObject):
    """Drains an :class:`Engine` queue on a worker, with a progress bar in the activity dock."""

    ready = Signal(object)  # PlaneReady
    failed = Signal(str)
    idle = Signal()  # the worker stopped with nothing left to embed

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine: Engine | None = None
        self._worker: Any = None
        self._bar = ActivityBar(self)
        self._done = 0
        # Stop embedding when the widget goes away, without touching the deleted object.
        self._engine_box: list[Engine | None] = [None]
        box = self._engine_box
        self.destroyed.connect(lambda *_: box[0] is not None and box[0].cancel())

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def set_engine(self, engine: Engine | None) -> None:
        """Use ``engine`` from now on; the old one's worker is cancelled."""
        self.cancel()
        self.engine = self._engine_box[0] = engine

    def request(self, source: PlaneSource, index: Index, prefetch: int = 1, axis: int = -1,
                tiles_near: tuple[float, float] | None = None) -> None:
        """Embed ``index`` next, then its tiles nearest ``tiles_near`` (if given), then its
        neighbours; starts a worker if none runs."""
        if self.engine is None:
            return
        self.engine.request(source, index, prefetch, axis, tiles_near)
        if self._worker is None:
            self._start()
        else:
            self._bar.set(self._done, self._done + self.engine.pending() + 1)

    def cancel(self) -> None:
        """Drop queued planes; the plane being embedded finishes, then the worker stops."""
        if self.engine is not None:
            self.engine.cancel()
        if self._worker is not None:
            self._worker.quit()
        self._worker = None
        self._bar.finish()

    def _start(self) -> None:
        engine = self.engine
        if engine is None or engine.pending() == 0:
            return
        # The callbacks name the worker they report for, bound once it is made: Qt queues
        # its signals to the GUI thread, which is here until this method returns.
        worker = run_on_worker(self, engine.run, on_yield=lambda item: self._on_yield(worker, item),
                               on_error=lambda exc: self._on_error(worker, exc),
                               on_finished=lambda: self._on_finished(worker))
        self._worker, self._done = worker, 0
        if self._bar.shown:
            self._show_bar(worker)
        else:  # quick work (a GPU) gets no bar; slow work gets one from the event loop
            QTimer.singleShot(BAR_DELAY_MS, guarded(self, lambda: self._show_bar(worker)))

    def _show_bar(self, worker: Any) -> None:
        if worker is self._worker and self.engine is not None:
            total = self._done + self.engine.pending() + 1
            self._bar.show(self._done, total, f"SAM: embedding planes and tiles ({self.engine.model_name})")

    def _on_yield(self, worker: Any, item: PlaneReady) -> None:
        if worker is self._worker:
            self._done += 1
            self._bar.set(self._done, self._done + item.remaining)
        self.ready.emit(item)  # cached either way: the widget decides if it still matters

    def _on_error(self, worker: Any, exc: BaseException) -> None:
        if worker is self._worker and self.engine is not None:
            self.engine.cancel()  # do not restart on the same failing plane
        self.failed.emit(f"embedding failed: {exc}")

    def _on_finished(self, worker: Any) -> None:
        if worker is not self._worker:
            return
        self._worker = None
        engine = self.engine
        if engine is not None and engine.pending() and not engine.cancelled:
            self._start()  # requests that arrived as the worker was finishing
        else:
            self._bar.finish()
            self.idle.emit()


class DecodingWorker(QObject):
    """Runs the (short) decoder on a worker, one job at a time, newest request wins."""

    done = Signal(object, object)  # (Candidates, context)
    failed = Signal(str, object)  # (message, context)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._running = False
        self._next: tuple[Callable[[], Any], object] | None = None

    @property
    def busy(self) -> bool:
        return self._running or self._next is not None

    def submit(self, job: Callable[[], Any], context: object) -> None:
        """Run ``job`` (returns Candidates) soon; a job still waiting is replaced."""
        self._next = (job, context)
        if not self._running:
            self._start_next()

    def _start_next(self) -> None:
        if self._next is None:
            return
        job, context = self._next
        self._next = None
        self._running = True
        run_on_worker(self, job, threads=DECODER_THREADS, on_result=lambda result: self.done.emit(result, context),
                      on_error=lambda exc: self.failed.emit(str(exc), context), on_finished=self._on_finished)

    def _on_finished(self) -> None:
        self._running = False
        self._start_next()


class BackgroundJob(QObject):
    """One cancellable computation at a time on a worker thread, with a progress bar.

    ``start(fn, context)`` runs ``fn(progress, cancel)``; ``done`` then carries its result
    and ``context``. ``fn`` raises :class:`~napari_sam.errors.Cancelled` when ``cancel()``
    turns true, which ends as ``cancelled``; any other error as ``failed``.
    """

    done = Signal(object, object)
    failed = Signal(str)
    cancelled = Signal()
    _progress = Signal(int, int)  # from the worker thread

    def __init__(self, desc: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bar = ActivityBar(self)
        self._stop = threading.Event()
        self._running = False
        self._progress.connect(lambda done, total: self.bar.show(done, total, desc))

    @property
    def busy(self) -> bool:
        return self._running

    def start(self, fn: Callable[[Callable[[int, int], None], Callable[[], bool]], Any], context: Any) -> None:
        self._stop.clear()
        self._running = True
        report = guarded(self, self._progress.emit)
        run_on_worker(self, fn, report, self._stop.is_set, threads=encoder_threads(),
                      on_result=lambda out: self.done.emit(out, context), on_error=self._on_error,
                      on_finished=self._on_finished)

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


class ModelLoader(QObject):
    """Loads a model (downloading it if needed) on a worker and builds an Engine."""

    loaded = Signal(object, object)  # (Engine, token)
    failed = Signal(str, object)
    downloading = Signal(int, object)  # (bytes done, total or None), from the worker thread

    def __init__(self, cache: EmbeddingCache, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cache = cache
        self.bar = ActivityBar(self)
        self.downloading.connect(self._on_download)

    def load(self, name: str, device: str, token: object) -> None:
        """Start loading ``name`` on ``device``; ``token`` comes back with the result."""
        run_on_worker(self, self._build, name, device, on_result=lambda engine: self.loaded.emit(engine, token),
                      on_error=lambda exc: self.failed.emit(f"could not load {name}: {exc}", token),
                      on_finished=self.bar.close)

    def _build(self, name: str, device: str) -> Engine:
        from ..model.loading import load_model
        from ..predictor import Predictor

        report = guarded(self, self.downloading.emit)
        model = load_model(name, device=device, progress=lambda done, total: report(done, total))
        threads = encoder_threads() if next(model.parameters()).device.type == "cpu" else None
        return Engine(Predictor(model), self.cache, num_threads=threads)

    def _on_download(self, done: int, total: int | None) -> None:
        self.bar.show(done, total or 0, "SAM: downloading weights")
