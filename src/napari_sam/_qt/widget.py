"""The napari dock widget: image, model, prompts -> three scored candidates -> undoable commit.

This module only wires things together. The Qt-free parts of the loop (plane geometry,
click -> box, the commit, the background jobs) live in :mod:`napari_sam.interactive`; here,
prompt layers are in :mod:`.prompts`, candidate display in :mod:`.candidates`, the labels
layers made in :mod:`.layers`, decoding in :mod:`.decoding`, propagation through the
stack in :mod:`.stack_actions`, refining a labels layer and reviewing its objects in
:mod:`.review`, and all model work in :mod:`.workers` (never on the GUI thread).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QVBoxLayout, QWidget

from ..embeddings.engine import Engine, EmbeddingCache, Index, PlaneReady
from ..interactive.commit import commit_mask, replace_object
from ..interactive.jobs import everything_job
from ..interactive.planes import PlaneView, displayed_axes
from ..model.loading import spec_for
from ..model.weights import checkpoint_status
from .candidates import CandidateView
from .controls import (
    CANCEL, CHECKPOINT_FILE, CHECKPOINT_FILTER, EVERYTHING_PLANE, EVERYTHING_STACK, Controls, LayerCombo,
)
from .lifecycle import Undocked
from .layers import add_labels, camera, new_output_layer
from .decoding import PromptDecoding
from .review import LabelReview
from .stack_actions import StackActions
from .prompts import ROLE, PromptLayers
from .workers import BackgroundJob, EmbeddingWorker, ModelLoader

PREFETCH = 1  # neighbouring planes embedded ahead, each side
SCRUB_DELAY_MS = 80
TILES_FOLLOW_MS = 400  # the cursor rests this long: the tiles around it are embedded first
SIZE_FROM_OBJECTS = 5  # the object size follows the median of the first objects committed
LOAD_DELAY_MS = 300  # napari lays out the new dock and redraws first
BOX_HINT = ("{model} is trained on boxes: your click became a box around the object under it. "
            "Drag a rectangle for full control.")
NO_OBJECT_HINT = "No object under your click: nothing to segment there."
IMAGE_KEY = "napari_sam_image"  # metadata of an output labels layer: the image it was made for
GEOMETRY = ("data", "scale", "translate")  # image layer events that change the planes


def image_key(layer: Any) -> str:
    """A name for an image layer that outlives renaming: its napari unique id."""
    return str(getattr(layer, "unique_id", id(layer)))


class SamWidget(QWidget):
    """Segment Anything in napari: prompts, three candidates with scores, commit, undo."""

    def __init__(self, napari_viewer: Any, cache: EmbeddingCache | None = None, prefetch_tiles: bool = True) -> None:
        """``prefetch_tiles``: embed the zoomed tiles of the plane on screen ahead of the
        prompts (else each prompt embeds its own window when first needed)."""
        super().__init__()
        self.prefetch_tiles = prefetch_tiles
        self._committed_sizes: dict[Any, list[float]] = {}  # source signature -> diameters committed
        self._fixed_size: set[Any] = set()  # sources whose object size the user typed
        self._torn_down = False
        self._listening: list[tuple[Any, Any]] = []  # (viewer emitter, callback): undone on close
        self._outputs: dict[str, Labels] = {}  # image_key -> the labels layer chosen for it
        self._loaded: tuple[str, str, Engine] | None = None  # (model, device, engine) that loaded last
        self._requested: str | None = None  # the model (name or checkpoint path) loading or loaded last
        self._store_paths: dict[Any, str] = {}  # source signature -> the embedding store opened for it
        self._store_error_shown: str | None = None  # the engine's store error the user was told about
        self.viewer = viewer = napari_viewer
        self.cache = cache if cache is not None else EmbeddingCache()
        self.engine: Engine | None = None
        self.view: PlaneView | None = None
        self.index: Index | None = None
        self._image: Image | None = None
        self._axis = -1  # stack axis moved last: prefetch along it
        self._model_token = 0
        self.embedding_worker = EmbeddingWorker(self)
        self.loader = ModelLoader(self.cache, self)
        self.everything = BackgroundJob("SAM: segmenting everything", self)
        keys = {"1": lambda: self.choose(0), "2": lambda: self.choose(1), "3": lambda: self.choose(2),
                "N": self.next_candidate, "C": self.commit, "X": self.clear, "T": self.toggle_negative,
                "P": lambda: self.stack.propagate(), "Control-Z": self.undo}
        self.prompts = PromptLayers(viewer, keys)
        self.candidate_view = CandidateView(viewer)
        self.decoding = PromptDecoding(self.prompts, self.candidate_view, self)
        self.ui = Controls(LayerCombo(viewer, lambda layer: isinstance(layer, Image), "(choose an image)"),
                           LayerCombo(viewer, self._fits_output, "(new labels layer)"))
        QVBoxLayout(self).addWidget(self.ui)
        self.stack = StackActions(self)
        self.review = LabelReview(self)
        self.propagator = self.stack.job
        # Layer and dims events arrive mid-change (even while napari clears the layer
        # list): rebuild once, after the event loop settles, never inside them.
        self._rebuild_timer = QTimer(self)
        self._rebuild_timer.setSingleShot(True)
        self._rebuild_timer.timeout.connect(self._rebuild_view)
        # While the user scrubs through planes, embed only where they stop; the short
        # delay also lets napari draw the new plane before the encoder competes for CPU.
        self._request_timer = QTimer(self)
        self._request_timer.setSingleShot(True)
        self._request_timer.timeout.connect(self._request_embedding)
        self._tiles_timer = QTimer(self)
        self._tiles_timer.setSingleShot(True)
        self._tiles_timer.timeout.connect(self._follow_cursor)
        self._connect()
        # napari's close button takes a dock's widget out without closing it: let go then.
        self._undocked = Undocked(self, self.close_widget)
        self._pick_first_image()
        # After the first rebuild has made the layers: loading a model holds the GIL in
        # long stretches, which would make building the layers stall the GUI for seconds.
        QTimer.singleShot(LOAD_DELAY_MS, self._load_model)

    # ------------------------------------------------------------------ wiring

    def _connect(self) -> None:
        ui, v = self.ui, self.viewer
        ui.image.layer_changed.connect(self.set_image)
        ui.channels.toggled.connect(self.schedule_rebuild)
        ui.model.currentIndexChanged.connect(lambda _: self._load_model())
        ui.device.currentIndexChanged.connect(lambda _: self._load_model())
        # clicked, not toggled: a click on the checked mode brings deleted prompt layers back
        ui.box_mode.clicked.connect(lambda: self._activate("boxes"))
        ui.point_mode.clicked.connect(lambda: self._activate("points"))
        ui.output.layer_changed.connect(self._remember_output)
        ui.negative.toggled.connect(lambda on: setattr(self.prompts, "negative", on))
        ui.candidate_buttons.chosen.connect(self.choose)
        ui.commit.clicked.connect(self.commit)
        ui.clear.clicked.connect(self.clear)
        ui.undo.clicked.connect(self.undo)
        ui.everything_plane.clicked.connect(lambda: self.segment_everything(whole_stack=False))
        ui.everything_stack.clicked.connect(lambda: self.segment_everything(whole_stack=True))
        self.everything.done.connect(self._on_everything)
        self.everything.failed.connect(lambda message: self._everything_ended(f"segment everything failed: {message}"))
        self.everything.cancelled.connect(lambda: self._everything_ended("segment everything cancelled"))
        ui.store.clicked.connect(self._choose_store)
        for signal, slot in (  # what the prompt layers and the workers report, and who hears it
            (self.prompts.points_changed, self._on_points_changed),
            (self.prompts.boxes_changed, self._predict),
            (self.prompts.cleared, self._predict),
            (self.prompts.layers_removed, self._on_prompt_layers_removed),
            (self.embedding_worker.ready, self._on_plane_ready),
            (self.embedding_worker.idle, self._show_plane_state),  # the last plane's line was drawn while busy
            (self.embedding_worker.failed, self._on_failure),
            (self.decoding.shown, self._show_scores),
            (self.decoding.status, self.set_status),
            (ui.object_size.valueChanged, self._on_object_size_typed),
            (self.loader.loaded, self._on_model_loaded),
            (self.loader.failed, self._on_model_failed),
        ):
            signal.connect(slot)
        self._listen(v.dims.events.current_step, self._on_dims)
        self._listen(v.dims.events.ndisplay, self.schedule_rebuild)
        self._listen(v.dims.events.order, self.schedule_rebuild)
        self._listen(v.layers.events.inserted, self._on_inserted)
        self._listen(v.cursor.events.position, self._on_cursor)
        self._listen(camera(v).events.center, self._on_cursor)

    def _listen(self, emitter: Any, callback: Any) -> None:
        emitter.connect(callback)
        self._listening.append((emitter, callback))

    def _pick_first_image(self) -> None:
        if self._image is None and self.ui.image.count() > 1:
            self.ui.image.setCurrentIndex(1)

    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        if ROLE in layer.metadata and layer.metadata[ROLE] != "labels":
            return  # one of the prompt or candidate layers
        if isinstance(layer, Image):
            self.ui.image.set_layer(layer)  # an image opened now is the one to work on
        else:
            self._pick_first_image()
        # Keep prompts and candidates on top, where they can be seen; not inside the event.
        QTimer.singleShot(0, self._raise_own_layers)

    def _raise_own_layers(self) -> None:
        if self._torn_down:
            return
        layers = self.viewer.layers
        mine = (self.candidate_view.layer, self.prompts.points, self.prompts.boxes)
        own = [layer for layer in mine if layer in layers]
        if own and [layers.index(layer) for layer in own] != list(range(len(layers) - len(own), len(layers))):
            active = layers.selection.active
            layers.move_multiple([layers.index(layer) for layer in own], len(layers))
            if active is not None and active in layers:
                layers.selection.active = active

    def _fits_output(self, layer: Any, view: PlaneView | None = None) -> bool:
        view = view or self.view
        return (isinstance(layer, Labels) and layer is not self.candidate_view.layer
                and view is not None and tuple(layer.data.shape) == view.shape)

    @property
    def box_only(self) -> bool:
        """The loaded model was trained on boxes alone (LiteMedSAM): clicks become boxes."""
        spec = getattr(getattr(self.engine, "predictor", None), "model", None)
        spec = getattr(spec, "spec", None)
        return bool(spec is not None and spec.box_only)

    # ------------------------------------------------------------------ model

    def _load_model(self) -> None:
        name, device = self.ui.model.currentData(), self.ui.device.currentText()
        if name == CHECKPOINT_FILE:
            name = self._choose_checkpoint()
            if name is None:
                return
        self._model_token += 1
        self._requested = name
        self.engine = None
        self.embedding_worker.set_engine(None)
        self._clear_candidates()
        spec, path = spec_for(name)
        fetch = path is None and checkpoint_status(spec)[0] == "needs download"
        how = "downloading (see the activity dock)" if fetch else "loading"
        self.set_status(f"{how} {spec.title} on {device} ...")
        self.loader.load(name, device, self._model_token)

    def _choose_checkpoint(self) -> str | None:
        """Ask for a checkpoint file: its path, which the combo now shows; None if cancelled,
        the combo showing the model chosen before again."""
        path, _ = QFileDialog.getOpenFileName(self, "SAM checkpoint file", "", CHECKPOINT_FILTER)
        combo = self.ui.model
        i = self.ui.add_checkpoint(path) if path else combo.findData(self._requested)
        combo.blockSignals(True)
        combo.setCurrentIndex(max(i, 0))
        combo.blockSignals(False)
        return path or None

    def _on_model_loaded(self, engine: Engine, token: int) -> None:
        if token != self._model_token or self._torn_down:
            return  # a newer choice is already loading, or the widget closed
        self.engine = engine
        self._loaded = (self.ui.model.currentData(), self.ui.device.currentText(), engine)
        self.embedding_worker.set_engine(engine)
        self.set_status(f"model ready: {engine.model_name} on {engine.predictor.device}")
        self.stack.model_changed()
        (self.ui.box_mode if self.box_only else self.ui.point_mode).setChecked(True)
        self._activate("boxes" if self.box_only else "points")
        self.index = None
        self._on_dims()

    def _on_model_failed(self, message: str, token: int) -> None:
        if token != self._model_token or self._torn_down:
            return
        self._on_failure(message)
        if self._loaded is None:
            return
        self._set_hint(f"{self.ui.status.text()}; still using {self._loaded[2].model_name}")
        self.ui.hint.setToolTip(self.ui.status.toolTip())
        # Back to the model that worked: the combos show what is in use.
        name, device, engine = self._loaded
        failed, self._requested = self._requested, name
        for combo, i in ((self.ui.model, self.ui.model.findData(name)), (self.ui.device, self.ui.device.findText(device))):
            combo.blockSignals(True)
            combo.setCurrentIndex(max(i, 0))
            combo.blockSignals(False)
        if failed is not None and failed != name:
            self.ui.remove_checkpoint(failed)  # a file that is no model is not offered again
        self.engine = engine
        self.embedding_worker.set_engine(engine)
        self.stack.model_changed()
        self.index = None
        self._on_dims()

    def _on_failure(self, message: str) -> None:
        """The first line in the status (details in its tooltip), all of it in a notification."""
        first = message.strip().splitlines()[0] if message.strip() else "failed"
        more = first != message.strip()
        self.set_status(first + (" (more in the notification)" if more else ""))
        self.ui.status.setToolTip(message if more else "")
        show_warning(f"SAM: {message}")

    # ------------------------------------------------------------------ disk store

    def _choose_store(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path = QFileDialog.getExistingDirectory(self, "Embedding store (.zarr folder)")
        if path:
            self.open_store(path)

    def open_store(self, path: str) -> bool:
        """Serve the current image's planes from an embedding store made by ``napari-sam embed``
        (for this layer's data and the chosen model); planes embedded here are added to it."""
        from ..embeddings.store import EmbeddingStore, StackLayout

        if self.engine is None or self.view is None:
            self._on_failure("choose an image and wait for the model before opening an embedding store")
            return False
        source = self.view.source
        try:
            layout = StackLayout.of(source.data, source.channel_axis, source.rgb, source.plane_axes)
            store = EmbeddingStore.open(path, self.engine.predictor, layout, create=False)
        except (ValueError, OSError, KeyError) as exc:
            self._on_failure(f"cannot use {path}: {exc}")
            return False
        self.engine.attach_store(source, store)
        self._store_paths[source.signature] = path
        self._store_error_shown = None  # attach_store cleared the engine's store error
        self.set_status(f"embeddings from {path}")
        self._request_embedding()
        return True

    # ------------------------------------------------------------------ image and planes

    def set_image(self, layer: Image | None) -> None:
        """Work on ``layer`` (None: on nothing); prompts and candidates start afresh."""
        self._follow_geometry(False)
        self._image = layer
        self._follow_geometry(True)
        self.schedule_rebuild()

    def _follow_geometry(self, follow: bool) -> None:
        """(Dis)connect the image layer's geometry events from the rebuild."""
        if self._image is not None:
            for name in GEOMETRY:
                emitter = getattr(self._image.events, name)
                (emitter.connect if follow else emitter.disconnect)(self.schedule_rebuild)

    def _remember_output(self, labels: Labels | None) -> None:
        if self._image is not None and labels is not None:
            self._outputs[image_key(self._image)] = labels

    def _output_for_image(self, view: PlaneView | None = None) -> Labels | None:
        """The labels layer the objects of ``view``'s image (default: the one on screen) go
        to: the one chosen for it before, or one made for it (by this widget or an earlier
        one); None: make one on commit."""
        view = view or self.view
        if view is None or (view is self.view and self._image is None):
            return None
        key = image_key(view.layer)
        known = self._outputs.get(key)
        if known is not None and known in self.viewer.layers and self._fits_output(known, view):
            return known
        for layer in self.viewer.layers:
            if layer.metadata.get(IMAGE_KEY) == key and self._fits_output(layer, view):
                return layer
        return None

    def schedule_rebuild(self, event: Any = None) -> None:
        """Re-read the image geometry and slice soon (coalesced, outside layer events)."""
        self._rebuild_timer.start(0)

    def _rebuild_view(self) -> None:
        if self._torn_down:
            return
        self.embedding_worker.cancel()
        self._clear_candidates()
        if self._image is not None and self._image not in self.viewer.layers:
            self._image = None
        self.view, self.index, layer = None, None, self._image
        self._show_plane_state()
        if layer is None:
            self.prompts.remove()
            self.candidate_view.remove()
            self.set_status("select an image layer")
            return
        axes = displayed_axes(self.viewer, layer)
        if axes is None:
            self.set_status("switch to the 2D view (Ctrl+Y) to segment planes")
            return
        channel = 0 if self.ui.channels.isChecked() and not layer.rgb and layer.ndim >= 3 else None
        try:
            self.view = PlaneView.from_layer(layer, axes, channel)
        except (ValueError, IndexError) as exc:
            self.set_status(f"cannot use {layer.name!r}: {exc}")
            return
        self.candidate_view.ensure(self.view)
        self.prompts.ensure(self.view)
        self._raise_own_layers()
        self.ui.output.set_layer(self._output_for_image())
        self.stack.fill_axes()
        self.review.forget()
        self._activate("boxes" if self.ui.box_mode.isChecked() else "points")
        self._on_dims()

    def _on_dims(self, event: Any = None) -> None:
        if self.view is None:
            return
        index = self.view.index_at(self.viewer.dims.point)
        if index == self.index:
            return
        if self.index is not None:
            moved = [k for k, (a, b) in enumerate(zip(index, self.index)) if a != b]
            self._axis = moved[0] if moved else self._axis
        self.index = index
        self._clear_candidates()
        self._request_timer.start(SCRUB_DELAY_MS)
        self._show_plane_state()
        self._show_object_size()
        self._predict()

    def _request_embedding(self) -> None:
        if self.view is not None and self.index is not None:
            near = self._tiles_near() if self.prefetch_tiles else None
            self.embedding_worker.request(self.view.source, self.index, PREFETCH, self._axis, near)
        self._show_plane_state()

    def _tiles_near(self) -> tuple[float, float]:
        """Where the user looks on the plane: the cursor when it is over it, else the
        centre of the view."""
        view = self.view
        h, w = view.plane_shape
        r, c = view.plane_point(self.viewer.cursor.position)
        if 0 <= r < h and 0 <= c < w:
            return r, c
        point = list(self.viewer.dims.point)
        for axis, value in zip(self.viewer.dims.displayed, camera(self.viewer).center[-2:]):
            point[axis] = value
        r, c = view.plane_point(point)
        return float(np.clip(r, 0, h - 1)), float(np.clip(c, 0, w - 1))

    def _on_cursor(self, event: Any = None) -> None:
        if self.prefetch_tiles and self.view is not None and self.engine is not None:
            self._tiles_timer.start(TILES_FOLLOW_MS)

    def _follow_cursor(self) -> None:
        """Embed the missing tiles nearest the cursor next (a cheap re-ordering of the queue)."""
        if self.view is None or self.index is None or self.engine is None or self._torn_down:
            return
        done = self.engine.tiles_embedded(self.view.source, self.index)
        if done is not None and done[0] < done[1]:
            self._request_embedding()

    def _on_plane_ready(self, item: PlaneReady) -> None:
        self._show_object_size()
        self._show_plane_state()
        self._show_store_error(item)

    def _show_store_error(self, item: PlaneReady) -> None:
        """Say once that the engine stopped writing an embedding store (a full disk, say).
        The engine sets the error while embedding ``item``'s plane, whose store it was."""
        error = None if self.engine is None else self.engine.store_error
        if error is None or error == self._store_error_shown:
            return
        self._store_error_shown = error
        path = self._store_paths.get(item.source.signature, "the embedding store")
        self._on_failure(f"embeddings are no longer saved to {path} ({error}); "
                         "they are still computed and kept in memory")

    def _show_object_size(self) -> None:
        """The object size in use for the plane on screen, in its control (0: not measured yet)."""
        size, denoised = None, False
        if self.engine is not None and self.view is not None and self.index is not None:
            size = self.engine.known_object_size(self.view.source, self.index)
            denoised = self.engine.denoises(self.view.source, self.index)
        box = self.ui.object_size
        box.blockSignals(True)
        box.setValue(0 if size is None else int(round(size)))
        # A photon-limited plane is shown to the model denoised: say so where the plane's
        # other measure is shown.
        box.setSuffix(" px · denoised (photon-limited)" if denoised else " px")
        box.blockSignals(False)

    def _on_object_size_typed(self, value: int) -> None:
        if self.engine is None or self.view is None:
            return
        source = self.view.source
        if value <= 0:  # cleared: measure it again
            self._fixed_size.discard(source.signature)
            self.engine.set_object_size(source, None)
        else:
            self._fixed_size.add(source.signature)
            self.engine.set_object_size(source, float(value))
        self._request_embedding()  # the tiles for this size

    def _learn_object_size(self, mask: np.ndarray) -> None:
        """The first objects the user commits tell the objects' size better than the image."""
        if self.engine is None or self.view is None or self.view.source.signature in self._fixed_size:
            return
        sizes = self._committed_sizes.setdefault(self.view.source.signature, [])
        if len(sizes) >= SIZE_FROM_OBJECTS:
            return
        sizes.append(2.0 * float(np.sqrt(np.count_nonzero(mask) / np.pi)))
        self.engine.set_object_size(self.view.source, float(np.median(sizes)))
        self._show_object_size()
        self._request_embedding()

    def _show_plane_state(self) -> None:
        """One line on the embeddings of the plane on screen."""
        view, index, engine = self.view, self.index, self.engine
        if view is None or index is None or engine is None:
            self.ui.plane.setText("")
            return
        where = f"plane {', '.join(map(str, index))}" if index else "image"
        tiles = engine.tiles_embedded(view.source, index)
        if tiles is not None and tiles[0] == tiles[1]:
            state = f"all {tiles[1]} zoomed tiles embedded, prompts answer at once"
        elif tiles is not None and self.embedding_worker.busy:
            state = f"embedding zoomed tiles ({tiles[0]} of {tiles[1]}, nearest the cursor first)"
        elif engine.key(view.source, index) in engine.cache:
            state = "embedded; a prompt embeds its zoomed tile when first needed"
        elif self.embedding_worker.busy:
            state = f"embedding ... ({engine.pending()} more queued)"
        else:
            state = "waiting to be embedded"
        self.ui.plane.setText(f"{where}: {state}")

    # ------------------------------------------------------------------ prompts -> candidates

    def _on_points_changed(self) -> None:
        if self.box_only:
            QTimer.singleShot(0, self._points_to_boxes)  # not inside the layer's own event
        else:
            self._predict()

    def _on_prompt_layers_removed(self) -> None:
        self._clear_candidates()
        self._set_hint("prompt layers deleted: press Clear or pick box/point to bring them back")

    def _points_to_boxes(self) -> None:
        """Box-only model: each positive click becomes a box around the object under it."""
        if self.view is None:
            return
        size = None if self.engine is None or self.index is None else \
            self.engine.known_object_size(self.view.source, self.index)
        added, dropped, missed = self.prompts.points_to_boxes(self.view, size)
        if added or dropped:
            model = self.engine.model_name if self.engine else "this model"
            self._set_hint(BOX_HINT.format(model=model) + (" Negative points are ignored." if dropped else ""))
        elif missed:
            self._set_hint(NO_OBJECT_HINT)

    def _predict(self) -> None:
        if self.view is not None and self.index is not None and self.engine is not None:
            self.decoding.update(self.engine, self.view, self.index, self.box_only)

    # ------------------------------------------------------------------ actions

    def choose(self, i: int) -> None:
        """Choose candidate ``i`` (0-based)."""
        if self.candidate_view.select(i):
            self._show_scores()

    def next_candidate(self) -> None:
        if self.candidate_view.next():
            self._show_scores()

    def toggle_negative(self) -> None:
        self.ui.negative.setChecked(not self.ui.negative.isChecked())

    def commit(self) -> int | None:
        """Write the chosen candidate into the output labels under a new id."""
        where, mask = self.candidate_view.where, self.candidate_view.mask
        if where is None or mask is None:
            self.set_status("nothing to commit: draw a box around an object first")
            return None
        view, index = where
        score = float(self.candidate_view.candidates.scores[self.candidate_view.selected])
        labels = self.output_layer(view)
        redraw = self.review.reviewing(labels, view, index)
        overwrite = self.ui.overwrite.isChecked()
        try:
            if redraw is None:
                new_id = commit_mask(labels, mask, view, index, overwrite=overwrite, score=score)
            else:
                new_id = replace_object(labels, mask, view, index, redraw, overwrite=overwrite, score=score)
        except ValueError as exc:
            self.set_status(f"nothing committed: {exc}")
            return None
        self.prompts.clear(view, index)
        self._learn_object_size(mask)
        done = "committed object" if redraw is None else "redrew object"
        self.set_status(f"{done} {new_id} in {labels.name!r} (Undo, or Ctrl+Z on that layer)")
        if redraw is not None:
            self.review.corrected(redraw)
        return new_id

    @property
    def closed(self) -> bool:
        """The widget has let go of the viewer (its late results are dropped)."""
        return self._torn_down

    def output_layer(self, view: PlaneView) -> Labels:
        """The output labels layer for ``view``'s image: the chosen one, made (and chosen) on
        the first commit. A result that arrives after the user moved on to another image
        goes to its own image's layer, never to the one on screen."""
        on_screen = self.view is not None and self.view.layer is view.layer
        labels = self.ui.output.layer() if on_screen else self._output_for_image(view)
        if labels is None:
            labels = new_output_layer(self.viewer, view, self.output_metadata(view))
            if on_screen:
                self.ui.output.set_layer(labels)
            else:
                self._outputs[image_key(view.layer)] = labels
            self._raise_own_layers()
        return labels

    @staticmethod
    def output_metadata(view: PlaneView) -> dict[str, str]:
        """What marks a labels layer as the output of ``view``'s image (found again by a later widget)."""
        return {ROLE: "labels", IMAGE_KEY: image_key(view.layer)}

    def propagate(self) -> None:
        """Commit the chosen candidate through the stack (see :class:`.stack_actions.StackActions`)."""
        self.stack.propagate()

    def propagate_all(self) -> None:
        """Carry every object of this plane through the stack (see :class:`.stack_actions.StackActions`)."""
        self.stack.propagate_all()

    def segment_everything(self, whole_stack: bool = False) -> None:
        """Segment everything on the plane on screen, or through the stack, into a new labels
        layer; while that runs, either button cancels it."""
        if self.everything.busy:
            self.everything.cancel()
            return
        if self.engine is None or self.view is None or self.index is None:
            self.set_status("segment everything: wait for the model and an image")
            return
        if whole_stack and not self.index:
            self.set_status("segment everything: this image is a single plane; use 'This plane'")
            return
        job = everything_job(self.engine, self.view, self.index, whole_stack, self.ui.auto_params())
        self.everything.start(job, (self.view, self.index))
        for button in (self.ui.everything_plane, self.ui.everything_stack):
            button.setText(CANCEL)
        self.set_status("segmenting everything ... (Cancel stops it)")

    def _on_everything(self, labels: Any, context: tuple[Any, ...]) -> None:
        if self._torn_down:
            return
        view, index = context
        layer = add_labels(self.viewer, view, index, labels)
        self._raise_own_layers()
        self._everything_ended(f"segment everything: {int(labels.max())} objects in {layer.name!r}")

    def _everything_ended(self, status: str) -> None:
        self.ui.everything_plane.setText(EVERYTHING_PLANE)
        self.ui.everything_stack.setText(EVERYTHING_STACK)
        self.set_status(status)

    def undo(self) -> None:
        """Undo the last edit of the output labels layer (a commit is one edit)."""
        labels = self.ui.output.layer()
        if labels is None:
            self.set_status("nothing to undo: no labels layer chosen")
            return
        if not getattr(labels, "_undo_history", True):
            self.set_status(f"nothing to undo on {labels.name!r}")
            return
        labels.undo()
        self.set_status(f"undone: the last edit of {labels.name!r} (Ctrl+Z on that layer undoes more)")

    def clear(self) -> None:
        """Clear the prompts of the current plane (and bring deleted prompt layers back)."""
        if self.view is None or self.index is None:
            return
        self.prompts.ensure(self.view)
        self.candidate_view.ensure(self.view)
        self.prompts.clear(self.view, self.index)
        self._set_hint("")

    def _activate(self, kind: str) -> None:
        if self.view is not None:
            self.prompts.ensure(self.view)
            self.prompts.activate(kind)
        boxes_only = kind == "points" and self.box_only and self.engine is not None
        self._set_hint(f"{self.engine.model_name} is trained on boxes: a click becomes a box around the "
                       "object under it" if boxes_only else "")

    # ------------------------------------------------------------------ display

    def _clear_candidates(self) -> None:
        self.decoding.clear()

    def _show_scores(self) -> None:
        c = self.candidate_view.candidates
        self.ui.candidate_buttons.set_scores(None if c is None else c.scores, self.candidate_view.selected)

    def set_status(self, text: str) -> None:
        self.ui.status.setText(text)

    def _set_hint(self, text: str) -> None:
        self.ui.hint.setText(text)

    # ------------------------------------------------------------------ life cycle

    def teardown(self) -> None:
        """Let go of the viewer: stop all work, disconnect every viewer and layer event,
        unbind the keys of the prompt layers (they stay, with their prompts, for the next
        widget to adopt) and remove the candidates layer. Safe to call twice."""
        if self._torn_down:
            return
        self._torn_down = True
        self._rebuild_timer.stop()
        self._request_timer.stop()
        self._tiles_timer.stop()
        self.embedding_worker.set_engine(None)
        self.stack.detach()
        self.review.detach()
        self.everything.cancel()
        self.decoding.clear()
        for emitter, callback in self._listening:
            emitter.disconnect(callback)
        self._listening.clear()
        self._follow_geometry(False)
        self._image = None
        self.ui.image.detach()
        self.ui.output.detach()
        self.prompts.detach()
        self.candidate_view.detach()
        self.engine = None
        self.view = None

    def close_widget(self) -> None:
        """napari closed the dock (its ✕): let go of the viewer and delete the widget."""
        self.teardown()
        self.deleteLater()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        self.teardown()
        super().closeEvent(event)
