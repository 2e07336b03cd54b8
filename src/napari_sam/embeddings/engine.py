"""Embeddings on demand: read one plane of an nD array, embed it, cache it, prefetch
its neighbours, and embed ahead the zoomed windows (tiles) that answer prompts on the
plane on screen. No Qt or napari here: the widget drives :meth:`Engine.run` from a
worker thread and answers prompts with :meth:`Engine.segment`; scripts call
:meth:`Engine.embedding`.
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

from ..cache import EmbeddingCache, Key
from ..imaging import intensity_limits, plane_of
from ..values import Candidates, Embedding
from ..prompting.service import PromptService, stack_denoises
from ..prompting.windows import Window, nearest_first

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
    """Yielded by :meth:`Engine.run` after each plane or tile it embedded (``window`` is
    the tile; None for the whole plane), and once when a plane's tiles were planned
    (``key`` None: the object size is known and the tiles are queued)."""

    source: PlaneSource
    index: Index
    key: Key | None
    seconds: float
    remaining: int
    window: Window | None = None


@dataclass(frozen=True)
class _Job:
    source: PlaneSource
    index: Index
    window: Window | None = None  # a tile of the plane; None: the whole plane
    key: Key | None = None  # the tile's cache key
    tiles_near: tuple[float, float] | None = None  # plan the plane's tiles, nearest this first


TILE_BYTES = 256 * 64 * 64 * 2  # one float16 embedding in the cache
SAM2_TILE_BYTES = TILE_BYTES + (32 * 256 * 256 + 64 * 128 * 128) * 2  # plus SAM 2's high-res maps


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
        self._queue: list[_Job] = []
        self._lock = threading.Lock()
        self._prompts: PromptService | None = None
        self._sizes: dict[Hashable, float] = {}  # object sizes set by the user or a store, per source
        self._denoise: dict[Hashable, bool] = {}  # per source: are its planes shown to the model denoised
        self._plane: tuple[Key, np.ndarray] | None = None  # the last plane read
        self._generation = 0  # bumped by each request and cancel: stale tile plans are dropped
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

    # ----------------------------------------------------------------- prompts at zoom

    @property
    def prompts(self) -> PromptService:
        """The prompt service over this engine's cache (tiles and prompts share it)."""
        if self._prompts is None:
            self._prompts = PromptService(self.predictor, self.cache)
        return self._prompts

    def plane_limits(self, source: PlaneSource, index: Index, plane: np.ndarray,
                     service: PromptService | None = None) -> tuple[float, float]:
        """The intensity limits of plane ``index`` (``plane``), measured once in ``service``
        (default :attr:`prompts`), with the source's decision to denoise (:meth:`source_denoises`)."""
        service = self.prompts if service is None else service
        key = self.key(source, index)
        known = service.known_limits(key)
        return known if known is not None else service.plane_limits(plane, key, self.source_denoises(source))

    def source_denoises(self, source: PlaneSource) -> bool:
        """Whether the source's planes are shown to the model denoised: all or none, as its
        first plane decides (:func:`stack_denoises`), so that a movie or stack does not
        switch treatment from plane to plane."""
        decided = self._denoise.get(source.signature)
        if decided is None:
            first = source.plane((0,) * len(source.stack_shape))
            decided = self._denoise.setdefault(source.signature, stack_denoises(self.prompts, first))
        return decided

    def read_plane(self, source: PlaneSource, index: Index) -> np.ndarray:
        """One plane, read once while it is the last one asked for (prompts on it re-use it)."""
        key = self.key(source, index)
        last = self._plane
        if last is not None and last[0] == key:
            return last[1]
        plane = source.plane(index)
        self._plane = (key, plane)
        return plane

    def object_size(self, source: PlaneSource, index: Index) -> float:
        """The objects' diameter in pixels: the user's, else measured on the plane (once)."""
        size = self._sizes.get(source.signature)
        if size is not None:
            return size
        return self.prompts.plane_diameter(self.read_plane(source, index), self.key(source, index))

    def known_object_size(self, source: PlaneSource, index: Index) -> float | None:
        """:meth:`object_size` if it is known already (never measures: safe on the GUI thread)."""
        size = self._sizes.get(source.signature)
        if size is not None:
            return size
        return self.prompts.known_diameter(self.key(source, index))

    def set_object_size(self, source: PlaneSource, diameter: float | None) -> None:
        """Fix the objects' diameter for ``source`` (None: measure it per plane again)."""
        if diameter is None:
            self._sizes.pop(source.signature, None)
        else:
            if not np.isfinite(diameter) or diameter <= 0:
                raise ValueError(f"object size must be a positive number of pixels, got {diameter}")
            self._sizes[source.signature] = float(diameter)

    def segment(self, source: PlaneSource, index: Index, points: object = None, labels: object = None,
                box: object = None, multimask: bool = True, mask_input: np.ndarray | None = None,
                mask_window: tuple[int, int, int, int] | None = None) -> Candidates:
        """Answer a prompt on plane ``index`` at zoom, from its tiles when they are embedded
        (see :class:`~napari_sam.prompting.service.PromptService`); masks cover the whole plane."""
        plane = self.read_plane(source, index)
        key = self.key(source, index)
        service = self.prompts
        limits = self.plane_limits(source, index, plane)
        self._share_plane_embedding(plane, key, limits)
        return service.segment(plane, points, labels, box, multimask, signature=key, limits=limits,
                               diameter=self.object_size(source, index), mask_input=mask_input,
                               mask_window=mask_window)

    def denoises(self, source: PlaneSource, index: Index) -> bool:
        """Whether plane ``index`` is known to be shown to the model denoised in its tiles, as
        its source's first plane decided (never measures: safe on the GUI thread)."""
        return self.prompts.denoises(self.key(source, index))

    def tiles(self, source: PlaneSource, index: Index) -> list[Window]:
        """The windows that answer prompts on objects of :meth:`object_size` on this plane."""
        return self.prompts.tiles(self._plane_shape(source), self.object_size(source, index))

    def tiles_embedded(self, source: PlaneSource, index: Index) -> tuple[int, int] | None:
        """(tiles cached, tiles) of the plane, or None while its object size is unknown."""
        size = self.known_object_size(source, index)
        key = self.key(source, index)
        service = self.prompts
        limits = service.known_limits(key)
        if size is None or limits is None:
            return None
        shape = self._plane_shape(source)
        tiles = service.tiles(shape, size)
        return sum(service.window_key(w, key, limits) in self.cache for w in tiles), len(tiles)

    def _share_plane_embedding(self, plane: np.ndarray, key: Key, limits: tuple[float, float]) -> None:
        """A window that is the whole plane (a plane no larger than the smallest tile) is the
        plane's own embedding: file it under the window's key too, instead of a second
        encoder pass (same crop, same intensity limits)."""
        h, w = plane.shape[:2]
        window_key = self.prompts.window_key(Window(0, 0, h, w), key, limits)
        if window_key not in self.cache and not self.prompts.denoises(key):  # the plane is embedded as it is
            embedding = self.cache.get(key)
            if embedding is not None:
                self.cache.put(window_key, embedding)

    def _plane_shape(self, source: PlaneSource) -> tuple[int, int]:
        shape = source.data.shape
        return int(shape[source.plane_axes[0]]), int(shape[source.plane_axes[1]])

    def _max_tiles(self) -> int:
        """Tiles queued per request: a quarter of the cache, so they do not evict each other."""
        tile = SAM2_TILE_BYTES if getattr(self.predictor, "is_sam2", False) else TILE_BYTES
        return max(16, self.cache.max_bytes // 4 // tile)

    # ----------------------------------------------------------------- disk store

    def attach_store(self, source: PlaneSource, store: Any) -> None:
        """Read planes of ``source`` from an :class:`~napari_sam.embeddings.store.EmbeddingStore` when
        they are there (unchanged), and write the planes computed here into it. The store's
        object size becomes the source's unless one is set, so its stored tiles are the ones
        asked for."""
        self._stores[source.signature] = store
        if store.object_size is not None and source.signature not in self._sizes:
            self._sizes[source.signature] = store.object_size
        self.store_error = None

    def store_for(self, source: PlaneSource) -> Any:
        return self._stores.get(source.signature)

    def _compute(self, source: PlaneSource, index: Index) -> Embedding:
        plane = self.read_plane(source, index)  # its tiles come next: read it once
        store = self._stores.get(source.signature)
        if store is None:
            return self.predictor.embed(plane)
        index = source.check(index)
        digest = store.digest(plane)
        stored = store.get(index, digest, self._device())
        if stored is not None:
            self.store_hits += 1
            return stored
        self.plane_limits(source, index, plane)  # measured once for the plane's tiles
        # The plane itself is embedded as it is (never denoised), as `napari-sam embed` stores it.
        limits = intensity_limits(plane, self.predictor.percentiles)
        emb = self.predictor.embed(plane, limits=limits)
        try:
            store.put(index, digest, emb, limits)
        except OSError as exc:  # a full or read-only disk: keep working from memory
            self._stores.pop(source.signature, None)
            self.store_error = f"stopped writing the embedding store: {exc}"
        return emb

    # ----------------------------------------------------------------- queue

    def request(self, source: PlaneSource, index: Index, prefetch: int = 0, axis: int = -1,
                tiles_near: tuple[float, float] | None = None) -> None:
        """Queue ``index`` first, then (with ``tiles_near``, a (row, col) of the plane) the
        tiles of that plane nearest that point first, then up to ``prefetch`` neighbours
        each side along ``axis``.

        Replaces whatever was queued before, and clears a previous :meth:`cancel`.
        """
        index = source.check(index)
        jobs = [_Job(source, index)]
        if tiles_near is not None:
            jobs.append(_Job(source, index, tiles_near=tuple(map(float, tiles_near))))
        jobs += [_Job(source, i) for i in source.neighbours(index, prefetch, axis)]
        with self._lock:
            self._queue = [j for j in jobs if not self._done(j)]
            self._generation += 1
            self._cancelled.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def cancel(self) -> None:
        """Drop queued requests and stop :meth:`run` before its next plane."""
        with self._lock:
            self._queue = []
            self._generation += 1
            self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _done(self, job: _Job) -> bool:
        if job.tiles_near is not None:
            return False
        return (job.key if job.window is not None else self.key(job.source, job.index)) in self.cache

    def _pop(self) -> _Job | None:
        with self._lock:
            while self._queue and not self._cancelled.is_set():
                job = self._queue.pop(0)
                if not self._done(job):
                    return job
            return None

    def run(self) -> Iterator[PlaneReady]:
        """Embed queued planes and tiles until the queue is empty or cancelled; yield after each."""
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        while (job := self._pop()) is not None:
            start = time.perf_counter()
            if job.tiles_near is not None:
                self._plan_tiles(job)
                yield PlaneReady(job.source, job.index, None, time.perf_counter() - start, self.pending())
            elif job.window is not None:
                self._embed_tile(job)
                yield PlaneReady(job.source, job.index, job.key, time.perf_counter() - start, self.pending(),
                                 job.window)
            else:
                key = self.key(job.source, job.index)
                self.cache.put(key, self._compute(job.source, job.index))
                yield PlaneReady(job.source, job.index, key, time.perf_counter() - start, self.pending())

    def _embed_tile(self, job: _Job) -> None:
        """One tile into the cache: from the source's embedding store when it holds it
        (unchanged), else computed, and written to the store when it keeps such tiles."""
        assert job.window is not None and job.key is not None
        plane = self.read_plane(job.source, job.index)
        key = self.key(job.source, job.index)
        limits = self.plane_limits(job.source, job.index, plane)
        store = self._stores.get(job.source.signature)
        if store is None or job.window.bounds not in store.tiles:
            self.prompts.window_embedding(plane, job.window, key, limits)
            return
        index = job.source.check(job.index)
        digest = store.tile_digest(plane, self.prompts.denoises(key))
        stored = store.get_tile(index, job.window.bounds, digest, self._device())
        if stored is not None:
            self.store_hits += 1
            self.cache.put(job.key, stored)
            return
        emb = self.prompts.window_embedding(plane, job.window, key, limits)
        try:
            store.put_tile(index, job.window.bounds, digest, emb)
        except OSError as exc:  # a full or read-only disk: keep working from memory
            self._stores.pop(job.source.signature, None)
            self.store_error = f"stopped writing the embedding store: {exc}"

    def _plan_tiles(self, job: _Job) -> None:
        """Measure the plane (object size, limits) and queue its missing tiles, nearest first."""
        source, index = job.source, job.index
        generation = self._generation
        plane = self.read_plane(source, index)
        key = self.key(source, index)
        limits = self.plane_limits(source, index, plane)
        self._share_plane_embedding(plane, key, limits)
        tiles = nearest_first(self.tiles(source, index), job.tiles_near)
        jobs = [_Job(source, index, w, self.prompts.window_key(w, key, limits)) for w in tiles]
        jobs = [j for j in jobs if j.key not in self.cache][: self._max_tiles()]
        with self._lock:
            if generation == self._generation:
                self._queue[:0] = jobs

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
