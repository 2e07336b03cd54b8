"""The dock widget's form: selectors, candidate buttons, action buttons, status lines.

Plain Qt with no behaviour beyond keeping the layer lists current, and the automatic
segmentation fields made by magicgui from their table; :mod:`.widget` wires it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from magicgui.widgets import Container, create_widget
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton,
    QRadioButton, QSpinBox, QVBoxLayout, QWidget,
)

from ..model.registry import list_models
from ..segmentation.auto_params import AutoParams, user_fields
from .candidates import CandidateButtons
from .frames import FrameList
from .object_list import REFINE, ObjectList

SHORTCUTS = (
    ("1 / 2 / 3", "choose a candidate"),
    ("N", "next candidate"),
    ("C", "commit the chosen candidate"),
    ("P", "commit it through the stack, as one 3D object (again: cancel)"),
    ("X", "clear the prompts of this plane"),
    ("T", "toggle positive / negative points"),
    ("Shift+click", "point of the other polarity"),
    ("Ctrl+Z", "undo the last commit"),
)


EVERYTHING_PLANE = "This plane"
EVERYTHING_STACK = "Whole stack"
CANCEL = "Cancel"
PROPAGATE = "Commit through stack (P)"
CANCEL_PROPAGATE = "Cancel propagation (P)"
PROPAGATE_ALL = "All objects of this plane"
CHECKPOINT_FILE = "checkpoint file ..."  # the model combo's last entry (its title and data): opens a file dialog
CHECKPOINT_FILTER = "SAM checkpoints (*.pt *.pth *.ckpt);;All files (*)"
FOLLOW = {  # the ways to follow an object through a stack, in the combo's order
    "memory": "memory: SAM 2.1 carries the object with its memory of the slices already segmented, both ways, "
              "stopping where the model no longer sees it",
    "motion": "motion: follow the object as it moves, SAM on every frame (movies)",
    "intensity": "intensity: carry it by its brightness, ending where its profile ends (z stacks)",
}


class LayerCombo(QComboBox):
    """Layers of the viewer that pass ``accept``, kept current as layers come, go and are
    renamed, with ``layer_changed`` whenever the chosen layer changes, its deletion included.

    Not magicgui's ComboBox: it is refreshed only when something calls its
    ``reset_choices``, and then drops a deleted choice without a ``changed`` event, while the
    widget must hear of it at once (a deleted output layer must never be written into).
    """

    layer_changed = Signal(object)

    def __init__(self, viewer: Any, accept: Callable[[Any], bool], empty: str) -> None:
        super().__init__()
        self.viewer, self.accept, self.empty = viewer, accept, empty
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        compact(self)
        self.currentIndexChanged.connect(lambda _: self.layer_changed.emit(self.layer()))
        self._named: list[Any] = []  # layers whose renaming we follow
        self.refresh()

    def detach(self) -> None:
        """Stop following the viewer's layers (the widget is closing)."""
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self.refresh)
        for layer in self._named:
            layer.events.name.disconnect(self.refresh)
        self._named.clear()
        self.blockSignals(True)
        self.clear()

    def layer(self) -> Any:
        return self.currentData()

    def set_layer(self, layer: Any) -> None:
        self.refresh()
        i = self.findData(layer)
        self.setCurrentIndex(max(i, 0))

    def refresh(self, event: Any = None) -> None:
        for gone in [layer for layer in self._named if layer not in self.viewer.layers]:
            gone.events.name.disconnect(self.refresh)
            self._named.remove(gone)
        current = self.layer()
        self.blockSignals(True)
        self.clear()
        self.addItem(self.empty, None)
        for layer in self.viewer.layers:
            if self.accept(layer):
                self.addItem(layer.name, layer)
                if not any(known is layer for known in self._named):
                    layer.events.name.connect(self.refresh)
                    self._named.append(layer)
        i = self.findData(current) if current is not None else 0
        self.setCurrentIndex(max(i, 0))
        self.blockSignals(False)
        if self.layer() is not current:
            self.layer_changed.emit(self.layer())


def compact(combo: QComboBox) -> None:
    """Let long entries (model titles, layer names) shrink instead of widening the dock."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(14)


@cache
def device_choices() -> list[str]:
    """The devices torch can run on here (probed once: CUDA's first probe is slow)."""
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


class Controls(QWidget):
    """All the widgets of the dock, laid out; no napari logic."""

    def __init__(self, image_combo: LayerCombo, output_combo: LayerCombo) -> None:
        super().__init__()
        self.image, self.output = image_combo, output_combo
        self.channels = QCheckBox("first axis holds channels")
        self.channels.setToolTip("Combine the first axis (up to 3 channels) into the colours the model sees")
        self.model = QComboBox()
        for spec in list_models():
            self.model.addItem(spec.title, spec.name)
            self.model.setItemData(self.model.count() - 1, spec.notes or spec.title, Qt.ItemDataRole.ToolTipRole)
        self.model.addItem(CHECKPOINT_FILE, CHECKPOINT_FILE)
        self.model.setItemData(self.model.count() - 1, "Load a SAM, MedSAM, LiteMedSAM or SAM 2.1 checkpoint from a "
                               "file; its architecture is recognised from the weights", Qt.ItemDataRole.ToolTipRole)
        compact(self.model)
        self.device = QComboBox()
        self.device.addItems(device_choices())
        self.box_mode = QRadioButton("box")
        self.point_mode = QRadioButton("point")
        self.negative = QCheckBox("negative (T)")
        self.object_size = QSpinBox()
        self.object_size.setRange(0, 4096)
        self.object_size.setSpecialValueText("measuring ...")
        self.object_size.setSuffix(" px")
        self.object_size.setKeyboardTracking(False)  # one change when the typing is done
        self.object_size.setToolTip(
            "Typical diameter of the objects. It sets the zoom at which prompts are answered and "
            "how far a click looks for its object. Measured from the image, then from the objects "
            "you commit; type a value to fix it.")
        self.overwrite = QCheckBox("overwrite existing labels")
        self.plane = QLabel("")
        self.status = QLabel("select an image layer")
        self.hint = QLabel("")
        for label in (self.plane, self.status, self.hint):
            label.setWordWrap(True)
        self.hint.setStyleSheet("color: #ffb000")
        self.candidate_buttons = CandidateButtons()
        self.commit = QPushButton("Commit (C)")
        self.clear = QPushButton("Clear (X)")
        self.undo = QPushButton("Undo")
        self.propagate = QPushButton(PROPAGATE)
        self.propagate.setToolTip("Carry the chosen candidate up and down the stack to where the object ends, "
                                  "and commit it as one 3D object (one Undo removes it)")
        self.propagate_all = QPushButton(PROPAGATE_ALL)
        self.propagate_all.setToolTip("Carry every object of the labels layer on this plane through the stack, "
                                      "each under its own id (one Undo removes what was added)")
        self.through = QComboBox()
        self.through.setToolTip("The axis to carry the object along (named by the layer's axis labels)")
        self.follow = QComboBox()
        for way in ("motion", "intensity"):
            self._add_follow(way, self.follow.count())
        self._follow_tooltip()
        self.frames = FrameList()
        self.auto_form = auto_form()
        self.everything_plane = QPushButton(EVERYTHING_PLANE)
        self.everything_stack = QPushButton(EVERYTHING_STACK)
        self.refine = QPushButton(REFINE)
        self.refine.setToolTip("Re-segment every object of the chosen labels layer (Cellpose, StarDist, an older "
                               "run) on this plane with SAM, into a new layer, and list them worst first")
        self.review = ObjectList()
        self.store = QPushButton("Use embedding store ...")
        self.store.setToolTip("Read (and extend) embeddings precomputed with 'napari-sam embed': a .zarr folder")
        self._lay_out()

    def add_checkpoint(self, path: str) -> int:
        """The model combo's entry for the checkpoint file ``path`` (made before the
        file entry if new): its index."""
        i = self.model.findData(path)
        if i < 0:
            i = self.model.count() - 1
            self.model.insertItem(i, f"file: {Path(path).name}", path)
            self.model.setItemData(i, path, Qt.ItemDataRole.ToolTipRole)
        return i

    def remove_checkpoint(self, path: str) -> None:
        """Drop the entry of checkpoint file ``path`` (it failed to load), if there is one."""
        i = self.model.findData(path)
        if i >= 0 and self.model.itemText(i).startswith("file: "):
            # silently: the entry shown stays, though its index may shift
            self.model.blockSignals(True)
            self.model.removeItem(i)
            self.model.blockSignals(False)

    def offer_memory(self, on: bool) -> bool:
        """Offer "memory" (SAM 2.1 models) in the follow combo, first, or take it away;
        True if the entries changed."""
        i = self.follow.findData("memory")
        if on == (i >= 0):
            return False
        if on:
            self._add_follow("memory", 0)
        else:
            self.follow.removeItem(i)
        self._follow_tooltip()
        return True

    def _add_follow(self, way: str, at: int) -> None:
        self.follow.insertItem(at, way, way)
        self.follow.setItemData(at, FOLLOW[way], Qt.ItemDataRole.ToolTipRole)

    def _follow_tooltip(self) -> None:
        self.follow.setToolTip("; ".join(FOLLOW[self.follow.itemData(i)] for i in range(self.follow.count())))

    def auto_params(self) -> AutoParams:
        """The automatic-segmentation parameters set in the form."""
        return AutoParams(**self.auto_form.asdict())

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("image", self.image)
        form.addRow("", self.channels)
        form.addRow("labels", self.output)
        form.addRow("model", self.model)
        form.addRow("device", self.device)
        form.addRow("embeddings", self.store)
        modes = QHBoxLayout()
        for w in (self.box_mode, self.point_mode, self.negative):
            modes.addWidget(w)
        form.addRow("prompt", modes)
        form.addRow("object size", self.object_size)
        form.addRow("candidates", self.candidate_buttons)
        buttons = QHBoxLayout()
        for b in (self.commit, self.clear, self.undo):
            buttons.addWidget(b)
        buttons_3d = QHBoxLayout()
        buttons_3d.addWidget(self.propagate)
        buttons_3d.addWidget(self.propagate_all)
        along = QHBoxLayout()
        for w in (QLabel("through"), self.through, QLabel("follow"), self.follow):
            along.addWidget(w)
        everything = QGroupBox("segment everything (into a new labels layer)")
        auto_layout = QVBoxLayout(everything)
        auto_layout.addWidget(self.auto_form.native)
        runs = QHBoxLayout()
        for b in (self.everything_plane, self.everything_stack):
            runs.addWidget(b)
        auto_layout.addLayout(runs)
        refine = QGroupBox("refine the chosen labels (into a new labels layer)")
        refine_layout = QVBoxLayout(refine)
        refine_layout.addWidget(self.refine)
        refine_layout.addWidget(self.review)
        help_box = QGroupBox("shortcuts (on the SAM prompt layers)")
        help_layout = QVBoxLayout(help_box)
        help_layout.addWidget(QLabel("<br>".join(f"<b>{k}</b>: {v}" for k, v in SHORTCUTS)))
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.overwrite)
        layout.addLayout(buttons)
        layout.addLayout(buttons_3d)
        layout.addLayout(along)
        layout.addWidget(self.frames)
        layout.addWidget(everything)
        layout.addWidget(refine)
        layout.addWidget(self.plane)
        layout.addWidget(self.status)
        layout.addWidget(self.hint)
        layout.addWidget(help_box)
        layout.addStretch(1)


def auto_form() -> Container:
    """The automatic-segmentation fields shown in the dock, made by magicgui from the table
    of :class:`AutoParams` fields users set (the command line's options come from it too)."""
    widgets = []
    for f in user_fields():
        if f.widget:
            options = {"tooltip": f.help, "min": f.low, "max": f.high, "choices": f.choices}
            widget = create_widget(
                value=f.default, annotation=f.kind, name=f.name, label=f.name.replace("_", " "),
                widget_type="ComboBox" if f.choices else None,
                options={k: v for k, v in options.items() if v is not None})
            if f.zero:  # shown instead of "0.00", the spin box's minimum
                widget.native.setSpecialValueText(f.zero)
            widgets.append(widget)
    return Container(widgets=widgets, labels=True)
