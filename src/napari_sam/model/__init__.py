"""The model layer: the SAM network written from the architecture (:mod:`.sam` and its
parts), the one table of architectures (:mod:`.architectures`), the registry of released
models (:mod:`.registry`), verified weights (:mod:`.weights`) and :func:`~.loading.load_model`.

The network's names are imported on first use, so the registry and the architecture table
(which the command line reads before it needs torch) stay quick to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "load_state_dict": "checkpoint",
    "read_checkpoint": "checkpoint",
    "Sam": "sam",
    "build_image_encoder": "sam",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, load_state_dict, read_checkpoint
    from .sam import Sam, build_image_encoder


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
