"""Lists of rows that take the user somewhere (:class:`RowList`), and the confidence of the
last propagation, one row per frame (or slice): a click on a row asks to go to that frame."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

UNSURE_COLOUR = "#ffb000"


class RowList(QWidget):
    """A title over a list of rows, each carrying an int; a click on a row (or Enter) emits
    ``jump`` with it. Hidden until there is something to list."""

    jump = Signal(int)

    def __init__(self, height: int = 140) -> None:
        super().__init__()
        self.title = QLabel("")
        self.title.setWordWrap(True)
        self.rows = QListWidget()
        self.rows.setMaximumHeight(height)
        self.rows.itemClicked.connect(self._on_item)
        self.rows.itemActivated.connect(self._on_item)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.rows)
        self.setVisible(False)

    def add_row(self, text: str, key: int, colour: str | None = None) -> None:
        item = QListWidgetItem(text)
        item.setData(Qt.ItemDataRole.UserRole, key)
        if colour is not None:
            item.setForeground(QColor(colour))
        self.rows.addItem(item)

    def keys(self) -> list[int]:
        """The rows' ints, in order."""
        return [int(self.rows.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.rows.count())]

    def clear(self) -> None:
        self.rows.clear()
        self.title.setText("")
        self.setVisible(False)

    def _on_item(self, item: QListWidgetItem) -> None:
        self.jump.emit(int(item.data(Qt.ItemDataRole.UserRole)))


class FrameList(RowList):
    """Per-frame confidence rows, unsure ones marked; ``jump`` asks for a frame (slice) index."""

    def show_confidence(self, confidence: dict[int, float], unsure: list[int], noun: str) -> None:
        """One row per ``noun`` ("frame" / "slice") with its confidence; ``unsure`` marked."""
        self.rows.clear()
        flagged = set(unsure)
        for k, value in sorted(confidence.items()):
            text = f"{noun} {k}: {value:.2f}" + ("  unsure: check it" if k in flagged else "")
            self.add_row(text, k, UNSURE_COLOUR if k in flagged else None)
        what = f"{len(flagged)} unsure" if flagged else "none unsure"
        self.title.setText(f"confidence per {noun} ({what}); click a row to go there, correct it with a box, "
                           "and commit through the stack again")
        self.setVisible(True)

    def unsure_rows(self) -> list[int]:
        """The frames listed as unsure, in order."""
        return [self.rows.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.rows.count())
                if self.rows.item(i).text().endswith("check it")]
