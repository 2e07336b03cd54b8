"""Embeddings on demand: read one plane of an nD array, embed it, cache it, prefetch
its neighbours. No Qt or napari here: the widget drives :meth:`Engine.run` from a
worker thread, scripts call :meth:`Engine.embedding`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .cache import EmbeddingCache, Key
from .imaging import intensity_limits, plane_of
from .predictor import Embedding

Index = tuple[int, ...]

_SAMPLE = 4096  # elements hashed for a numpy data signature


# --------------------------------------------------------------------------- sources


def data_signature(data: Any) -> tuple[Hashable, ...]:
    """A cheap fingerprint of an array: changes when the array is replaced or edited.

    dask arrays use their graph token, zarr arrays their store and path; anything else
    (numpy, memmap) a hash of a strided sample of at most 4096 elements plus its id.
    """
    shape, dtype = tuple(int(s) for s in data.shape), str(data.dtype)
    name = getattr(data, "name", None)
    if type(data).__module__.startswith("dask") and isinstance(name, str):
        return ("dask", shape, dtype, name)
    if type(data).__module__.startswith("zarr"):
        store = getattr(data, "store", None)
        where = str(getattr(store, "path", getattr(store, "root", id(store))))
        return ("zarr", shape, dtype, where, str(getattr(data, "path", "")))
    # A strided view touches only the sampled elements (no copy of a big array or memmap).
    per_axis = max(2, int(np.ceil(_SAMPLE ** (1.0 / max(1, len(shape))))))
    sample = np.asarray(data[tuple(slice(None, None, max(1, -(-s // per_axis))) for s in shape)])
    digest = hashlib.blake2b(np.ascontiguousarray(sample).tobytes(), digest_size=12).hexdigest()
    return ("array", shape, dtype, id(data), digest)


def along(index: Index, axis: int, k: int) -> Index:
    """Plane ``index`` moved to position ``k`` on stack axis ``axis`` (a position in ``index``)."""
    return index[:axis] + (int(k),) + index[axis + 1:]


@dataclass(frozen=True)
class PlaneSource:
    """How to read 2D planes out of an nD array, one at a time.

    ``plane_axes`` are the (row, col) axes of a plane, in display order; ``rgb`` says
    the last axis holds colours; ``channel_axis`` names an axis of 1-3 channels that
    become the plane's colours. Every other axis is a *stack* axis, indexed by
    :data:`Index` in axis order. Reading is :func:`napari_sam.imaging.plane_of`.
    """

    data: Any
    plane_axes: tuple[int, int] = (-2, -1)
    rgb: bool = False
    channel_axis: int | None = None
    signature: tuple[Hashable, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        nd = len(self.data.shape)
        spatial = nd - 1 if self.rgb else nd
        rows, cols = (a % spatial for a in self.plane_axes)
        if rows == cols:
            raise ValueError(f"plane_axes {self.plane_axes} name the same axis twice")
        ch = None if self.channel_axis is None else self.channel_axis % spatial
        if ch in (rows, cols):
            raise ValueError("the channel axis cannot be one of the plane axes")
        if ch is not None and not 1 <= self.data.shape[ch] <= 3:
            raise ValueError(f"the channel axis has {self.data.shape[ch]} channels; SAM takes 1 to 3 as colours")
        object.__setattr__(self, "plane_axes", (rows, cols))
        object.__setattr__(self, "channel_axis", ch)
        if not self.signature:
            object.__setattr__(self, "signature", data_signature(self.data) + (rows, cols, self.rgb, ch))

    @property
    def stack_axes(self) -> tuple[int, ...]:
        """The axes indexed by a plane :data:`Index`, in axis order."""
        spatial = len(self.data.shape) - (1 if self.rgb else 0)
        skip = {*self.plane_axes, self.channel_axis}
        return tuple(a for a in range(spatial) if a not in skip)

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return tuple(int(self.data.shape[a]) for a in self.stack_axes)

    def check(self, index: Index) -> Index:
        """``index`` as ints, validated against the stack shape."""
        index = tuple(int(i) for i in index)
        shape = self.stack_shape
        if len(index) != len(shape) or any(not 0 <= i < n for i, n in zip(index, shape)):
            raise IndexError(f"plane index {index} does not fit the stack shape {shape}")
        return index

    def plane(self, index: Index) -> np.ndarray:
        """Read one plane: (H, W), or (H, W, C) for colour or channel data."""
        return plane_of(self.data, self.check(index), self.channel_axis, self.rgb, self.plane_axes)

    def neighbours(self, index: Index, radius: int, axis: int = -1) -> list[Index]:
        """Planes within ``radius`` of ``index`` along one stack ``axis``, nearest first."""
        index = self.check(index)
        if not index or radius <= 0:
            return []
        axis %= len(index)
        n = self.stack_shape[axis]
        out = []
        for d in range(1, radius + 1):
            for j in (index[axis] + d, index[axis] - d):
                if 0 <= j < n:
                    out.append(along(index, axis, j))
        return out


# --------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class PlaneReady:
    """Yielded by :meth:`Engine.run` after each plane it embedded."""

    source: PlaneSource
    index: Index
    key: Key
    seconds: float
    remaining: int


class Engine:
    """Owns a predictor and an embedding cache; serves planes blocking or from a queue.

    The queue holds (source, index) requests: :meth:`request` puts the plane on screen
    first and its neighbours after it, dropping older prefetches. :meth:`run` drains the
    queue, checking :meth:`cancel` between planes (never inside one).
    """

    def __init__(self, predictor: Any, cache: EmbeddingCache | None = None,
                 num_threads: int | None = None) -> None:
        self.predictor = predictor
        self.cache = cache if cache is not None else EmbeddingCache()
        self.num_threads = num_threads
        self._queue: list[tuple[PlaneSource, Index]] = []
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._stores: dict[tuple[Hashable, ...], Any] = {}
        self.store_hits = 0
        self.store_error: str | None = None

    @property
    def model_name(self) -> str:
        return str(getattr(self.predictor, "model_name", ""))

    def key(self, source: PlaneSource, index: Index) -> Key:
        """The cache key of one plane: model, data, plane and preprocessing."""
        percentiles = tuple(getattr(self.predictor, "percentiles", ()))
        return (self.model_name, source.signature, source.check(index), percentiles)

    def cached(self, source: PlaneSource, index: Index) -> Embedding | None:
        """The plane's embedding if it is cached, without computing anything."""
        return self.cache.get(self.key(source, index), self._device())

    def embedding(self, source: PlaneSource, index: Index) -> Embedding:
        """The plane's embedding, computed now (blocking) unless cached."""
        key = self.key(source, index)
        hit = self.cache.get(key, self._device())
        if hit is not None:
            return hit
        emb = self._compute(source, index)
        self.cache.put(key, emb)
        return emb

    # ----------------------------------------------------------------- disk store

    def attach_store(self, source: PlaneSource, store: Any) -> None:
        """Read planes of ``source`` from an :class:`~napari_sam.store.EmbeddingStore` when
        they are there (unchanged), and write the planes computed here into it."""
        self._stores[source.signature] = store
        self.store_error = None

    def store_for(self, source: PlaneSource) -> Any:
        return self._stores.get(source.signature)

    def _compute(self, source: PlaneSource, index: Index) -> Embedding:
        plane = source.plane(index)
        store = self._stores.get(source.signature)
        if store is None:
            return self.predictor.embed(plane)
        index = source.check(index)
        digest = store.digest(plane)
        stored = store.get(index, digest, self._device())
        if stored is not None:
            self.store_hits += 1
            return stored
        limits = intensity_limits(plane, self.predictor.percentiles)
        emb = self.predictor.embed(plane, limits=limits)
        try:
            store.put(index, digest, emb, limits)
        except OSError as exc:  # a full or read-only disk: keep working from memory
            self._stores.pop(source.signature, None)
            self.store_error = f"stopped writing the embedding store: {exc}"
        return emb

    # ----------------------------------------------------------------- queue

    def request(self, source: PlaneSource, index: Index, prefetch: int = 0, axis: int = -1) -> None:
        """Queue ``index`` first, then up to ``prefetch`` neighbours each side along ``axis``.

        Replaces whatever was queued before, and clears a previous :meth:`cancel`.
        """
        wanted = [source.check(index), *source.neighbours(index, prefetch, axis)]
        with self._lock:
            self._queue = [(source, i) for i in wanted if self.key(source, i) not in self.cache]
            self._cancelled.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def cancel(self) -> None:
        """Drop queued requests and stop :meth:`run` before its next plane."""
        with self._lock:
            self._queue = []
            self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _pop(self) -> tuple[PlaneSource, Index] | None:
        with self._lock:
            while self._queue and not self._cancelled.is_set():
                source, index = self._queue.pop(0)
                if self.key(source, index) not in self.cache:
                    return source, index
            return None

    def run(self) -> Iterator[PlaneReady]:
        """Embed queued planes until the queue is empty or cancelled; yield after each."""
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        while (job := self._pop()) is not None:
            source, index = job
            start = time.perf_counter()
            key = self.key(source, index)
            self.cache.put(key, self._compute(source, index))
            yield PlaneReady(source, index, key, time.perf_counter() - start, self.pending())

    def run_all(self, callback: Callable[[PlaneReady], None] | None = None) -> int:
        """Drain the queue in this thread, calling ``callback`` per plane; returns the count."""
        done = 0
        for item in self.run():
            done += 1
            if callback is not None:
                callback(item)
        return done

    def _device(self) -> torch.device:
        return getattr(self.predictor, "device", torch.device("cpu"))
