"""The napari plugin's Qt side: the dock widget and its parts.

Importing this package is light (no PyTorch): napari imports it on the GUI thread when the
user opens the widget, and :class:`~.dock.SamDock` imports the heavy parts on a worker.
"""

from typing import Any

from ..errors import require_qt

require_qt()  # no Qt binding: an ImportError that says `pip install "napari-sam-kit[pyqt6]"`

from .dock import SamDock  # noqa: E402

__all__ = ["SamDock", "SamWidget"]


def __getattr__(name: str) -> Any:
    if name == "SamWidget":
        from .widget import SamWidget

        return SamWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
