"""napari-sam-kit: Segment Anything for microscopy, as a Python API, a CLI and a napari plugin."""

from __future__ import annotations

__version__ = "0.1.0"

from .loading import load_model
from .predictor import Candidates, Embedding, Predictor
from .registry import DEFAULT_MODEL, ModelSpec, get_spec, list_models, register

__all__ = [
    "DEFAULT_MODEL",
    "Candidates",
    "Embedding",
    "ModelSpec",
    "Predictor",
    "get_spec",
    "list_models",
    "load_model",
    "register",
]
