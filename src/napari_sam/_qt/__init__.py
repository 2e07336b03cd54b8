"""The napari plugin's Qt side: the dock widget and its parts."""

from .widget import SamWidget

__all__ = ["SamWidget"]
