"""SAM 2 embeddings through the in-memory cache and the zarr store: the two high-resolution
decoder maps come back (float32, within float16 rounding), the byte budget counts them,
stretch-fit geometry is kept, writes stay crash-safe, and SAM 1 stores are unchanged."""

from __future__ import annotations

import errno
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_sam.cache import EmbeddingCache
from napari_sam.embeddings.store import (
    EmbeddingStore, StackLayout, StoreConflictError, check_store_path, embed_stack, iter_embed_stack, load_embedding,
)
from napari_sam.values import Embedding

FEATURES = (1, 256, 64, 64)
HIGH_RES = ((1, 32, 256, 256), (1, 64, 128, 128))
HALF_BYTES = 2 * sum(int(np.prod(s)) for s in (FEATURES, *HIGH_RES))  # one SAM 2 embedding in float16


def sam2_embedding(seed: int, original_size: tuple[int, int] = (96, 128)) -> Embedding:
    gen = torch.Generator().manual_seed(seed)
    features, *maps = (torch.randn(s, generator=gen) * 3 for s in (FEATURES, *HIGH_RES))
    return Embedding(features, original_size, (1024, 1024), 1024, "sam2.1_hiera_t", high_res=tuple(maps))


def assert_half_of(got: Embedding, sent: Embedding) -> None:
    """``got`` is ``sent`` rounded to float16 and back: float32, same geometry, same values."""
    assert got.high_res is not None and len(got.high_res) == 2
    for g, s in zip((got.features, *got.high_res), (sent.features, *sent.high_res)):
        assert g.dtype == torch.float32 and g.shape == s.shape
        assert torch.equal(g, s.half().float())
        torch.testing.assert_close(g, s, rtol=2**-10, atol=1e-4)  # fp16 rounding only
    assert (got.original_size, got.input_size, got.img_size, got.model_name) == \
           (sent.original_size, sent.input_size, sent.img_size, sent.model_name)


# --------------------------------------------------------------------------- cache


def test_cache_round_trip_keeps_high_res_maps_and_counts_their_bytes():
    cache = EmbeddingCache(max_bytes=int(2.5 * HALF_BYTES))  # room for two SAM 2 planes
    sent = [sam2_embedding(seed) for seed in range(3)]
    cache.put(("p", 0), sent[0])
    assert cache.nbytes == HALF_BYTES  # features and both maps, in float16
    got = cache.get(("p", 0))
    assert_half_of(got, sent[0])
    assert got.origin is not None and got.origin is cache.get(("p", 0)).origin  # one origin per stored item

    cache.put(("p", 1), sent[1])
    cache.put(("p", 2), sent[2])  # the maps make three planes too many: the oldest goes
    assert ("p", 0) not in cache and len(cache) == 2 and cache.nbytes == 2 * HALF_BYTES
    assert_half_of(cache.get(("p", 2)), sent[2])

    sam1 = Embedding(sent[0].features, (96, 128), (768, 1024), 1024, "vit_b")
    cache.put(("p", 3), sam1)  # a SAM 1 plane counts its features only: it fits beside them
    assert len(cache) == 3 and cache.nbytes == 2 * HALF_BYTES + 2 * int(np.prod(FEATURES))
    assert cache.get(("p", 3)).high_res is None


# --------------------------------------------------------------------------- store


class FakeSam2Predictor:
    """The store's view of a SAM 2 predictor, with an encoder that costs nothing: its
    features and maps depend on the plane and the limits, so stale embeddings would show."""

    is_sam2 = True
    fit = "stretch"

    def __init__(self) -> None:
        self.percentiles = (1.0, 99.8)
        self.normalisation = "sam"
        self.model_name = "sam2.1_hiera_t"
        self.model = SimpleNamespace(img_size=1024, prompt_encoder=SimpleNamespace(embed_dim=256, grid_size=(64, 64)))
        self.calls = 0

    def embed(self, plane: np.ndarray, limits: tuple[float, float] | None = None) -> Embedding:
        self.calls += 1
        seed = int(np.asarray(plane, np.float64).sum() * 7 + (limits[1] if limits else 0)) % 2**31
        return sam2_embedding(seed, plane.shape[:2])


@pytest.fixture
def stack() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 1000, (2, 96, 128), dtype=np.uint16)


def test_store_round_trip_of_sam2_planes_and_tiles_from_disk(tmp_path, stack):
    pred = FakeSam2Predictor()
    layout = StackLayout.of(stack)
    store = EmbeddingStore.open(tmp_path / "s.zarr", pred, layout)
    tiles = [(0, 0, 64, 64), (32, 64, 96, 128)]
    store.use_tiles(tiles, 20.0)
    sent, sent_tiles = {}, {}
    for (i,) in layout.indices():
        digest = store.digest(stack[i])
        sent[i] = pred.embed(stack[i])
        store.put((i,), digest, sent[i], (0.0, 1.0))
        for t in tiles:
            sent_tiles[i, t] = pred.embed(stack[i][t[0]:t[2], t[1]:t[3]])
            store.put_tile((i,), t, digest, sent_tiles[i, t])

    reopened = EmbeddingStore.open(tmp_path / "s.zarr", FakeSam2Predictor(), layout, create=False)
    assert reopened.meta["high_res_shapes"] == [list(s[1:]) for s in HIGH_RES]
    assert reopened.meta["fit"] == "stretch" and reopened.meta["input_size"] == [1024, 1024]
    for name, shape in [("features", FEATURES), ("high_res_0", HIGH_RES[0]), ("high_res_1", HIGH_RES[1])]:
        assert reopened.group[name].chunks == shape and reopened.group[name].dtype == np.float16
        assert reopened.group["tile_" + name].chunks == (1, *shape)
    for i in range(2):
        digest = reopened.digest(stack[i])
        got = reopened.get((i,), digest)
        assert got.input_size == (1024, 1024) and got.original_size == (96, 128)  # stretched, not padded
        assert_half_of(got, sent[i])
        assert_half_of(load_embedding(tmp_path / "s.zarr", (i,)), sent[i])
        for t in tiles:
            tile = reopened.get_tile((i,), t, digest)
            assert tile.input_size == (1024, 1024) and tile.original_size == (64, 64)
            assert_half_of(tile, sent_tiles[i, t])
    assert reopened.get((0,), reopened.digest(stack[1])) is None  # another plane's content: stale


def test_embed_stack_reuses_sam2_planes_and_a_crash_mid_write_leaves_the_plane_undone(tmp_path, stack, monkeypatch):
    import zarr

    pred = FakeSam2Predictor()
    real_setitem = zarr.Array.__setitem__

    def full_disk(self, key, value):
        if self.basename == "high_res_1" and key == (1,):  # after the plane's features and first map
            raise OSError(errno.ENOSPC, "No space left on device")
        real_setitem(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", full_disk)
    with pytest.raises(OSError, match="No space"):
        embed_stack(pred, stack, tmp_path / "s.zarr")
    monkeypatch.setattr(zarr.Array, "__setitem__", real_setitem)
    assert load_embedding(tmp_path / "s.zarr", (1,)) is None
    assert [item.hit for item in iter_embed_stack(pred, stack, tmp_path / "s.zarr")] == [True, False]
    assert embed_stack(pred, stack, tmp_path / "s.zarr") == (2, 2) and pred.calls == 3
    assert_half_of(load_embedding(tmp_path / "s.zarr", (1,)), pred.embed(stack[1], limits=_limits(tmp_path, 1)))


def _limits(tmp_path, i: int) -> tuple[float, float]:
    import zarr

    lo, hi = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["limits"][i]
    return float(lo), float(hi)


def test_a_plane_without_maps_is_refused_before_anything_is_written(tmp_path, stack):
    store = EmbeddingStore.open(tmp_path / "s.zarr", FakeSam2Predictor(), StackLayout.of(stack))
    e = sam2_embedding(1)
    for bad, match in [(Embedding(e.features, (96, 128), (1024, 1024), 1024), "no high-resolution maps"),
                       (Embedding(e.features, (96, 128), (1024, 1024), 1024, high_res=(e.high_res[1], e.high_res[0])),
                        "does not fit this store")]:
        with pytest.raises(ValueError, match=match):
            store.put((0,), store.digest(stack[0]), bad, (0.0, 1.0))
    assert not np.asarray(store.group["features"][0]).any() and not np.asarray(store.group["digest"][0]).any()


class FakeSam1Predictor(FakeSam2Predictor):
    is_sam2 = False
    fit = "pad"

    def __init__(self) -> None:
        super().__init__()
        self.model_name = "vit_b"

    def embed(self, plane: np.ndarray, limits: tuple[float, float] | None = None) -> Embedding:
        e = super().embed(plane, limits)
        return Embedding(e.features, e.original_size, (768, 1024), 1024, self.model_name)


def test_a_sam2_store_and_a_sam1_store_refuse_each_other_unless_overwrite(tmp_path, stack):
    path = tmp_path / "s.zarr"
    embed_stack(FakeSam2Predictor(), stack, path)
    with pytest.raises(StoreConflictError, match="other data or another model.*overwrite=True"):
        embed_stack(FakeSam1Predictor(), stack, path)
    assert embed_stack(FakeSam2Predictor(), stack, path) == (2, 2)  # nothing was dropped
    assert embed_stack(FakeSam1Predictor(), stack, path, overwrite=True) == (0, 2)
    import zarr

    assert set(zarr.open_group(str(path), mode="r").keys()) == {"features", "limits", "digest"}  # no stale maps
    assert load_embedding(path, (0,)).high_res is None and load_embedding(path, (0,)).input_size == (768, 1024)
    assert check_store_path(path)["model"] == "vit_b"
    assert embed_stack(FakeSam2Predictor(), stack, path, overwrite=True) == (0, 2)
    assert load_embedding(path, (1,)).high_res is not None


def test_a_sam1_store_is_written_exactly_as_before_sam2(tmp_path):
    """The metadata and digest of a SAM 1 store, pinned to what the store wrote before it
    knew SAM 2: stores on users' disks keep opening and their planes stay reused."""
    pred = SimpleNamespace(percentiles=(1.0, 99.8), normalisation="minmax", model_name="fake",
                           model=SimpleNamespace(img_size=256, prompt_encoder=SimpleNamespace(embed_dim=8,
                                                                                              grid_size=(4, 4))))
    data = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    store = EmbeddingStore.open(tmp_path / "s.zarr", pred, StackLayout.of(data))
    assert store.meta == {
        "format": 1, "model": "fake", "img_size": 256, "feature_shape": [8, 4, 4], "plane_shape": [20, 30],
        "input_size": [171, 256], "stack_shape": [3], "data": {"shape": [3, 20, 30], "dtype": "uint16"},
        "preprocessing": {"percentiles": [1.0, 99.8], "normalisation": "minmax", "channel_axis": None, "rgb": False,
                          "plane_axes": [1, 2]}}
    assert store.digest(data[1]).tobytes().hex() == "a98d08f71b4cb55ec9bf86ebb2861d3f"
    assert set(store.group.keys()) == {"features", "limits", "digest"}
    assert json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())["attributes"]["napari_sam"] == store.meta


# --------------------------------------------------------------------------- a real SAM 2.1


def test_embed_stack_with_a_random_weight_sam2_tiny(tmp_path, monkeypatch):
    """Two 96x128 planes through a random-weight SAM 2.1 tiny: what the predictor made is
    what the store gives back (maps included, float16-rounded), with the stretch geometry."""
    from napari_sam.model.loading import build
    from napari_sam.predictor import Predictor

    torch.manual_seed(0)
    predictor = Predictor(build("sam2.1_hiera_t").eval())
    made = {}
    real_put = EmbeddingStore.put

    def keep(self, index, digest, embedding, limits):
        made[index] = embedding
        real_put(self, index, digest, embedding, limits)

    monkeypatch.setattr(EmbeddingStore, "put", keep)
    data = np.random.default_rng(2).integers(0, 4096, (2, 96, 128), dtype=np.uint16)
    assert embed_stack(predictor, data, tmp_path / "s.zarr") == (0, 2)
    for i in range(2):
        got = load_embedding(tmp_path / "s.zarr", (i,))
        assert got.input_size == (1024, 1024) and got.original_size == (96, 128)
        assert made[(i,)].high_res is not None and made[(i,)].input_size == (1024, 1024)
        assert_half_of(got, made[(i,)])
