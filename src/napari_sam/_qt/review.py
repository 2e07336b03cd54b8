"""The dock's "Refine labels": any labels layer (Cellpose, StarDist, an older run) is
re-segmented with SAM on the plane on screen into a new layer, whose objects are then
listed worst first. A click on a row goes to that object; a box or click there and Commit
redraws it under its own id (one Undo takes it back). The given layer is never written.
The computation is :func:`napari_sam.refine_labels`, run by :func:`~napari_sam.interactive.jobs.refine_job`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject

from ..embeddings.engine import Index
from ..interactive.jobs import refine_job
from ..interactive.planes import PlaneView
from ..segmentation.refine_labels import RefinedLabels
from .layers import add_quietly, camera
from .object_list import REFINE
from .workers import BackgroundJob

if TYPE_CHECKING:
    from .widget import SamWidget

CANCEL_REFINE = "Cancel refining"


class LabelReview(QObject):
    """Refining a labels layer and reviewing its objects for one :class:`~.widget.SamWidget`."""

    def __init__(self, host: SamWidget) -> None:
        super().__init__(host)
        self.host, self.ui = host, host.ui
        self.job = BackgroundJob("SAM: refining labels", self)
        self.layer: Any = None  # the refined labels layer under review
        self.where: tuple[PlaneView, Index] | None = None  # its image and plane
        self.current: int | None = None  # the object gone to last
        self.ui.refine.clicked.connect(self.refine)
        self.ui.review.jump.connect(self.go_to)
        self.job.done.connect(self._on_refined)
        self.job.failed.connect(lambda message: self._ended(f"refining failed: {message}"))
        self.job.cancelled.connect(lambda: self._ended("refining cancelled: no layer added"))

    def detach(self) -> None:
        """The widget is closing: stop the work (its result is then dropped)."""
        self.job.cancel()

    def refine(self) -> None:
        """Refine the objects of the chosen labels layer on the plane on screen; while that
        runs, the button cancels it."""
        host = self.host
        if self.job.busy:
            self.job.cancel()
            return
        if host.engine is None or host.view is None or host.index is None:
            host.set_status("refine labels: wait for the model and an image")
            return
        given = self.ui.output.layer()
        if given is None:
            host.set_status("refine labels: choose the labels layer to refine under 'labels'")
            return
        view, index = host.view, host.index
        plane = np.array(view.plane_of(given.data, index))
        if not plane.any():
            host.set_status(f"refine labels: {given.name!r} has no objects on this plane")
            return
        self.job.start(refine_job(host.engine, view, index, plane), (view, index, given))
        self.ui.refine.setText(CANCEL_REFINE)
        host.set_status(f"refining the objects of {given.name!r} ... (Cancel stops it)")

    def _on_refined(self, refined: RefinedLabels, context: tuple[Any, ...]) -> None:
        from napari.layers import Labels

        host = self.host
        if host.closed:
            return
        view, index, given = context
        data = np.array(given.data)  # the given layer is copied, never written
        view.plane_of(data, index)[...] = refined.labels
        layer = Labels(data, name=f"{given.name} refined", scale=given.scale, translate=given.translate,
                       metadata={**given.metadata, **host.output_metadata(view)})
        add_quietly(host.viewer, layer)
        self.layer, self.where, self.current = layer, (view, index), None
        if host.view is not None and host.view.layer is view.layer:
            self.ui.output.set_layer(layer)
        self.ui.review.show_objects(refined)
        self._ended(f"refined {len(refined.ids)} objects into {layer.name!r} ({given.name!r} is unchanged); "
                    "the list below shows them worst first")

    def reviewing(self, labels: Any, view: PlaneView, index: Index) -> int | None:
        """The object a commit into ``labels`` on (``view``, ``index``) redraws: the one
        gone to last in the review list, if that is where the user is; else None."""
        if self.current is None or self.layer is None or labels is not self.layer or self.where is None:
            return None
        where_view, where_index = self.where
        if where_view.layer is not view.layer or where_index != index or self.layer not in self.host.viewer.layers:
            return None
        return self.current

    def corrected(self, label: int) -> None:
        """``label`` was redrawn: mark it and go to the next object not corrected yet."""
        following = self.ui.review.mark_corrected(label)
        self.current = None
        if following is not None:
            self.go_to(following)

    def go_to(self, label: int) -> None:
        """Centre the view on object ``label`` of the refined layer and select it there."""
        host, layer = self.host, self.layer
        if layer is None or self.where is None or layer not in host.viewer.layers:
            return
        view, index = self.where
        mask = np.asarray(view.plane_of(layer.data, index)) == label
        if not mask.any():
            host.set_status(f"object {label} is no longer in {layer.name!r}")
            return
        rows, cols = np.nonzero(mask)
        centre = view.from_plane(np.array([[rows.mean(), cols.mean()]]), index)[0]
        viewer = host.viewer
        point = list(view.world_point(viewer.dims.point, index))
        point[len(point) - layer.ndim:] = np.asarray(layer.data_to_world(centre))  # layer dims come last
        viewer.dims.point = tuple(point)
        camera(viewer).center = tuple(point[d] for d in viewer.dims.displayed)
        layer.selected_label = label
        self.current = label
        self.ui.review.select(label)
        host.set_status(f"object {label}: a box or click, then Commit, redraws it")

    def forget(self) -> None:
        """Another image or a removed layer: the list no longer applies."""
        if self.where is not None and (self.host.view is None or self.where[0].layer is not self.host.view.layer
                                       or self.layer not in self.host.viewer.layers):
            self.layer, self.where, self.current = None, None, None
            self.ui.review.clear()

    def _ended(self, status: str) -> None:
        self.ui.refine.setText(REFINE)
        self.host.set_status(status)
