"""The prompts drawn on one plane, in that plane's pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlanePrompts:
    """Prompts of one plane, in plane pixels: points (N, 2), labels (N,), box or None."""

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None

    @property
    def empty(self) -> bool:
        return len(self.points) == 0 and self.box is None
