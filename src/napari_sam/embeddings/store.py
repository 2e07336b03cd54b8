"""Embeddings of a whole stack on disk, in a zarr group, reusable across sessions.

Layout (zarr >= 3)::

    STORE.zarr/             attrs: model, geometry, data shape/dtype, preprocessing
      features  float16  (*stack, C, h, w)  one compressed chunk per plane
      limits    float64  (*stack, 2)        intensity limits the plane was stretched with
      digest    uint8    (*stack, 16)       per-plane signature; all zero = not done
      high_res_0  float16 (*stack, C/8, 4h, 4w)  SAM 2 only: the decoder's two
      high_res_1  float16 (*stack, C/4, 2h, 2w)  high-resolution maps, a chunk per plane
      tile_features float16 (*stack, T, C, h, w)  optional: the plane's zoomed tiles
      tile_high_res_0, tile_high_res_1             (*stack, T, ...) their maps (SAM 2 only)
      tile_digest   uint8   (*stack, T, 16)       per-tile signature (the plane's digest,
                                                  hashed with the denoiser's name for a
                                                  photon-limited plane)

A SAM 2 store records the maps' shapes in its metadata (``high_res_shapes``) and that its
planes are stretched to the model's square (``fit``); a SAM 1 store has neither key, so the
stores SAM 1 models wrote before SAM 2 came still open as they are.

The tiles are the windows the prompt service answers prompts from (see
:mod:`napari_sam.prompting.service`), recorded with their bounds and the object size they
were planned for in the group's attributes; an engine that attaches the store takes that
size (unless one is set), so it asks for the stored tiles. A store made for other tiles
(another object size) gets its tile arrays made afresh.

A plane counts as stored only once its digest is written, after its features and maps: an
interrupted run or a full disk leaves at worst a plane that is embedded again. The digest
hashes the plane's bytes together with the model and preprocessing, so an edited plane is
embedded again while unchanged planes are reused. A store never silently drops what it
holds: group metadata that no longer fits (another model, data shape or preprocessing),
or another source image where the caller names one (``napari-sam embed`` does), is
refused with a :class:`StoreConflictError` unless ``overwrite=True``; so is a path that
holds anything but a store. Input stacks are read one plane at a time.

This module imports torch only where it handles embeddings, so that the command line can
check a store before it loads a model.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from ..predictor import Predictor
    from ..values import Embedding

FORMAT = 1
DIGEST_BYTES = 16
# Tiles of photon-limited planes are embedded denoised (prompting.noise); a new denoiser
# gets a new name here, so that tiles the old one made are embedded again.
DENOISED_TILES = "denoised: nl-means on stabilised photon noise, v1"
Index = tuple[int, ...]
ARRAYS = ("features", "limits", "digest")
TILE_ARRAYS = ("tile_features", "tile_digest")
HIGH_RES_ARRAYS = ("high_res_0", "high_res_1")  # SAM 2's decoder maps, by plane
TILE_HIGH_RES_ARRAYS = ("tile_high_res_0", "tile_high_res_1")  # and by tile
SOURCE_ATTR = "napari_sam_source"  # the image a store was made from, where the caller named one
TILES_ATTR = "napari_sam_tiles"  # the tiles' bounds (r0, c0, r1, c1), where tiles are stored
SIZE_ATTR = "napari_sam_object_size"  # the object size (pixels) the stored tiles were planned for


class StoreConflictError(ValueError):
    """Writing the store would destroy something: another image's or model's embeddings, or
    files that are not an embedding store. The message says how to proceed."""


def _zarr() -> Any:
    import zarr  # a base dependency, imported late so that the CLI starts fast

    if int(zarr.__version__.split(".")[0]) < 3:
        raise ImportError(f"the embedding store needs zarr>=3, found zarr {zarr.__version__}: pip install 'zarr>=3'")
    return zarr


@dataclass(frozen=True)
class StackLayout:
    """How planes are read out of the input array, and what the model makes of them."""

    data_shape: tuple[int, ...]
    dtype: str
    channel_axis: int | None
    rgb: bool
    plane_axes: tuple[int, int]
    stack_shape: tuple[int, ...]
    plane_shape: tuple[int, int]

    @classmethod
    def of(cls, data: Any, channel_axis: int | None = None, rgb: bool = False,
           plane_axes: tuple[int, int] = (-2, -1)) -> StackLayout:
        """Describe ``data`` (validated by reading its first plane)."""
        from ..imaging import plane_of

        shape = tuple(int(n) for n in data.shape)
        spatial = len(shape) - (1 if rgb else 0)
        first = plane_of(data, (0,) * spatial, channel_axis, rgb, plane_axes)
        rows, cols = (a % spatial for a in plane_axes)
        ch = None if channel_axis is None else channel_axis % spatial
        stack = tuple(shape[a] for a in range(spatial) if a not in (rows, cols, ch))
        return cls(shape, str(np.dtype(data.dtype)), ch, rgb, (rows, cols), stack, first.shape[:2])

    def indices(self) -> Iterator[Index]:
        """Every plane's index, in C order."""
        yield from np.ndindex(*self.stack_shape) if self.stack_shape else iter([()])

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.stack_shape)) if self.stack_shape else 1


class EmbeddingStore:
    """A zarr group of per-plane embeddings for one stack, model and preprocessing.

    Open with :meth:`open`; :meth:`get` returns a plane's embedding only if its digest
    matches, :meth:`put` writes features, then limits, then the digest.
    """

    def __init__(self, group: Any, meta: dict[str, Any]) -> None:
        self.group = group
        self.meta = meta
        self._features = group["features"]
        self._limits = group["limits"]
        self._digest = group["digest"]
        self._high_res = [group[name] for name in _high_res_arrays(meta)]
        self.tiles: list[tuple[int, int, int, int]] = [tuple(t) for t in dict(group.attrs).get(TILES_ATTR, [])]

    @classmethod
    def open(cls, path: str | Path, predictor: Predictor, layout: StackLayout, clevel: int = 5,
             create: bool = True, overwrite: bool = False, source: str | None = None) -> EmbeddingStore:
        """Open the store at ``path``, creating it where there is none.

        A store made for another model, data shape or preprocessing, or (where ``source``
        names the input image) for another image, raises :class:`StoreConflictError` and is
        left as it is; ``overwrite=True`` starts it afresh instead (or, where only the
        source differs, takes it over: planes are then reused only where their content is
        the same). With ``create=False`` the store must exist and fit: otherwise a
        ValueError says why, and nothing is changed."""
        zarr = _zarr()
        meta = _meta(predictor, layout)
        if not create:
            group, found = open_store(path)
            if found != meta:
                raise ValueError(f"the embedding store {path} was made for other data or another model "
                                 f"({_differences(found, meta)}); embed this layer with 'napari-sam embed' "
                                 "to make one that fits")
            return cls(zarr.open_group(str(path), mode="r+"), meta)
        found = check_store_path(path, source, overwrite)
        if found and found != meta and not overwrite:
            raise StoreConflictError(
                f"{path} holds embeddings made for other data or another model ({_differences(found, meta)}). "
                "Write these embeddings to another path, or replace the stored ones with overwrite=True "
                "(--overwrite on the command line)")
        group = zarr.open_group(str(path), mode="a")
        attrs = dict(group.attrs)
        arrays = (*ARRAYS, *_high_res_arrays(meta))
        if attrs.get("napari_sam") == meta and all(k in group for k in arrays):
            if source is not None and attrs.get(SOURCE_ATTR) != source:
                group.attrs.put({**attrs, SOURCE_ATTR: source})
            return cls(group, meta)
        # Clear the metadata first: if creation is interrupted, the next open starts afresh.
        group.attrs.put({})
        for name in set(group.keys()) - set(arrays):  # another model's maps, tiles for other bounds
            del group[name]
        stack = layout.stack_shape
        ones = (1,) * len(stack)
        codec = zarr.codecs.BloscCodec(cname="zstd", clevel=clevel, shuffle="shuffle", typesize=2)
        for name, shape in zip(("features", *_high_res_arrays(meta)), _map_shapes(meta)):
            group.create_array(name, shape=stack + shape, chunks=ones + shape, dtype="float16",
                               compressors=codec, fill_value=0, overwrite=True)
        group.create_array("limits", shape=stack + (2,), chunks=ones + (2,), dtype="float64",
                           fill_value=0, overwrite=True)
        group.create_array("digest", shape=stack + (DIGEST_BYTES,), chunks=ones + (DIGEST_BYTES,),
                           dtype="uint8", fill_value=0, overwrite=True)
        group.attrs.put({"napari_sam": meta} if source is None else {"napari_sam": meta, SOURCE_ATTR: source})
        return cls(group, meta)

    def digest(self, plane: np.ndarray) -> np.ndarray:
        """The signature a plane's stored embedding must carry: its bytes, model and preprocessing."""
        h = hashlib.blake2b(digest_size=DIGEST_BYTES)
        h.update(json.dumps(self.meta, sort_keys=True).encode())
        h.update(repr((plane.shape, str(plane.dtype))).encode())
        h.update(np.ascontiguousarray(plane).view(np.uint8).data)
        return np.frombuffer(h.digest(), dtype=np.uint8)

    def tile_digest(self, plane: np.ndarray, denoised: bool) -> np.ndarray:
        """The digest a plane's tiles are stored under: the plane's own, or for a plane shown
        to the model denoised, one of the plane and that treatment (so that tiles stored
        before the plane was denoised, or by another denoiser, are not taken for its own)."""
        digest = self.digest(plane)
        if not denoised:
            return digest
        h = hashlib.blake2b(digest.tobytes() + DENOISED_TILES.encode(), digest_size=DIGEST_BYTES)
        return np.frombuffer(h.digest(), dtype=np.uint8).copy()

    def is_done(self, index: Index, digest: np.ndarray) -> bool:
        try:
            return bool(np.array_equal(np.asarray(self._digest[index]), digest))
        except Exception:  # an unreadable digest chunk is a plane to embed again
            return False

    def get(self, index: Index, digest: np.ndarray, device: torch.device | str = "cpu") -> Embedding | None:
        """The plane's stored embedding (float32 on ``device``), or None if absent or stale."""
        from ..values import Embedding

        if not self.is_done(index, digest):
            return None
        features, *maps = (_tensor(a[index], device) for a in (self._features, *self._high_res))
        m = self.meta
        return Embedding(features, tuple(m["plane_shape"]), tuple(m["input_size"]), m["img_size"], m["model"],
                         high_res=tuple(maps) if maps else None)

    def limits(self, index: Index) -> tuple[float, float]:
        lo, hi = np.asarray(self._limits[index])
        return float(lo), float(hi)

    def put(self, index: Index, digest: np.ndarray, embedding: Embedding, limits: tuple[float, float]) -> None:
        """Write one plane; the digest goes last and marks it done."""
        for array, values in zip((self._features, *self._high_res), _halves(embedding, self.meta)):
            array[index] = values
        self._limits[index] = np.asarray(limits, dtype=np.float64)
        self._digest[index] = digest

    # ----------------------------------------------------------------- zoomed tiles

    @property
    def object_size(self) -> float | None:
        """The object size (pixels) the stored tiles were planned for, if tiles are stored."""
        size = dict(self.group.attrs).get(SIZE_ATTR)
        return float(size) if size is not None and self.tiles else None

    def use_tiles(self, tiles: Sequence[tuple[int, int, int, int]], object_size: float) -> None:
        """Store the tiles with these bounds (r0, c0, r1, c1), planned for objects of
        ``object_size`` pixels, for every plane; tiles stored for other bounds are dropped
        (their arrays are made afresh)."""
        tiles = [tuple(int(v) for v in t) for t in tiles]
        maps = _high_res_arrays(self.meta, "tile_")
        if tiles == self.tiles and all(k in self.group for k in (*TILE_ARRAYS, *maps)):
            if self.object_size != float(object_size):
                self.group.attrs.put({**dict(self.group.attrs), SIZE_ATTR: float(object_size)})
            return
        stack = tuple(self.meta["stack_shape"])
        ones = (1,) * len(stack)
        zarr = _zarr()
        codec = zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=2)
        attrs = {k: v for k, v in dict(self.group.attrs).items() if k not in (TILES_ATTR, SIZE_ATTR)}
        self.group.attrs.put(attrs)  # no tiles recorded while their arrays are remade
        for name, shape in zip(("tile_features", *maps), _map_shapes(self.meta)):
            self.group.create_array(name, shape=stack + (len(tiles),) + shape, chunks=ones + (1,) + shape,
                                    dtype="float16", compressors=codec, fill_value=0, overwrite=True)
        self.group.create_array("tile_digest", shape=stack + (len(tiles), DIGEST_BYTES),
                                chunks=ones + (len(tiles), DIGEST_BYTES), dtype="uint8", fill_value=0, overwrite=True)
        self.group.attrs.put({**attrs, TILES_ATTR: [list(t) for t in tiles], SIZE_ATTR: float(object_size)})
        self.tiles = tiles

    def get_tile(self, index: Index, tile: tuple[int, int, int, int], digest: np.ndarray,
                 device: torch.device | str = "cpu") -> Embedding | None:
        """A stored tile's embedding (float32 on ``device``), or None if absent or stale."""
        from ..values import Embedding

        i = self._tile_number(tile)
        if i is None:
            return None
        where = index + (i,)
        try:
            if not np.array_equal(np.asarray(self.group["tile_digest"][where]), digest):
                return None
            names = ("tile_features", *_high_res_arrays(self.meta, "tile_"))
            features, *maps = (_tensor(self.group[name][where], device) for name in names)
        except Exception:  # an unreadable chunk is a tile to embed again
            return None
        shape = (tile[2] - tile[0], tile[3] - tile[1])
        img_size = self.meta["img_size"]
        return Embedding(features, shape, _input_size(shape, img_size, self.meta), img_size, self.meta["model"],
                         high_res=tuple(maps) if maps else None)

    def put_tile(self, index: Index, tile: tuple[int, int, int, int], digest: np.ndarray,
                 embedding: Embedding) -> None:
        """Write one tile of a plane (one of :attr:`tiles`); its digest goes last."""
        i = self._tile_number(tile)
        if i is None:
            raise ValueError(f"the tile {tile} is not one this store holds")
        names = ("tile_features", *_high_res_arrays(self.meta, "tile_"))
        for name, values in zip(names, _halves(embedding, self.meta)):
            self.group[name][index + (i,)] = values
        self.group["tile_digest"][index + (i,)] = digest

    def _tile_number(self, tile: tuple[int, int, int, int]) -> int | None:
        try:
            return self.tiles.index(tuple(int(v) for v in tile))
        except ValueError:
            return None

    def nbytes_stored(self) -> int:
        """Bytes of the planes' features (and maps) on disk (compressed chunks)."""
        return sum(int(a.nbytes_stored()) for a in (self._features, *self._high_res))


def _high_res_arrays(meta: dict[str, Any], prefix: str = "") -> tuple[str, ...]:
    """The arrays of the high-resolution maps a store with ``meta`` holds: none for SAM 1."""
    return tuple(prefix + name for name in HIGH_RES_ARRAYS) if meta.get("high_res_shapes") else ()


def _map_shapes(meta: dict[str, Any]) -> list[tuple[int, ...]]:
    """The shapes of one plane's features, then of its high-resolution maps (if any)."""
    return [tuple(s) for s in (meta["feature_shape"], *meta.get("high_res_shapes", ()))]


def _halves(embedding: Embedding, meta: dict[str, Any]) -> list[np.ndarray]:
    """The embedding's features and high-resolution maps (where the store holds them) as
    float16 arrays of one plane, checked against the store's shapes before anything is written."""
    import torch

    maps = _high_res_arrays(meta)
    if maps and embedding.high_res is None:
        raise ValueError("this store holds SAM 2 embeddings, but the embedding has no high-resolution maps")
    tensors = (embedding.features, *(embedding.high_res if maps else ()))
    out = [t.detach().to("cpu", torch.float16).numpy()[0] for t in tensors]
    for values, shape in zip(out, _map_shapes(meta)):
        if values.shape != shape:
            raise ValueError(f"an embedding array of shape {values.shape} does not fit this store, "
                             f"which holds {shape}")
    return out


def _tensor(values: Any, device: torch.device | str) -> torch.Tensor:
    """One stored (float16) plane of an array -> float32 (1, ...) on ``device``."""
    import torch

    return torch.from_numpy(np.asarray(values))[None].to(device=device, dtype=torch.float32)


def _input_size(shape: tuple[int, int], img_size: int, meta: dict[str, Any]) -> tuple[int, int]:
    """The size a plane of ``shape`` takes in the model's input: its longest side resized
    to ``img_size`` (SAM 1, padded), or both sides (SAM 2, stretched)."""
    from ..imaging import resized_shape

    return (img_size, img_size) if meta.get("fit", "pad") == "stretch" else resized_shape(shape, img_size)


def _differences(found: dict[str, Any], meta: dict[str, Any]) -> str:
    differ = sorted(k for k in set(meta) | set(found) if meta.get(k) != found.get(k))
    return ", ".join(f"{k}: store {found.get(k)!r}, here {meta.get(k)!r}" for k in differ[:3])


def check_store_path(path: str | Path, source: str | None = None, overwrite: bool = False) -> dict[str, Any] | None:
    """Check that a store may be written at ``path`` without destroying anything, and
    return the metadata of the store there (None where there is none yet). Cheap: no model,
    no torch.

    Raises :class:`StoreConflictError` where ``path`` is a file, or a folder holding
    anything but an embedding store (whatever ``overwrite`` says: such files are never
    replaced), or a store recorded as made from another image than ``source`` (unless
    ``overwrite``). A store with no recorded source (made through the Python API) is taken
    to be this image's."""
    local = Path(path).expanduser()
    if not local.exists():  # nothing there yet, or not a local path (zarr handles URLs)
        return None
    if not local.is_dir():
        raise StoreConflictError(f"{path} is a file, not an embedding store (a folder such as "
                                 f"{local.with_suffix('.zarr').name}): choose another output path")
    entries = {p.name for p in local.iterdir() if not p.name.endswith(".partial")}  # zarr's unfinished writes
    if not entries:
        return None
    not_a_store = StoreConflictError(
        f"{path} is a folder of other files, not a napari-sam embedding store; it is never written "
        "into: choose another output path (a new folder, e.g. ending in .zarr)")
    ours = {*ARRAYS, *TILE_ARRAYS, *HIGH_RES_ARRAYS, *TILE_HIGH_RES_ARRAYS}
    if not entries <= {"zarr.json", *ours}:
        raise not_a_store
    try:
        group = _zarr().open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        members = set(group.keys())
    except Exception:  # noqa: BLE001 - whatever zarr makes of it, it is not one of our stores
        raise not_a_store from None
    if not set(attrs) <= {"napari_sam", SOURCE_ATTR, TILES_ATTR, SIZE_ATTR} or not members <= ours:
        raise not_a_store
    recorded = attrs.get(SOURCE_ATTR)
    if source is not None and recorded is not None and recorded != source and not overwrite:
        raise StoreConflictError(
            f"{path} holds the embeddings of another image, {recorded}, not of {source}. Write this image's "
            "embeddings to another path, or take the store over for it with overwrite=True (--overwrite on "
            "the command line; planes are then embedded again wherever their content differs)")
    return attrs.get("napari_sam") or None


def _meta(predictor: Predictor, layout: StackLayout) -> dict[str, Any]:
    img_size = int(predictor.model.img_size)
    pe = predictor.model.prompt_encoder
    c = int(pe.embed_dim)
    gh, gw = (int(n) for n in pe.grid_size)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "model": predictor.model_name,
        "img_size": img_size,
        "feature_shape": [c, gh, gw],
        "plane_shape": list(layout.plane_shape),
        "stack_shape": list(layout.stack_shape),
        "data": {"shape": list(layout.data_shape), "dtype": layout.dtype},
        "preprocessing": {
            "percentiles": list(predictor.percentiles),
            "normalisation": predictor.normalisation,
            "channel_axis": layout.channel_axis,
            "rgb": layout.rgb,
            "plane_axes": list(layout.plane_axes),
        },
    }
    # Keys only SAM 2 stores carry, so that a SAM 1 store's metadata is what it always was.
    fit, sam2 = _model_kind(predictor)
    if fit != "pad":
        meta["fit"] = fit
    if sam2:  # the decoder's maps at strides 4 and 8 of the input, from its 1x1 convolutions
        meta["high_res_shapes"] = [[c // 8, 4 * gh, 4 * gw], [c // 4, 2 * gh, 2 * gw]]
    meta["input_size"] = list(_input_size(layout.plane_shape, img_size, meta))
    # JSON round trip, so that it compares equal to what comes back from the attrs.
    return json.loads(json.dumps(meta))


def _model_kind(predictor: Predictor) -> tuple[str, bool]:
    """How the predictor fits a plane to its input ("pad" or "stretch"), and whether its
    model is a SAM 2 (whose embeddings carry high-resolution maps)."""
    from ..model.architectures import architecture

    fit, sam2 = getattr(predictor, "fit", None), getattr(predictor, "is_sam2", None)
    if fit is None or sam2 is None:  # not a Predictor: ask the architecture table, if the model names one
        arch = getattr(predictor.model, "arch", None)
        known = architecture(arch) if isinstance(arch, str) else None
        fit = fit or (known.fit if known else "pad")
        sam2 = sam2 if sam2 is not None else known is not None and known.tracks_with_memory
    return str(fit), bool(sam2)


@dataclass(frozen=True)
class PlaneDone:
    """Yielded by :func:`iter_embed_stack` after each plane."""

    index: Index
    done: int
    total: int
    hit: bool
    seconds: float


def iter_embed_stack(
    predictor: Predictor, data: Any, path: str | Path, channel_axis: int | None = None,
    rgb: bool = False, plane_axes: tuple[int, int] = (-2, -1), overwrite: bool = False,
    source: str | None = None, tiles: bool = False, object_size: float | None = None,
) -> Iterator[PlaneDone]:
    """Embed every plane of ``data`` into the store at ``path``, reusing stored planes.

    Reads one plane at a time; yields after each plane (stop iterating to cancel).
    ``source`` names the input (e.g. its resolved path) so that a store made from another
    image is refused; ``overwrite`` replaces what does not fit (see :meth:`EmbeddingStore.open`).
    With ``tiles``, each plane's zoomed tiles are stored too, for objects of ``object_size``
    pixels (measured on the first plane when None): the windows the widget answers prompts from.
    """
    from ..imaging import intensity_limits, plane_of
    from ..prompting.service import PromptService, stack_denoises
    from ..prompting.windows import Window

    layout = StackLayout.of(data, channel_axis, rgb, plane_axes)
    store = EmbeddingStore.open(path, predictor, layout, overwrite=overwrite, source=source)
    service = PromptService(predictor)
    windows = []
    if tiles:
        first = plane_of(data, next(iter(layout.indices())), layout.channel_axis, rgb, layout.plane_axes)
        if object_size is None:
            object_size = service.plane_diameter(first, "first plane")
        denoise = stack_denoises(service, first)  # as the engine decides, for every plane
        windows = service.tiles(layout.plane_shape, object_size)
        store.use_tiles([w.bounds for w in windows], object_size)
    total = layout.n_planes
    for done, index in enumerate(layout.indices(), start=1):
        start = time.perf_counter()
        plane = plane_of(data, index, layout.channel_axis, rgb, layout.plane_axes)
        digest = store.digest(plane)
        hit = store.is_done(index, digest)
        limits = store.limits(index) if hit else intensity_limits(plane, predictor.percentiles)
        if not hit:
            store.put(index, digest, predictor.embed(plane, limits=limits), limits)
        if windows:  # as the prompt service embeds them: photon-limited planes denoised
            signature = ("store plane", index)
            tile_limits = service.plane_limits(plane, signature, denoise)
            tile_digest = store.tile_digest(plane, service.denoises(signature))
        for win in windows:
            if store.get_tile(index, win.bounds, tile_digest) is None:
                hit = False
                emb = service.embed_window(plane, Window(*win.bounds), signature, tile_limits)
                store.put_tile(index, win.bounds, tile_digest, emb)
        yield PlaneDone(index, done, total, hit, time.perf_counter() - start)


def embed_stack(
    predictor: Predictor, data: Any, path: str | Path, channel_axis: int | None = None,
    rgb: bool = False, plane_axes: tuple[int, int] = (-2, -1),
    progress: Callable[[PlaneDone], None] | None = None, overwrite: bool = False,
    source: str | None = None, tiles: bool = False, object_size: float | None = None,
) -> tuple[int, int]:
    """:func:`iter_embed_stack` for plain callers; returns (planes reused, total planes)."""
    hits = total = 0
    for item in iter_embed_stack(predictor, data, path, channel_axis, rgb, plane_axes, overwrite, source,
                                 tiles, object_size):
        hits += item.hit
        total = item.total
        if progress is not None:
            progress(item)
    return hits, total


def open_store(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """An existing store's zarr group and metadata, for reading without a model."""
    zarr = _zarr()
    group = zarr.open_group(str(path), mode="r")
    meta = dict(group.attrs).get("napari_sam")
    if not meta:
        raise ValueError(f"{path} is not a napari-sam embedding store (or its creation was interrupted)")
    return group, meta


def load_embedding(path: str | Path, index: Sequence[int] = ()) -> Embedding | None:
    """One plane's embedding from an existing store, or None if it was never completed.

    Does not check the plane's content: use :class:`EmbeddingStore` with a digest for that.
    """
    from ..values import Embedding

    group, meta = open_store(path)
    index = tuple(int(i) for i in index)
    if not np.asarray(group["digest"][index]).any():
        return None
    features, *maps = (_tensor(group[name][index], "cpu") for name in ("features", *_high_res_arrays(meta)))
    return Embedding(features, tuple(meta["plane_shape"]), tuple(meta["input_size"]), meta["img_size"], meta["model"],
                     high_res=tuple(maps) if maps else None)
