"""Where the command line may write: never over, into or around an input, and only where
files can be created, both found out before any model work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputError(OSError):
    """An output that cannot be written; the message names it and says why."""


def path_identities(path: str) -> tuple[tuple, ...]:
    """What names a file or folder: its resolved path and, where it exists, its inode."""
    p = Path(path).expanduser()
    keys: list[tuple] = [("path", os.path.normcase(str(p.resolve())))]
    try:
        st = p.stat()
        keys.append(("inode", st.st_dev, st.st_ino))
    except OSError:
        pass
    return tuple(keys)


def same_path(a: str | Path, b: str | Path) -> bool:
    """True if ``a`` and ``b`` name the same file or folder: the same resolved path, or the
    same inode where both exist (hard links, case-insensitive file systems)."""
    return bool(set(path_identities(str(a))) & set(path_identities(str(b))))


def path_within(inner: str | Path, outer: str | Path) -> bool:
    """True if ``inner`` is ``outer`` or lies anywhere inside it."""
    outer_keys = set(path_identities(str(outer)))
    inner = Path(inner).expanduser().absolute()
    return any(outer_keys & set(path_identities(str(p))) for p in (inner, *inner.parents))


def paths_overlap(a: str | Path, b: str | Path) -> bool:
    """True if ``a`` and ``b`` are the same file or folder, or one lies inside the other."""
    return path_within(a, b) or path_within(b, a)


def check_writable_folder(folder: str | Path) -> None:
    """Prove that files can be created in ``folder`` or, where it does not exist yet, in the
    nearest folder above it that does (where it would be made), by creating and removing an
    empty file there. Leaves nothing behind; raises :class:`OutputError` otherwise."""
    folder = Path(folder).expanduser().absolute()
    there = folder
    while not there.exists() and there != there.parent:
        there = there.parent
    if not there.is_dir():
        raise OutputError(f"cannot write to {folder}: {there} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".napari-sam-write-test.", dir=there)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc} (in {there})") from exc
