"""The napari plugin's Qt side: the dock widget and its parts."""

from ..errors import require_qt

require_qt()  # no Qt binding: an ImportError that says `pip install "napari-sam-kit[pyqt6]"`

from .widget import SamWidget

__all__ = ["SamWidget"]
