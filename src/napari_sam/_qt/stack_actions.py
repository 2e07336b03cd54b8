"""The dock's stack actions: commit the chosen candidate through a stack axis (following
SAM 2.1's memory with such a model, else motion on time axes and intensity on z), carry
all objects of a plane, and show the result's confidence per frame with a way to go there.
The work runs on a background job; the Qt-free parts are :mod:`napari_sam.interactive.jobs`
and :mod:`~napari_sam.interactive.commit`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject

from ..embeddings.engine import Index, along
from ..interactive.commit import commit_planes, extend_objects
from ..interactive.jobs import label_planes, propagate_all_job, propagation_job
from ..interactive.planes import PlaneView, is_time_axis
from ..interactive.stack import PlaneStack
from ..segmentation.tracking import Track
from .controls import CANCEL_PROPAGATE, PROPAGATE, PROPAGATE_ALL
from .workers import BackgroundJob

if TYPE_CHECKING:
    from .widget import SamWidget


class StackActions(QObject):
    """Propagation through the stack for one :class:`~.widget.SamWidget`, whose form,
    engine, candidates and prompts it uses."""

    def __init__(self, host: SamWidget) -> None:
        super().__init__(host)
        self.host, self.ui = host, host.ui
        self.job = BackgroundJob("SAM: propagating through the stack", self)
        self._propagated: tuple[PlaneView, Index, int] | None = None  # (view, start index, axis) of the last run
        self.ui.propagate.clicked.connect(self.propagate)
        self.ui.propagate_all.clicked.connect(self.propagate_all)
        self.ui.through.currentIndexChanged.connect(lambda _: self._follow_for_axis())
        self.ui.frames.jump.connect(self.go_to_frame)
        self.job.done.connect(self._on_propagated)
        self.job.failed.connect(lambda message: self._ended(f"propagation failed: {message}"))
        self.job.cancelled.connect(lambda: self._ended("propagation cancelled: nothing committed"))

    def detach(self) -> None:
        """The widget is closing: stop the work (its result is then dropped)."""
        self.job.cancel()

    def fill_axes(self) -> None:
        """The stack axes to propagate through, by their napari names; the one next to the
        plane first chosen, as before (z in (t, z, y, x))."""
        combo, view = self.ui.through, self.host.view
        if self._propagated is not None and (view is None or self._propagated[0].layer is not view.layer):
            self._propagated = None  # another image: its list no longer applies
            self.ui.frames.clear()
        combo.blockSignals(True)
        combo.clear()
        if view is not None:
            names = view.stack_axis_names(tuple(self.host.viewer.dims.axis_labels))
            for pos, name in enumerate(names):
                n = view.shape[view.stack_axes[pos]]
                combo.addItem(f"{name} ({n} {'frames' if is_time_axis(name) else 'slices'})", pos)
            combo.setCurrentIndex(len(names) - 1)
        combo.blockSignals(False)
        self._follow_for_axis()

    def _through(self) -> tuple[int, str] | None:
        """The chosen stack axis (its position in an index) and its name."""
        pos = self.ui.through.currentData()
        if pos is None or self.host.view is None:
            return None
        return int(pos), self.host.view.stack_axis_names(tuple(self.host.viewer.dims.axis_labels))[int(pos)]

    def _follow_for_axis(self) -> None:
        """SAM 2.1 models follow by their memory on any axis; otherwise movies follow motion
        and z stacks brightness (the user may change it)."""
        through = self._through()
        time = through is not None and is_time_axis(through[1])
        way = "memory" if self.ui.follow.findData("memory") >= 0 else "motion" if time else "intensity"
        self.ui.follow.setCurrentIndex(self.ui.follow.findData(way))

    def model_changed(self) -> None:
        """Offer (and choose) following by memory while a SAM 2.1 model is in use; without
        one, a choice of memory goes back to the axis's default."""
        engine = self.host.engine
        memory = engine is not None and bool(getattr(engine.predictor, "is_sam2", False))
        chosen = self.ui.follow.currentData()
        if self.ui.offer_memory(memory) and (memory or chosen == "memory"):
            self._follow_for_axis()

    def propagate(self) -> None:
        """Carry the chosen candidate through the stack and commit it as one 3D object; while
        that runs, cancel it."""
        if self.job.busy:
            self.job.cancel()
            return
        where, mask = self.host.candidate_view.where, self.host.candidate_view.mask
        if where is None or mask is None or self.host.engine is None:
            self.host.set_status("nothing to propagate: draw a box around an object first")
            return
        view, index = where
        through = self._through()
        if not index or through is None:
            self.host.set_status("nothing to propagate through: this image is a single plane")
            return
        axis, name = through
        noun = "frame" if is_time_axis(name) else "slice"
        stack = PlaneStack(view.source, index, axis)
        # Prompts on other slices of this stack correct the propagation there.
        use_points = not self.host.box_only
        fixes = {k: p for k in range(stack.shape[0]) if k != index[axis]
                 and not (p := self.host.prompts.for_plane(view, stack.at(k), use_points=use_points)).empty}
        self.ui.frames.clear()
        job = propagation_job(self.host.engine, stack, index[axis], mask, fixes, self.ui.follow.currentData(),
                              view.spacing_along(axis))
        self.job.start(job, (view, index, axis, noun, [stack.at(k) for k in fixes]))
        self.ui.propagate.setText(CANCEL_PROPAGATE)
        self.host.set_status(f"propagating through the {noun}s ... (P again cancels)")

    def propagate_all(self) -> None:
        """Carry every object of the output labels on the plane on screen through the stack,
        each keeping its id; while that runs, cancel it."""
        if self.job.busy:
            self.job.cancel()
            return
        labels, view, index, through = self.ui.output.layer(), self.host.view, self.host.index, self._through()
        if self.host.engine is None or view is None or index is None:
            return
        if not index or through is None:
            self.host.set_status("nothing to propagate through: this image is a single plane")
            return
        plane = None if labels is None else np.asarray(view.plane_of(labels.data, index))
        if plane is None or not plane.any():
            self.host.set_status("no objects on this plane to propagate: commit some first")
            return
        axis, name = through
        noun = "frame" if is_time_axis(name) else "slice"
        stack = PlaneStack(view.source, index, axis)
        self.ui.frames.clear()
        job = propagate_all_job(self.host.engine, stack, index[axis], plane, self.ui.follow.currentData(),
                                view.spacing_along(axis))
        self.job.start(job, (view, index, axis, noun, labels))
        self.ui.propagate_all.setText(CANCEL_PROPAGATE)
        self.host.set_status(f"propagating {len(np.unique(plane)) - 1} objects through the {noun}s ... (again cancels)")

    def _on_propagated(self, result: Any, context: tuple[Any, ...]) -> None:
        if self.host.closed:
            return
        if isinstance(result, dict):
            self._on_propagated_all(result, context)
            return
        track: Track = result
        view, index, axis, noun, fixed = context
        if not track.frames:
            self._ended("nothing committed: the object was not found")
            return
        if view.layer not in self.host.viewer.layers:
            self._ended("nothing committed: its image was closed")
            return
        labels = self.host.output_layer(view)
        try:
            new_id = commit_planes(labels, ((k, track.mask(k)) for k in sorted(track.frames)), view, index, axis,
                                   overwrite=self.ui.overwrite.isChecked())
        except ValueError as exc:
            self._ended(f"nothing committed: {exc}")
            return
        for at in [index, *fixed]:
            self.host.prompts.clear(view, at)
        self._propagated = (view, index, axis)
        unsure = track.unsure()
        self.ui.frames.show_confidence(track.confidence(), unsure, noun)
        first, last = track.span
        flagged = f"; unsure: {', '.join(map(str, unsure))}" if unsure else ""
        self._ended(f"committed object {new_id} through {noun}s {first}-{last}{flagged} to "
                    f"{labels.name!r} (one Undo removes it)")

    def _on_propagated_all(self, tracks: dict[int, Track], context: tuple[Any, ...]) -> None:
        view, index, axis, noun, labels = context
        if labels not in self.host.viewer.layers:
            self._ended("nothing committed: the labels layer was closed")
            return
        try:
            painted = extend_objects(labels, label_planes(tracks), view, index, axis,
                                     overwrite=self.ui.overwrite.isChecked())
        except ValueError as exc:
            self._ended(f"nothing committed: {exc}")
            return
        unsure = sum(len(t.unsure()) for t in tracks.values())
        self._ended(f"carried {len(tracks)} objects through the {noun}s ({painted} pixels added to "
                    f"{labels.name!r}, {unsure} {noun}s unsure; one Undo removes them)")

    def go_to_frame(self, k: int) -> None:
        """Show frame (slice) ``k`` of the last propagation's stack axis."""
        view = self.host.view
        if self._propagated is None or view is None or self._propagated[0].layer is not view.layer:
            return
        _, index, axis = self._propagated
        current = self.host.index if self.host.index is not None else index
        point = view.world_point(self.host.viewer.dims.point, along(current, axis, k))
        self.host.viewer.dims.point = tuple(point)

    def _ended(self, status: str) -> None:
        self.ui.propagate.setText(PROPAGATE)
        self.ui.propagate_all.setText(PROPAGATE_ALL)
        self.host.set_status(status)

