"""Files the package writes: made beside their destination, then renamed into place."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def part_file(dest: Path, suffix: str = ".part") -> tuple[int, Path]:
    """A new, empty file beside ``dest`` to write and then rename onto it: (open fd, path).

    It gets the permissions of any new file (0o666 less the umask). Not tempfile.mkstemp:
    its files are private (0o600), and the rename keeps that, so a labels file or a model
    in a shared cache would be unreadable to the rest of the lab.
    """
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}{suffix}"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
