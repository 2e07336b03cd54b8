"""Refining the last candidates with SAM's own low-resolution logits as points are added."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..values import Candidates
from .prompts import PlanePrompts


@dataclass
class Refinement:
    """SAM refines with the previous low-res logits when the user only adds points."""

    key: Any = None
    n_points: int = 0
    box: np.ndarray | None = None
    logits: np.ndarray | None = None
    window: tuple[int, int, int, int] | None = None  # where the logits lie in the plane

    def remember(self, key: Any, prompts: PlanePrompts, candidates: Candidates) -> None:
        self.key, self.n_points, self.box = key, len(prompts.points), prompts.box
        self.logits = candidates.logits[candidates.best]
        self.window = candidates.window

    def mask_input(self, key: Any, prompts: PlanePrompts) -> tuple[np.ndarray | None, tuple[int, int, int, int] | None]:
        """(the last logits, their window) if ``prompts`` only add points to the last
        prompts on ``key``; else (None, None)."""
        if self.logits is None or key != self.key or len(prompts.points) <= self.n_points:
            return None, None
        if (self.box is None) != (prompts.box is None):
            return None, None
        same_box = self.box is None or np.array_equal(self.box, prompts.box)
        return (self.logits, self.window) if same_box else (None, None)
