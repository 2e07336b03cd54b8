"""The embedding engine: byte-budget LRU in float16, plane sources, queue priority,
cancellation and invalidation. A fake predictor stands in where the model is irrelevant."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_sam.embeddings.engine import EmbeddingCache, Engine, PlaneSource, data_signature
from napari_sam.predictor import Embedding


def fake_embedding(value: float = 1.0, side: int = 8) -> Embedding:
    feats = torch.full((1, 4, side, side), value, dtype=torch.float32)
    return Embedding(feats, (16, 16), (16, 16), 16, "fake")


class FakePredictor:
    """Records the planes it embeds; each embedding holds the plane's mean."""

    model_name = "fake"
    percentiles = (1.0, 99.8)
    device = torch.device("cpu")

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.seen: list[float] = []
        self.gate = gate

    def embed(self, plane: np.ndarray) -> Embedding:
        if self.gate is not None:
            self.gate.wait(5)
        self.seen.append(float(np.mean(plane)))
        return fake_embedding(float(np.mean(plane)))


def stack(n: int = 6) -> np.ndarray:
    """Plane i is filled with the value i."""
    return np.repeat(np.arange(n, dtype=np.float32)[:, None, None], 16, axis=1).repeat(16, axis=2)


# ------------------------------------------------------------------ cache


def test_cache_stores_float16_on_cpu_and_returns_float32():
    cache = EmbeddingCache()
    emb = fake_embedding(0.1234567)
    cache.put(("k",), emb)
    stored = cache._items[("k",)]
    assert stored.features.dtype == torch.float16 and stored.features.device.type == "cpu"
    assert cache.nbytes == emb.features.numel() * 2
    got = cache.get(("k",))
    assert got.features.dtype == torch.float32
    assert torch.allclose(got.features, emb.features, atol=1e-3)
    assert got.original_size == emb.original_size and got.model_name == "fake"


def test_cache_evicts_least_recently_used_by_bytes():
    one = fake_embedding().features.numel() * 2  # bytes of one stored embedding
    cache = EmbeddingCache(max_bytes=3 * one)
    for k in "abc":
        cache.put((k,), fake_embedding())
    assert cache.get(("a",)) is not None  # "a" becomes the most recently used
    cache.put(("d",), fake_embedding())
    assert ("b",) not in cache and all((k,) in cache for k in "acd")
    assert cache.nbytes == 3 * one
    cache.put(("big",), fake_embedding(side=16))  # 4x the bytes: larger than the budget
    assert ("big",) not in cache and len(cache) == 3


def test_cache_replacing_a_key_keeps_the_byte_count():
    cache = EmbeddingCache()
    cache.put(("k",), fake_embedding(1.0))
    cache.put(("k",), fake_embedding(2.0))
    assert len(cache) == 1 and cache.nbytes == fake_embedding().features.numel() * 2
    assert float(cache.get(("k",)).features[0, 0, 0, 0]) == 2.0


# ------------------------------------------------------------------ sources


def test_plane_source_reads_planes_and_handles_axes():
    data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    src = PlaneSource(data)
    assert src.stack_axes == (0, 1) and src.stack_shape == (2, 3)
    np.testing.assert_array_equal(src.plane((1, 2)), data[1, 2])
    transposed = PlaneSource(data, plane_axes=(3, 2))  # rows along axis 3
    np.testing.assert_array_equal(transposed.plane((1, 2)), data[1, 2].T)
    chan = PlaneSource(data, channel_axis=0)  # 2 channels -> RGB with an empty blue
    plane = chan.plane((1,))
    assert plane.shape == (4, 5, 3)
    np.testing.assert_array_equal(plane[..., 0], data[0, 1])
    np.testing.assert_array_equal(plane[..., 1], data[1, 1])
    assert not plane[..., 2].any()
    rgb = PlaneSource(np.zeros((3, 4, 5, 3), np.uint8), rgb=True)
    assert rgb.stack_shape == (3,) and rgb.plane((2,)).shape == (4, 5, 3)
    with pytest.raises(IndexError):
        src.plane((2, 0))
    with pytest.raises(ValueError):
        PlaneSource(data, plane_axes=(2, 2))
    with pytest.raises(ValueError, match="4 channels"):
        PlaneSource(np.zeros((4, 5, 6)), channel_axis=0)


def test_neighbours_are_nearest_first_and_clipped():
    src = PlaneSource(stack(5))
    assert src.neighbours((2,), 2) == [(3,), (1,), (4,), (0,)]
    assert src.neighbours((0,), 1) == [(1,)]
    assert PlaneSource(np.zeros((4, 4))).neighbours((), 3) == []


def test_signature_changes_with_data_and_reads_only_a_sample():
    a = np.random.default_rng(0).random((4, 64, 64))
    b = a.copy()
    assert data_signature(a)[1:3] == data_signature(b)[1:3]
    assert data_signature(a) != data_signature(b)  # another array: another identity
    before = data_signature(a)
    a[:, ::2, ::2] += 1  # an edit that the strided sample sees
    assert data_signature(a) != before
    import dask.array as dask

    d = dask.from_array(b, chunks=(1, 64, 64))
    assert data_signature(d) == data_signature(dask.from_array(b, chunks=(1, 64, 64)))
    assert data_signature(d) != data_signature(d + 1)


def test_memmap_and_dask_sources_read_one_plane(tmp_path):
    data = stack(4)
    mm = np.lib.format.open_memmap(tmp_path / "s.npy", mode="w+", dtype=np.float32, shape=data.shape)
    mm[:] = data
    engine = Engine(FakePredictor())
    assert float(engine.embedding(PlaneSource(mm), (2,)).features[0, 0, 0, 0]) == 2.0
    import dask.array as dask

    lazy = dask.from_array(data, chunks=(1, 16, 16))
    assert float(engine.embedding(PlaneSource(lazy), (3,)).features[0, 0, 0, 0]) == 3.0


# ------------------------------------------------------------------ engine


def test_embedding_is_cached_per_plane():
    pred = FakePredictor()
    engine = Engine(pred)
    src = PlaneSource(stack())
    first = engine.embedding(src, (3,))
    again = engine.embedding(src, (3,))
    assert pred.seen == [3.0]
    assert torch.equal(first.features, again.features) and engine.cached(src, (4,)) is None


def test_changed_image_invalidates():
    pred = FakePredictor()
    engine = Engine(pred)
    data = stack()
    engine.embedding(PlaneSource(data), (1,))
    data[1] += 10  # edited in place: a new source sees a new signature
    assert engine.cached(PlaneSource(data), (1,)) is None
    assert float(engine.embedding(PlaneSource(data), (1,)).features[0, 0, 0, 0]) == 11.0
    assert pred.seen == [1.0, 11.0]


def test_request_puts_the_current_plane_first_then_neighbours():
    pred = FakePredictor()
    engine = Engine(pred)
    src = PlaneSource(stack(8))
    engine.request(src, (5,), prefetch=2)
    done = [item.index for item in engine.run()]
    assert done == [(5,), (6,), (4,), (7,), (3,)]
    assert pred.seen == [5.0, 6.0, 4.0, 7.0, 3.0]


def test_new_request_jumps_ahead_of_prefetching():
    pred = FakePredictor()
    engine = Engine(pred)
    src = PlaneSource(stack(8))
    engine.request(src, (1,), prefetch=2)
    run = engine.run()
    assert next(run).index == (1,)
    engine.request(src, (6,), prefetch=1)  # the user moved while plane 1 was embedding
    rest = [item.index for item in run]
    assert rest == [(6,), (7,), (5,)]
    engine.request(src, (6,), prefetch=1)  # all cached: nothing to do
    assert engine.pending() == 0


def test_cancel_stops_between_planes():
    gate = threading.Event()
    pred = FakePredictor(gate)
    engine = Engine(pred)
    src = PlaneSource(stack(8))
    engine.request(src, (4,), prefetch=3)
    got = []
    worker = threading.Thread(target=lambda: got.extend(item.index for item in engine.run()))
    worker.start()
    engine.cancel()  # while the first plane is still being embedded
    gate.set()
    worker.join(5)
    assert not worker.is_alive()
    assert len(pred.seen) <= 1 and engine.pending() == 0 and engine.cancelled
    engine.request(src, (0,))  # a new request clears the cancel
    assert not engine.cancelled and engine.run_all() == 1


def test_run_all_reports_progress_through_a_callback():
    engine = Engine(FakePredictor())
    src = PlaneSource(stack(4))
    engine.request(src, (0,), prefetch=3)
    seen = []
    assert engine.run_all(seen.append) == 4
    assert [s.remaining for s in seen] == [3, 2, 1, 0]


def test_real_model_embedding_from_cache_matches_direct(lite_predictor, nuclei3d):
    image, _ = nuclei3d
    engine = Engine(lite_predictor, EmbeddingCache())
    src = PlaneSource(image)
    cached = engine.embedding(src, (15,))
    direct = lite_predictor.embed(image[15])
    assert cached.features.shape == (1, 256, 64, 64)
    torch.testing.assert_close(engine.cached(src, (15,)).features, direct.features, atol=2e-2, rtol=1e-2)
    # the same prompt decodes to the same mask from the fp16-cached embedding
    box = (20, 15, 40, 40)
    a = lite_predictor.predict(engine.cached(src, (15,)), box=box).masks
    b = lite_predictor.predict(direct, box=box).masks
    assert (a != b).mean() < 0.01
    assert engine.key(src, (15,))[0] == "lite_medsam"


def test_the_decoders_image_side_is_prepared_once_per_plane_on_the_widgets_calls(nuclei3d):
    """The widget reads the plane's embedding from the cache for every prompt (each read is
    a new float32 tensor) and decodes: the prompt-independent decoder work must run once per
    plane, not once per prompt, and again only for another plane."""
    from napari_sam import Predictor, load_model

    predictor = Predictor(load_model("lite_medsam", device="cpu", precision="fp32"))
    decoder = predictor.model.mask_decoder
    prepare, calls = decoder.prepare_image, []
    decoder.prepare_image = lambda *args: calls.append(1) or prepare(*args)
    image, _ = nuclei3d
    engine = Engine(predictor, EmbeddingCache())
    src = PlaneSource(image)
    engine.embedding(src, (15,))
    engine.embedding(src, (16,))
    first = None
    for box in [(20, 15, 40, 40), (10, 10, 30, 30), (20, 15, 40, 40)]:  # the widget's sequence
        embedding = engine.cached(src, (15,))
        out = predictor.predict(embedding, box=box)
        first = out if first is None else first
    assert len(calls) == 1
    assert np.array_equal(out.masks, first.masks)  # the third prompt repeats the first: same mask
    predictor.predict(engine.cached(src, (16,)), box=(20, 15, 40, 40))
    predictor.predict(engine.cached(src, (16,)), box=(10, 10, 30, 30))
    assert len(calls) == 2


# --------------------------------------------------------------------------- zoomed tiles


def test_tiles_are_embedded_nearest_first_and_then_prompts_cost_a_decoder_call(lite_predictor, nuclei2d):
    """The engine embeds the plane, then its tiles at the objects' zoom, nearest the
    point asked first; afterwards a box or a click on a typical object embeds nothing more
    and reuses the decoder's prepared image of its tile."""
    from napari_sam.embeddings.engine import Engine, PlaneSource
    from napari_sam.metrics import iou

    image, labels = nuclei2d
    crop, truth = image[:256, :256], labels[:256, :256]
    engine = Engine(lite_predictor)
    source = PlaneSource(crop)
    engine.request(source, (), tiles_near=(250.0, 10.0))
    items = list(engine.run())
    assert items[0].window is None and items[0].key == engine.key(source, ())  # the plane first
    assert items[1].key is None  # the tiles planned: object size measured
    tiles = [item.window for item in items if item.window is not None]
    assert len(tiles) == 9 and tiles[0].contains(np.array([250.0, 10.0, 251.0, 11.0]))
    assert engine.tiles_embedded(source, ()) == (9, 9)
    assert 18 < engine.known_object_size(source, ()) < 30

    calls = engine.prompts.encoder_calls
    prepared = []
    prepare = lite_predictor.model.mask_decoder.prepare_image
    lite_predictor.model.mask_decoder.prepare_image = lambda *a: prepared.append(1) or prepare(*a)
    try:
        inner = np.unique(truth[1:-1, 1:-1])[1:]
        border = np.unique(np.concatenate([truth[0], truth[-1], truth[:, 0], truth[:, -1]]))
        ids = [k for k in inner if k not in border and (truth == k).sum() > 150][:4]
        boxes, clicks = [], []
        for k in ids:
            rows, cols = np.nonzero(truth == k)
            box = [rows.min() - 1, cols.min() - 1, rows.max() + 1, cols.max() + 1]
            first = engine.segment(source, (), box=box)
            before = len(prepared)
            again = engine.segment(source, (), box=box)
            assert len(prepared) == before  # the widget's next prompt on a tile: prepared image reused
            assert np.array_equal(first.masks, again.masks)
            boxes.append(iou(first.masks[first.best], truth == k))
            click = engine.segment(source, (), points=[[rows.mean(), cols.mean()]], labels=[1])
            clicks.append(iou(click.masks[click.best], truth == k))
    finally:
        lite_predictor.model.mask_decoder.prepare_image = prepare
    assert engine.prompts.encoder_calls == calls  # every window was a tile embedded ahead
    assert np.mean(boxes) > 0.75 and np.mean(clicks) > 0.6, (boxes, clicks)


def test_a_newer_request_drops_the_tiles_of_the_old_one(lite_predictor, nuclei2d):
    from napari_sam.embeddings.engine import Engine, PlaneSource

    image, _ = nuclei2d
    engine = Engine(lite_predictor)
    a, b = PlaneSource(image[:256, :256].copy()), PlaneSource(image[256:, 256:].copy())
    engine.request(a, (), tiles_near=(0.0, 0.0))
    run = engine.run()
    next(run)  # plane a
    engine.request(b, ())  # the user moved on before a's tiles were planned
    rest = list(run)
    assert [item.source for item in rest] == [b]


def test_a_stack_is_denoised_whole_or_not_at_all_as_its_first_plane_says(lite_predictor, nuclei2d):
    """Planes near the threshold must not switch treatment from one to the next: the first
    plane decides for the stack, in the engine, its automatic segmentation and its store."""
    from napari_sam.embeddings.engine import Engine, PlaneSource
    from napari_sam.prompting.noise import fit_noise
    from napari_sam.variants import low_photon

    image, labels = nuclei2d
    clean, few = image[:192, :192], low_photon(image, labels, photons=15)[0][192:384, 192:384]
    assert fit_noise(few).limited and not fit_noise(clean).limited
    for stack, denoised in [(np.stack([few, clean]), True), (np.stack([clean, few]), False)]:
        engine = Engine(lite_predictor)
        source = PlaneSource(stack)
        engine.segment(source, (1,), box=[40, 40, 70, 75])
        assert engine.denoises(source, (1,)) == denoised and engine.source_denoises(source) == denoised
        other = lite_predictor.prompts(EmbeddingCache())
        engine.plane_limits(source, (0,), stack[0], other)  # the jobs' service: the same treatment
        assert other.denoises(engine.key(source, (0,))) == denoised


def test_a_small_plane_is_embedded_once_for_the_plane_and_its_prompts(lite_predictor, nuclei2d):
    """A plane smaller than the smallest tile is its own only window: a prompt on it reuses
    the plane's embedding (no second encoder pass), with the masks that pass would give.
    A photon-limited one is shown to the model denoised in its window: one pass more."""
    from napari_sam.embeddings.engine import Engine, PlaneSource
    from napari_sam.metrics import iou

    from napari_sam.variants import low_photon

    image, labels = nuclei2d[0][None, :120, :120], nuclei2d[1][None, :120, :120]
    few = low_photon(image[0], labels[0], photons=15)[0][None]  # 2.8 noise sigmas of contrast (the native crop 6.9)
    for stack, truth, z, denoised in [(image, labels, 0, False), (few, labels, 0, True)]:
        engine = Engine(lite_predictor)
        source = PlaneSource(stack)
        engine.request(source, (z,), tiles_near=(30.0, 30.0))
        engine.run_all()
        assert engine.denoises(source, (z,)) == denoised
        assert engine.tiles_embedded(source, (z,)) == (1, 1) and engine.prompts.encoder_calls == denoised
        k = np.bincount(truth[z].ravel())[1:].argmax() + 1
        rows, cols = np.nonzero(truth[z] == k)
        box = [rows.min(), cols.min(), rows.max(), cols.max()]
        shared = engine.segment(source, (z,), box=box)
        assert engine.prompts.encoder_calls == denoised
        computed = Engine(lite_predictor).segment(source, (z,), box=box)
        assert np.array_equal(shared.masks, computed.masks) and iou(shared.masks[0], truth[z] == k) > 0.6
