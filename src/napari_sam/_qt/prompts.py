"""The prompt layers: a Points layer (positive/negative clicks) and a Shapes layer (boxes).

They live in labels space (see :mod:`napari_sam.interactive.planes`), so their data coordinates are the image's.
Shift+click adds a point of the opposite polarity; :attr:`PromptLayers.negative` flips
the default. Every finished edit is announced by one of :class:`PromptLayers`' signals.

The layers carry ``metadata["napari_sam"]`` ("points" / "boxes"), so a widget opened
again adopts the layers of the one before instead of adding a second set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Points, Shapes
from qtpy.QtCore import QObject, Signal

from ..embeddings.engine import Index
from ..prompting.service import click_box
from ..interactive.planes import PlaneView
from ..interactive.prompts import PlanePrompts

POSITIVE_COLOR = np.array([0.2, 1.0, 0.2, 1.0])
NEGATIVE_COLOR = np.array([1.0, 0.2, 0.8, 1.0])
BOX_COLOR = "#ffd21f"
_FINISHED = ("added", "changed", "removed")
ROLE = "napari_sam"  # metadata key naming the widget's own layers


def own_layer(viewer: Any, role: str, ndim: int, scale: np.ndarray, translate: np.ndarray) -> Any:
    """A layer left by an earlier widget for ``role``, if one fits this geometry."""
    for layer in viewer.layers:
        if (layer.metadata.get(ROLE) == role and layer.ndim == ndim and np.allclose(layer.scale, scale)
                and np.allclose(layer.translate, translate)):
            return layer
    return None


class PromptLayers(QObject):
    """Creates, watches and reads the widget's Points and Shapes layers."""

    points_changed = Signal()  # a point was added, moved or deleted
    boxes_changed = Signal()  # a box was added, moved or deleted
    cleared = Signal()  # :meth:`clear` took the prompts of a plane away
    layers_removed = Signal()  # the user deleted the points or the boxes layer

    def __init__(self, viewer: Any, keys: dict[str, Callable[[], None]], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.keys = keys
        self.negative = False
        self.points: Points | None = None
        self.boxes: Shapes | None = None
        self._shift = False
        self._muted = 0
        self._watchers: dict[int, Callable[[Any], None]] = {}
        viewer.layers.events.removed.connect(self._on_removed)

    # ---------------------------------------------------------------- layers

    def ensure(self, view: PlaneView) -> None:
        """Create the layers for ``view`` if missing or built for another geometry."""
        scale, translate = view.scale_translate()
        for name in ("boxes", "points"):
            layer = getattr(self, name)
            if layer is not None and (layer.ndim != view.ndim or not np.allclose(layer.scale, scale)
                                      or not np.allclose(layer.translate, translate)):
                self._drop(layer)
        # Points below boxes: napari (vispy on Mesa) segfaults drawing the next image when a
        # Points layer is deleted before a Shapes layer above it, as layers.clear() does
        # (napari#6472). Cleared top-down, boxes then points is safe.
        if self.points is None and (old := own_layer(self.viewer, "points", view.ndim, scale, translate)):
            self.points = old
            self._watch(old, "points")
        if self.boxes is None and (old := own_layer(self.viewer, "boxes", view.ndim, scale, translate)):
            self.boxes = old
            self._watch(old, "boxes")
        if self.points is None:
            self.points = Points(ndim=view.ndim, name="SAM points", scale=scale, translate=translate,
                                 features={"positive": np.zeros(0, dtype=bool)},
                                 face_color=POSITIVE_COLOR, border_color="white", size=8,
                                 metadata={ROLE: "points"})
            self.points.feature_defaults = {"positive": True}
            self._add(self.points, "points")
        if self.boxes is None:
            self.boxes = Shapes(ndim=view.ndim, name="SAM boxes", scale=scale, translate=translate,
                                edge_color=BOX_COLOR, face_color="transparent", edge_width=2,
                                metadata={ROLE: "boxes"})
            self._add(self.boxes, "boxes")

    def _add(self, layer: Any, kind: str) -> None:
        self._watch(layer, kind)
        self._muted += 1
        try:
            self.viewer.layers.append(layer)
        finally:
            self._muted -= 1

    def _watch(self, layer: Any, kind: str) -> None:
        """Listen to ``layer``'s edits and give it the widget's keys (undone by :meth:`_unwatch`)."""
        if id(layer) in self._watchers:
            return
        watcher = self._watchers[id(layer)] = lambda event: self._on_data(kind, event)
        layer.events.data.connect(watcher)
        for key, action in self.keys.items():
            layer.bind_key(key, lambda _layer, action=action: action(), overwrite=True)
        if kind == "points":
            layer.mouse_drag_callbacks.insert(0, self._remember_shift)

    def _unwatch(self, layer: Any) -> None:
        watcher = self._watchers.pop(id(layer), None)
        if watcher is None:
            return
        layer.events.data.disconnect(watcher)
        for key in self.keys:
            layer.bind_key(key, None)
        if self._remember_shift in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.remove(self._remember_shift)

    def detach(self) -> None:
        """Stop listening to the viewer and the layers, and unbind the keys; the layers and
        the prompts drawn on them stay for the next widget to adopt."""
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        for layer in (self.boxes, self.points):
            if layer is not None:
                self._unwatch(layer)
        self.points = self.boxes = None

    def activate(self, kind: str) -> None:
        """Make the points ("points") or boxes ("boxes") layer active, in its add mode."""
        layer = self.points if kind == "points" else self.boxes
        if layer is None:
            return
        layer.mode = "add" if kind == "points" else "add_rectangle"
        self.viewer.layers.selection.active = layer

    def remove(self) -> None:
        """Take both layers out of the viewer (the widget is closing or the image went)."""
        for layer in (self.boxes, self.points):  # in this order: see ensure()
            if layer is not None:
                self._drop(layer)

    def _drop(self, layer: Any) -> None:
        self._unwatch(layer)
        if layer is self.points:
            self.points = None
        if layer is self.boxes:
            self.boxes = None
        if layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _on_removed(self, event: Any) -> None:
        layer = event.value
        if layer is self.points or layer is self.boxes:
            self._unwatch(layer)
            self.points = None if layer is self.points else self.points
            self.boxes = None if layer is self.boxes else self.boxes
            self.layers_removed.emit()

    # ---------------------------------------------------------------- events

    def _remember_shift(self, layer: Points, event: Any) -> None:
        self._shift = "Shift" in event.modifiers

    def _on_data(self, kind: str, event: Any) -> None:
        action = str(getattr(event, "action", "changed"))
        if self._muted or action not in _FINISHED:
            return
        if kind == "points" and action == "added":
            self._mark_new_points(event)
        (self.points_changed if kind == "points" else self.boxes_changed).emit()

    def _mark_new_points(self, event: Any) -> None:
        layer = self.points
        if layer is None:
            return
        positive = self.negative == self._shift  # shift flips the default polarity
        self._shift = False
        new = [i % len(layer.data) for i in getattr(event, "data_indices", (-1,))]
        feats = layer.features
        feats.loc[new, "positive"] = positive
        self.restyle()

    def restyle(self) -> None:
        """Colour and shape points by polarity: green discs (+), magenta crosses (-)."""
        layer = self.points
        if layer is None or len(layer.data) == 0:
            return
        pos = layer.features["positive"].to_numpy(dtype=bool)
        layer.face_color = np.where(pos[:, None], POSITIVE_COLOR, NEGATIVE_COLOR)
        layer.symbol = np.where(pos, "disc", "cross")

    # ---------------------------------------------------------------- reading

    def for_plane(self, view: PlaneView, index: Index, use_points: bool = True) -> PlanePrompts:
        """The prompts drawn on plane ``index``: points, labels, and the newest box."""
        pts, labels = np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
        if use_points and self.points is not None and len(self.points.data):
            on = view.on_plane(self.points.data, index)
            pts = view.to_plane(self.points.data[on])
            labels = self.points.features["positive"].to_numpy(dtype=bool)[on].astype(np.int64)
        box = None
        if self.boxes is not None:
            for shape in reversed(self.boxes.data):
                if view.on_plane(shape, index).all():
                    rc = view.to_plane(shape)
                    box = np.concatenate([rc.min(axis=0), rc.max(axis=0)])
                    break
        return PlanePrompts(pts, labels, box)

    def add_box(self, view: PlaneView, index: Index, box: tuple[float, float, float, float]) -> None:
        """Draw a rectangle (plane pixels) on plane ``index``."""
        if self.boxes is None:
            return
        r0, c0, r1, c1 = box
        corners = view.from_plane(np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]]), index)
        self.boxes.add_rectangles(corners)

    def points_to_boxes(self, view: PlaneView, diameter: float | None = None) -> tuple[int, int, int]:
        """For box-only models: a box around the object under each positive point, for
        objects of about ``diameter`` pixels (the one policy: :func:`~napari_sam.prompting.service.click_box`).

        All points are removed. Returns (boxes added, negative points dropped, clicks that
        found no object).
        """
        points = self.points
        if points is None or not len(points.data):
            return 0, 0, 0
        positive = points.features["positive"].to_numpy(dtype=bool)
        added = missed = 0
        for coords in points.data[positive]:
            index = tuple(int(round(coords[j])) for j in view.stack_axes)
            rc = view.to_plane(coords)[0]
            inside = all(0 <= i < n for i, n in zip(index, view.source.stack_shape)) and all(
                -0.5 <= v < n - 0.5 for v, n in zip(rc, view.plane_shape))
            box = click_box(view.source.plane(index), tuple(rc), diameter) if inside else None
            if box is None:
                missed += 1
            else:
                self.add_box(view, index, box)
                added += 1
        self._muted += 1
        try:
            points.selected_data = set(range(len(points.data)))
            points.remove_selected()
        finally:
            self._muted -= 1
        return added, int((~positive).sum()), missed

    def clear(self, view: PlaneView, index: Index) -> None:
        """Delete the prompts on plane ``index``; emit :attr:`cleared` once."""
        self._muted += 1
        try:
            if self.points is not None and len(self.points.data):
                on = np.nonzero(view.on_plane(self.points.data, index))[0]
                if len(on):
                    self.points.selected_data = {int(i) for i in on}
                    self.points.remove_selected()
            if self.boxes is not None and self.boxes.nshapes:
                on = [i for i, s in enumerate(self.boxes.data) if view.on_plane(s, index).all()]
                if on:
                    self.boxes.selected_data = set(on)
                    self.boxes.remove_selected()
        finally:
            self._muted -= 1
        self.cleared.emit()
