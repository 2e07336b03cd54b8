"""What napari opens from the plugin menu: a dock that shows at once and builds the SAM
widget once PyTorch and the model code are imported on a worker thread.

Importing torch takes seconds; on the GUI thread it froze napari for 4-6 s. Its shared
libraries are loaded through ctypes first, which lets the GUI thread run meanwhile.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from .lifecycle import Undocked, run_on_worker

LOADING = "loading Segment Anything (PyTorch) ..."


def preload_torch() -> None:
    """Load torch's largest shared libraries with ctypes, which drops the GIL while the
    dynamic linker works; ``import torch`` then finds them loaded. Linux only; harmless
    where the files are missing."""
    spec = importlib.util.find_spec("torch")
    if "torch" in sys.modules or spec is None or spec.origin is None or not sys.platform.startswith("linux"):
        return
    lib = Path(spec.origin).parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch.so", "libtorch_python.so"):
        if (lib / name).is_file():
            try:
                ctypes.CDLL(str(lib / name))
            except OSError:
                return  # torch's own import will report what is wrong


def import_widget() -> type:
    """Import PyTorch and the widget module (on a worker thread); returns the widget class."""
    preload_torch()
    from .controls import device_choices
    from .widget import SamWidget

    device_choices()  # probing CUDA is slow the first time: not on the GUI thread
    return SamWidget


class SamDock(QWidget):
    """The dock widget: a loading line, replaced by :class:`~.widget.SamWidget` when ready."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.widget: Any = None
        self._closed = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.status = QLabel(LOADING)
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)  # the form starts at the top, whatever height the dock has
        self._undocked = Undocked(self, self.close_widget)
        run_on_worker(self, import_widget, on_result=self._build,
                      on_error=lambda exc: self.status.setText(f"cannot load the SAM widget: {exc}"))

    def _build(self, widget_class: type) -> None:
        if self._closed:
            return
        self.widget = widget_class(self.viewer)
        self.status.hide()
        self.layout().insertWidget(1, self.widget)

    def close_widget(self) -> None:
        """Napari closed the dock: the widget lets go of the viewer and its layers, and
        everything is deleted. (napari's dock keeps a Python reference to this shell, so
        the shell lets go of the widget and the viewer itself.)"""
        self._closed = True
        widget, self.widget, self.viewer = self.widget, None, None
        if widget is not None:
            widget.teardown()
            widget.setParent(None)
            widget.deleteLater()
        self.deleteLater()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        if self.widget is not None:
            self.widget.teardown()
        super().closeEvent(event)
