"""The napari plugin's Qt side: the dock widget and its parts.

Importing this package is light (no PyTorch): napari imports it on the GUI thread when the
user opens the widget, and :class:`~.dock.SamDock` imports the heavy parts on a worker.
"""

from typing import Any

from ..errors import QT_APT_PACKAGES, QT_INSTALL_HINT, QtBindingError


def require_qt() -> None:
    """Raise :class:`QtBindingError` unless a Qt binding can be imported through qtpy."""
    try:
        import qtpy
    except ImportError as exc:  # qtpy.QtBindingsNotFoundError is an ImportError
        raise QtBindingError(
            "The napari widget of napari-sam-kit needs a Qt binding (PyQt6 or PySide6), and none is "
            f"installed ({exc}). napari-sam-kit does not pick one for you; install one with:\n"
            f"    {QT_INSTALL_HINT}\n"
            'or pip install "napari-sam-kit[pyside6]". The command line (napari-sam) and the Python '
            "API work without Qt."
        ) from exc
    try:
        from qtpy import QtWidgets  # noqa: F401
    except ImportError as exc:  # the binding is there, its shared libraries are not
        raise QtBindingError(
            f"The Qt binding {qtpy.API_NAME} is installed but cannot load: {exc}.\n"
            "On Linux this usually means missing system libraries; on Debian/Ubuntu install them with:\n"
            f"    sudo apt-get install {QT_APT_PACKAGES}\n"
            "On a machine without a display, run napari under a virtual one: xvfb-run -a napari"
        ) from exc


require_qt()  # no Qt binding: an ImportError that says `pip install "napari-sam-kit[pyqt6]"`

from .dock import SamDock  # noqa: E402

__all__ = ["SamDock", "SamWidget"]


def __getattr__(name: str) -> Any:
    if name == "SamWidget":
        from .widget import SamWidget

        return SamWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
