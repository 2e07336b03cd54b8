"""Light helpers for the widgets' life cycle, importable before PyTorch: is a Qt object
still alive, slots that die with their owner, and noticing napari's close of a dock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
