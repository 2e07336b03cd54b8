"""An image layer seen as a stack of 2D planes, and where the viewer is in that stack.

Three coordinate spaces meet here: the image layer's data axes (which may include a
channel axis and, for RGB, a colour axis), the *labels space* shared by the output,
candidate and prompt layers (the image axes without channels and colour), and a
plane's (row, col) pixels. Indices of planes are the same tuple in every space.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..embeddings.engine import Index, PlaneSource


@dataclass(frozen=True)
class PlaneView:
    """How an image layer's planes map to labels space.

    ``image_axes[j]`` is the image data axis behind labels axis ``j``;
    ``plane_axes`` are the (row, col) labels axes shown on screen.
    """

    layer: Any  # napari.layers.Image
    source: PlaneSource
    image_axes: tuple[int, ...]
    plane_axes: tuple[int, int]

    @classmethod
    def from_layer(cls, layer: Any, displayed: tuple[int, int], channel_axis: int | None = None) -> PlaneView:
        """``displayed`` are the image layer's data axes shown as (rows, cols)."""
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        rgb = bool(getattr(layer, "rgb", False))
        source = PlaneSource(data, plane_axes=displayed, rgb=rgb, channel_axis=channel_axis)
        image_axes = tuple(a for a in range(layer.ndim) if a != source.channel_axis)
        plane_axes = (image_axes.index(source.plane_axes[0]), image_axes.index(source.plane_axes[1]))
        return cls(layer, source, image_axes, plane_axes)

    @property
    def ndim(self) -> int:
        """Number of labels-space axes."""
        return len(self.image_axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of a labels layer that matches the image."""
        return tuple(int(self.source.data.shape[a]) for a in self.image_axes)

    @property
    def stack_axes(self) -> tuple[int, ...]:
        """Labels-space axes indexed by a plane :data:`Index`."""
        return tuple(j for j in range(self.ndim) if j not in self.plane_axes)

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.shape[self.plane_axes[0]], self.shape[self.plane_axes[1]]

    def scale_translate(self) -> tuple[np.ndarray, np.ndarray]:
        """Scale and translate of the image layer, restricted to labels space."""
        axes = list(self.image_axes)
        return np.asarray(self.layer.scale)[axes], np.asarray(self.layer.translate)[axes]

    def spacing_along(self, axis: int) -> tuple[float, float, float]:
        """The voxel size along stack axis ``axis`` (a position in an :data:`Index`) and the
        plane's rows and columns: the image layer's ``scale``."""
        scale, _ = self.scale_translate()
        return (float(scale[self.stack_axes[axis]]), float(scale[self.plane_axes[0]]),
                float(scale[self.plane_axes[1]]))

    def stack_axis_names(self, viewer_labels: Sequence[str] = ()) -> list[str]:
        """A name for each stack axis (the positions of an :data:`Index`): the image layer's
        axis label, else the viewer's (``viewer.dims.axis_labels``), else ``"axis j"``."""
        layer_labels = tuple(getattr(self.layer, "axis_labels", ()) or ())
        offset = len(viewer_labels) - self.layer.ndim
        names = []
        for j in self.stack_axes:
            a = self.image_axes[j]
            candidates = [layer_labels[a] if a < len(layer_labels) else "",
                          viewer_labels[a + offset] if 0 <= a + offset < len(viewer_labels) else ""]
            names.append(next((str(c) for c in candidates if _named(c)), f"axis {a}"))
        return names

    def world_point(self, world_point: Any, index: Index) -> np.ndarray:
        """``world_point`` (``viewer.dims.point``, layer dims last) moved to plane ``index``."""
        point = np.asarray(world_point, dtype=float).copy()
        offset = len(point) - self.layer.ndim
        data = np.asarray(self.layer.world_to_data(point[offset:]), dtype=float)
        for j, i in zip(self.stack_axes, index):
            data[self.image_axes[j]] = i
        point[offset:] = np.asarray(self.layer.data_to_world(data), dtype=float)
        return point

    def index_at(self, world_point: Any) -> Index:
        """The plane index under a viewer's world position (``viewer.dims.point``)."""
        coords = np.asarray(self.layer.world_to_data(world_point), dtype=float)
        out = []
        for j in self.stack_axes:
            n = self.shape[j]
            out.append(int(np.clip(np.round(coords[self.image_axes[j]]), 0, n - 1)))
        return tuple(out)

    def plane_point(self, world_point: Any) -> tuple[float, float]:
        """The plane (row, col) under a viewer's world position (may lie off the plane)."""
        coords = np.asarray(self.layer.world_to_data(world_point), dtype=float)
        r, c = (float(coords[self.image_axes[j]]) for j in self.plane_axes)
        return r, c

    def on_plane(self, coords: np.ndarray, index: Index) -> np.ndarray:
        """Which rows of labels-space ``coords`` (N, ndim) lie on plane ``index``."""
        coords = np.asarray(coords, dtype=float).reshape(-1, self.ndim)
        if not self.stack_axes:
            return np.ones(len(coords), dtype=bool)
        stack = np.round(coords[:, list(self.stack_axes)])
        return np.all(stack == np.asarray(index, dtype=float), axis=1)

    def to_plane(self, coords: np.ndarray) -> np.ndarray:
        """Labels-space coords (N, ndim) -> plane (row, col) pixels (N, 2)."""
        coords = np.asarray(coords, dtype=float).reshape(-1, self.ndim)
        return coords[:, list(self.plane_axes)]

    def from_plane(self, rc: np.ndarray, index: Index) -> np.ndarray:
        """Plane (row, col) pixels (N, 2) on plane ``index`` -> labels-space coords (N, ndim)."""
        rc = np.asarray(rc, dtype=float).reshape(-1, 2)
        out = np.zeros((len(rc), self.ndim))
        out[:, list(self.plane_axes)] = rc
        for j, i in zip(self.stack_axes, index):
            out[:, j] = i
        return out

    def plane_of(self, array: np.ndarray, index: Index) -> np.ndarray:
        """A view of one plane of a labels-space numpy ``array``, in (row, col) order."""
        sel: list[Any] = [slice(None)] * self.ndim
        for j, i in zip(self.stack_axes, index):
            sel[j] = i
        view = array[tuple(sel)]
        return view if self.plane_axes[0] < self.plane_axes[1] else view.T

    def nd_indices(self, rows: np.ndarray, cols: np.ndarray, index: Index) -> tuple[np.ndarray, ...]:
        """Fancy indices into a labels-space array for plane pixels (rows, cols)."""
        out: list[np.ndarray] = [np.empty(0, dtype=np.intp)] * self.ndim
        out[self.plane_axes[0]] = np.asarray(rows, dtype=np.intp)
        out[self.plane_axes[1]] = np.asarray(cols, dtype=np.intp)
        for j, i in zip(self.stack_axes, index):
            out[j] = np.full(len(rows), i, dtype=np.intp)
        return tuple(out)


TIME_AXIS_NAMES = frozenset({"t", "time", "frame", "frames"})


def is_time_axis(name: str) -> bool:
    """An axis named as time (t, time, frame): its planes are frames of a movie."""
    return name.strip().lower() in TIME_AXIS_NAMES


def _named(label: Any) -> bool:
    """A label someone gave, not napari's default (its axis number, "-3" or "0")."""
    text = str(label).strip()
    return bool(text) and not text.lstrip("-").isdigit() and not text.startswith("axis ")


def displayed_axes(viewer: Any, layer: Any) -> tuple[int, int] | None:
    """The layer's data axes shown as (rows, cols), or None in a 3D view."""
    dims = viewer.dims
    if dims.ndisplay != 2:
        return None
    offset = dims.ndim - layer.ndim
    axes = tuple(int(d) - offset for d in dims.displayed)
    if len(axes) != 2 or min(axes) < 0:
        return None
    return axes  # type: ignore[return-value]
