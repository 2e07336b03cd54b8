"""The objects of a refined labels layer, one row per object with its quality, worst
first; a click on a row (or Enter) asks to go to that object. See :mod:`.review`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from .frames import UNSURE_COLOUR

if TYPE_CHECKING:
    from ..segmentation.refine_labels import RefinedLabels

REFINE = "Refine labels"
# Rows under this quality are marked: the model doubts them or moved them far.
DOUBTFUL = 0.5
CORRECTED = "  corrected"
CORRECTED_COLOUR = "#7fd67f"


class ObjectList(QWidget):
    """One row per object with its quality, worst first; hidden until there is a result."""

    jump = Signal(int)  # the object id asked for

    def __init__(self) -> None:
        super().__init__()
        self.title = QLabel("")
        self.title.setWordWrap(True)
        self.rows = QListWidget()
        self.rows.setMaximumHeight(160)
        self.rows.itemClicked.connect(self._on_item)
        self.rows.itemActivated.connect(self._on_item)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.rows)
        self.setVisible(False)

    def show_objects(self, refined: RefinedLabels) -> None:
        """One row per object of ``refined``, worst first; doubtful ones marked."""
        self.rows.clear()
        quality = dict(zip(refined.ids.tolist(), refined.quality.tolist()))
        kept = set(refined.ids[refined.kept].tolist())
        for label in refined.worst_first().tolist():
            note = "  nothing found: kept as given" if label in kept else ""
            item = QListWidgetItem(f"object {label}: {quality[label]:.2f}{note}")
            item.setData(Qt.ItemDataRole.UserRole, label)
            if quality[label] < DOUBTFUL:
                item.setForeground(QColor(UNSURE_COLOUR))
            self.rows.addItem(item)
        doubtful = sum(q < DOUBTFUL for q in quality.values())
        self.title.setText(f"{len(quality)} objects, worst first ({doubtful} doubtful). Click one to go there; "
                           "a box or click and Commit redraws it under its id")
        self.setVisible(True)

    def ids(self) -> list[int]:
        """The object ids in the list's order."""
        return [int(self.rows.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.rows.count())]

    def mark_corrected(self, label: int) -> int | None:
        """Mark ``label``'s row corrected; the id of the next row not corrected yet."""
        ids = self.ids()
        if label not in ids:
            return None
        row = ids.index(label)
        item = self.rows.item(row)
        if not item.text().endswith(CORRECTED):
            item.setText(item.text() + CORRECTED)
        item.setForeground(QColor(CORRECTED_COLOUR))
        for i in list(range(row + 1, len(ids))) + list(range(row)):
            if not self.rows.item(i).text().endswith(CORRECTED):
                return ids[i]
        return None

    def select(self, label: int) -> None:
        ids = self.ids()
        if label in ids:
            self.rows.setCurrentRow(ids.index(label))

    def clear(self) -> None:
        self.rows.clear()
        self.title.setText("")
        self.setVisible(False)

    def _on_item(self, item: QListWidgetItem) -> None:
        self.jump.emit(int(item.data(Qt.ItemDataRole.UserRole)))
