"""Light helpers for the widgets' life cycle, importable before PyTorch: is a Qt object
still alive, slots that die with their owner, work on a worker thread that reports to
such slots, and noticing napari's close of a dock."""

from __future__ import annotations

import atexit
import inspect
from collections.abc import Callable
from functools import cache
from typing import Any

from napari.qt.threading import WorkerBase, create_worker
from qtpy.QtCore import QEvent, QObject


def alive(obj: QObject) -> bool:
    """False once Qt has deleted ``obj`` (a worker may report after its widget closed)."""
    try:
        obj.objectName()
    except RuntimeError:
        return False
    return True


def guarded(owner: QObject, fn: Callable[..., Any]) -> Callable[..., None]:
    """``fn`` as a slot that does nothing once ``owner`` is deleted."""
    def slot(*args: Any) -> None:
        if alive(owner):
            fn(*args)
    return slot


def in_threads(n: int, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run with ``n`` torch threads. Torch's CPU thread count (OpenMP) belongs to the
    calling thread, so every worker thread sets its own: left alone, each would use all
    cores and compete with the others and the GUI (2-15x slower under load)."""
    def run(*args: Any, **kwargs: Any) -> Any:
        import torch

        torch.set_num_threads(n)
        return fn(*args, **kwargs)
    return run


def run_on_worker(owner: QObject, fn: Callable[..., Any], *args: Any,
                  on_result: Callable[[Any], None] | None = None,
                  on_yield: Callable[[Any], None] | None = None,
                  on_error: Callable[[BaseException], None] | None = None,
                  on_finished: Callable[[], None] | None = None,
                  threads: int | None = None) -> Any:
    """Start ``fn(*args)`` on a napari worker thread and return the (started) worker.

    ``fn`` returns its result (``on_result``) or, as a generator, yields items (``on_yield``);
    an exception goes to ``on_error`` instead of napari's error dialog, and ``on_finished``
    follows either way. The callbacks run on the GUI thread, never once ``owner`` is deleted.
    ``threads``: the torch threads of a plain function (see :func:`in_threads`).
    """
    if threads is not None:
        if inspect.isgeneratorfunction(fn):
            raise TypeError("threads applies to plain functions: a generator sets its own")
        fn = in_threads(threads, fn)
    _await_workers_at_exit()
    worker = create_worker(fn, *args, _start_thread=False, _ignore_errors=True)
    callbacks = {"returned": on_result, "yielded": on_yield, "errored": on_error, "finished": on_finished}
    for name, callback in callbacks.items():
        if callback is not None:  # only generator workers have ``yielded``
            getattr(worker, name).connect(guarded(owner, callback))
    worker.start()
    return worker


EXIT_WAIT_MS = 60_000  # a model still loading when napari quits: up to a minute to finish


@cache
def _await_workers_at_exit() -> None:
    """Before the interpreter ends, stop the workers and wait for them: one that finishes
    after Qt is torn down (napari closed while a model loads) aborts the process."""
    atexit.register(WorkerBase.await_workers, EXIT_WAIT_MS)


class Undocked(QObject):
    """Calls ``callback`` once ``widget``, having had a parent, loses it.

    napari's close button (✕) on a dock takes the widget out with ``setParent(None)``:
    the widget is neither closed nor deleted, so ``closeEvent`` never runs.
    """

    def __init__(self, widget: Any, callback: Callable[[], None]) -> None:
        super().__init__(widget)
        self._docked = widget.parent() is not None
        self._callback = callback
        widget.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt name)
        if event.type() == QEvent.Type.ParentChange:
            if obj.parent() is not None:
                self._docked = True
            elif self._docked:
                self._docked = False
                self._callback()
        return False
