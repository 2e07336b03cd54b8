"""The three candidate masks: shown in a Labels layer on the current plane, chosen with
radio buttons or keys 1/2/3/N. The best-scored candidate is chosen first.

The layer holds one plane only (size 1 along every stack axis), moved by its translate
to the plane the candidates belong to: a 500-frame movie costs one plane, not 500.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Labels
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QButtonGroup, QHBoxLayout, QRadioButton, QWidget

from ..embeddings.engine import Index
from ..interactive.planes import PlaneView
from ..values import Candidates
from .layers import add_quietly
from .prompts import ROLE, own_layer

# One colour per candidate, so switching candidates is visible even when masks agree.
_COLORS = {None: [0, 0, 0, 0], 0: [0, 0, 0, 0], 1: "#ffd21f", 2: "#1fd2ff", 3: "#ff6b1f"}


class CandidateView:
    """Owns the candidates Labels layer and which candidate is chosen."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.layer: Labels | None = None
        self.candidates: Candidates | None = None
        self.selected = 0
        self._drawn: tuple[PlaneView, Index] | None = None
        self._where: tuple[PlaneView, Index] | None = None
        viewer.layers.events.removed.connect(self._on_removed)

    @property
    def mask(self) -> np.ndarray | None:
        """The chosen candidate's (H, W) mask, or None."""
        return None if self.candidates is None else self.candidates.masks[self.selected]

    @property
    def where(self) -> tuple[PlaneView, Index] | None:
        """The view and plane the current candidates belong to."""
        return self._where if self.candidates is not None else None

    def ensure(self, view: PlaneView) -> None:
        """Create the layer for ``view`` unless one of the right geometry exists (an earlier
        widget's is adopted)."""
        shape, scale = one_plane(view), view.scale_translate()[0]
        if self.layer is not None and self.layer.data.shape == shape and np.allclose(self.layer.scale, scale):
            return
        self.remove()
        old = own_layer(self.viewer, "candidates", view.ndim, scale, self.layer_translate(view, None))
        if old is not None and old.data.shape == shape:
            self.layer = old
            return
        self.layer = Labels(np.zeros(shape, dtype=np.uint8), name="SAM candidates", scale=scale,
                            translate=self.layer_translate(view, None), opacity=0.55,
                            colormap=DirectLabelColormap(color_dict=_COLORS), metadata={ROLE: "candidates"})
        self.layer.editable = False
        add_quietly(self.viewer, self.layer)

    @staticmethod
    def layer_translate(view: PlaneView, index: Index | None) -> np.ndarray:
        """The layer's translate that puts its one plane on plane ``index`` (None: the first)."""
        scale, translate = view.scale_translate()
        translate = translate.astype(float).copy()
        for j, i in zip(view.stack_axes, index or ()):
            translate[j] += i * scale[j]
        return translate

    def detach(self) -> None:
        """Stop listening to the viewer and take the layer away (candidates are transient)."""
        self.remove()
        self.viewer.layers.events.removed.disconnect(self._on_removed)

    def show(self, candidates: Candidates, view: PlaneView, index: Index) -> None:
        """Display new candidates for plane ``index``, choosing the best-scored one."""
        self.candidates = candidates
        self._where = (view, index)
        self.selected = candidates.best
        self._draw()

    def select(self, i: int) -> bool:
        """Choose candidate ``i``; False when there is no such candidate."""
        if self.candidates is None or not 0 <= i < len(self.candidates):
            return False
        self.selected = i
        self._draw()
        return True

    def next(self) -> bool:
        return self.candidates is not None and self.select((self.selected + 1) % len(self.candidates))

    def clear(self) -> None:
        """Forget the candidates and erase them from the layer."""
        self.candidates = None
        self._erase()

    def remove(self) -> None:
        """Take the layer out of the viewer."""
        self.clear()
        layer, self.layer = self.layer, None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _erase(self) -> None:
        if self._drawn is not None and self.layer is not None:
            self.layer.data[...] = 0
            self.layer.refresh()
        self._drawn = None

    def _draw(self) -> None:
        self._erase()
        if self.layer is None or self._where is None or self.candidates is None:
            return
        view, index = self._where
        if self.layer.data.shape != one_plane(view):
            return
        translate = self.layer_translate(view, index)
        if not np.allclose(self.layer.translate, translate):
            self.layer.translate = translate
        view.plane_of(self.layer.data, (0,) * len(index))[self.mask] = self.selected + 1
        self._drawn = (view, index)
        self.layer.refresh()

    def _on_removed(self, event: Any) -> None:
        if event.value is self.layer:
            self.layer = None
            self._drawn = None


def one_plane(view: PlaneView) -> tuple[int, ...]:
    """The labels-space shape of one plane of ``view``: 1 along every stack axis."""
    return tuple(n if j in view.plane_axes else 1 for j, n in enumerate(view.shape))


class CandidateButtons(QWidget):
    """Three radio buttons, "1: 0.93", one per candidate with its predicted IoU."""

    chosen = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.group = QButtonGroup(self)
        self.buttons = []
        for i in range(3):
            button = QRadioButton(f"{i + 1}: -")
            button.setToolTip(f"Candidate {i + 1} and its predicted IoU (key {i + 1})")
            self.group.addButton(button, i)
            layout.addWidget(button)
            self.buttons.append(button)
        self.group.idClicked.connect(self.chosen.emit)
        self.set_scores(None, 0)

    def set_scores(self, scores: np.ndarray | None, selected: int) -> None:
        """Show ``scores`` (or dashes when None) and check button ``selected``."""
        n = 0 if scores is None else len(scores)
        for i, button in enumerate(self.buttons):
            button.setText(f"{i + 1}: {scores[i]:.2f}" if i < n else f"{i + 1}: -")
            button.setEnabled(i < n)
        self.group.setExclusive(n > 0)
        for i, button in enumerate(self.buttons):
            button.setChecked(n > 0 and i == selected)
