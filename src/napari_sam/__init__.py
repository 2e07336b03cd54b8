"""napari-sam-kit: Segment Anything for microscopy, as a Python API, a CLI and a napari plugin."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names and the modules holding them; imported on first use so that the CLI and
# napari's plugin discovery do not pay for importing torch up front.
_EXPORTS = {
    "load_model": "loading",
    "Predictor": "predictor",
    "Embedding": "predictor",
    "Candidates": "predictor",
    "DEFAULT_MODEL": "registry",
    "ModelSpec": "registry",
    "get_spec": "registry",
    "list_models": "registry",
    "register": "registry",
    "propagate": "propagation",
    "propagate_labels": "propagation",
    "track": "tracking",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .loading import load_model
    from .predictor import Candidates, Embedding, Predictor
    from .propagation import propagate, propagate_labels
    from .tracking import track
    from .registry import DEFAULT_MODEL, ModelSpec, get_spec, list_models, register


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_sam' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
