"""The command line's one progress reporter."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BYTES = "bytes"


class TerminalProgress:
    """A plain progress bar on stderr and a ``(done, total)`` callback: the bytes of a
    download, the planes of a stack, the tiles or seeds of a segmentation.

    ``unit`` is :data:`BYTES` (shown in MB with a speed) or the singular name of what is
    counted (``"plane"``: ``3/12 planes  0.50 s/plane``). On a terminal the bar redraws one
    line; in a log file it writes a line every 10 %. Used as a context manager, it ends its
    line on the way out, however the work ended.
    """

    def __init__(self, label: str, unit: str = BYTES, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= 0.1 or (total is not None and done >= total):
                self._last_draw = now
                self.stream.write("\r" + self.line(done, total))
                self.stream.flush()
                self._drawn = True
        elif total:
            decile = min(10, done * 10 // total)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self.line(done, total) + "\n")
                self.stream.flush()

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def finish(self) -> None:
        """End the bar's line so that later output starts on a fresh one."""
        if self._tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def line(self, done: int, total: int | None) -> str:
        """The text of the bar after ``done`` of ``total`` (None: not known, for downloads)."""
        elapsed = max(time.monotonic() - self._start, 1e-6)
        if self.unit == BYTES:
            speed = f"{done / elapsed / 1e6:6.1f} MB/s"
            if not total:
                return f"{self.label} {done / 1e6:8.1f} MB  {speed}"
            counts = f"{min(done / total, 1.0):4.0%} {done / 1e6:.1f}/{total / 1e6:.1f} MB  {speed}"
        else:
            counts = f"{done}/{total or 0} {self.unit}s  {elapsed / max(done, 1):.2f} s/{self.unit}"
        filled = int(min(done / total, 1.0) * self.width) if total else 0
        return f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {counts}"
