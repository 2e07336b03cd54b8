"""napari-sam-kit: Segment Anything for microscopy, as a Python API, a CLI and a napari plugin."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names and the modules holding them; imported on first use so that the CLI and
# napari's plugin discovery do not pay for importing torch up front.
_EXPORTS = {
    "load_model": "model.loading",
    "Predictor": "predictor",
    "Embedding": "values",
    "Candidates": "values",
    "DEFAULT_MODEL": "model.registry",
    "ModelSpec": "model.registry",
    "get_spec": "model.registry",
    "list_models": "model.registry",
    "register": "model.registry",
    "propagate": "segmentation.propagation",
    "propagate_labels": "segmentation.propagation",
    "refine_labels": "segmentation.refine_labels",
    "RefinedLabels": "segmentation.refine_labels",
    "track": "segmentation.tracking",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .model.loading import load_model
    from .model.registry import DEFAULT_MODEL, ModelSpec, get_spec, list_models, register
    from .predictor import Predictor
    from .segmentation.propagation import propagate, propagate_labels
    from .segmentation.refine_labels import RefinedLabels, refine_labels
    from .segmentation.tracking import track
    from .values import Candidates, Embedding


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_sam' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
