"""The objects of a refined labels layer, one row per object with its quality, worst
first; a click on a row (or Enter) asks to go to that object. See :mod:`.review`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtGui import QColor

from .frames import UNSURE_COLOUR, RowList

if TYPE_CHECKING:
    from ..segmentation.refine_labels import RefinedLabels

REFINE = "Refine labels"
# Rows under this quality are marked: the model doubts them or moved them far.
DOUBTFUL = 0.5
CORRECTED = "  corrected"
CORRECTED_COLOUR = "#7fd67f"


class ObjectList(RowList):
    """One row per object with its quality, worst first; ``jump`` asks for an object id."""

    def __init__(self) -> None:
        super().__init__(height=160)

    def show_objects(self, refined: RefinedLabels) -> None:
        """One row per object of ``refined``, worst first; doubtful ones marked."""
        self.rows.clear()
        quality = dict(zip(refined.ids.tolist(), refined.quality.tolist()))
        kept = set(refined.ids[refined.kept].tolist())
        for label in refined.worst_first().tolist():
            note = "  kept as given" if label in kept else ""
            self.add_row(f"object {label}: {quality[label]:.2f}{note}", label,
                         UNSURE_COLOUR if quality[label] < DOUBTFUL else None)
        doubtful = sum(q < DOUBTFUL for q in quality.values())
        self.title.setText(f"{len(quality)} objects, worst first ({doubtful} doubtful). Click one to go there; "
                           "a box or click and Commit redraws it under its id")
        self.setVisible(True)

    def ids(self) -> list[int]:
        """The object ids in the list's order."""
        return self.keys()

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
