"""Prompts of the plane on screen -> the prompt service at zoom (on a worker) -> candidates
on screen. A prompt whose window is not embedded yet gets it embedded on that worker.

Every change of prompt, plane, image or model bumps a generation counter, so a decoding
that finishes after the user moved on is dropped instead of shown on the wrong plane.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject, Signal

from ..embeddings.engine import Engine, Index
from ..interactive.planes import PlaneView
from ..interactive.refine import Refinement
from ..values import Candidates
from .candidates import CandidateView
from .prompts import PromptLayers
from .workers import DecodingWorker


class PromptDecoding(QObject):
    """Turns the prompts of one plane into candidates, refining as points are added."""

    shown = Signal()  # candidates appeared or were cleared
    status = Signal(str)

    def __init__(self, prompts: PromptLayers, candidate_view: CandidateView, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.prompts, self.candidate_view = prompts, candidate_view
        self.worker = DecodingWorker(self)
        self._gen = 0
        self._refine = Refinement()
        self.worker.done.connect(self._on_decoded)
        self.worker.failed.connect(lambda message, _context: self.status.emit(f"prediction failed: {message}"))

    @property
    def busy(self) -> bool:
        return self.worker.busy

    def clear(self) -> None:
        """Drop the candidates and whatever decoding is still under way."""
        self._gen += 1
        self.candidate_view.clear()
        self.shown.emit()

    def update(self, engine: Engine, view: PlaneView, index: Index, box_only: bool) -> None:
        """Decode the prompts of plane ``index`` at zoom (:meth:`Engine.segment`)."""
        prompts = self.prompts.for_plane(view, index, use_points=not box_only)
        if prompts.empty:
            self.clear()
            self.status.emit("draw a box" + ("" if box_only else " or click a point") + " on an object")
            return
        key = engine.key(view.source, index)
        mask_input, window = self._refine.mask_input(key, prompts)
        points = prompts.points if len(prompts.points) else None
        labels = prompts.labels if points is not None else None
        self._gen += 1
        context = (self._gen, view, index, key, prompts)
        self.worker.submit(lambda: engine.segment(view.source, index, points, labels, prompts.box,
                                                   mask_input=mask_input, mask_window=window), context)

    def _on_decoded(self, candidates: Candidates, context: tuple[Any, ...]) -> None:
        gen, view, index, key, prompts = context
        if gen != self._gen:
            return  # superseded by a newer prompt, plane, image or model
        self.candidate_view.ensure(view)  # back if the user deleted it
        self.candidate_view.show(candidates, view, index)
        self._refine.remember(key, prompts, candidates)
        self.shown.emit()
        if candidates.scores.max() <= 0 and not candidates.masks.any():
            self.status.emit("no object under the prompt: nothing to commit there")
        else:
            self.status.emit("choose a candidate (1/2/3), then commit (C)")
