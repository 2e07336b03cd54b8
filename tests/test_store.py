"""The on-disk embedding store and ``napari-sam embed``: exact round trips, reuse across
runs, invalidation on edits or other preprocessing, and no corruption on failed writes."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch

from napari_sam.cli import main
from napari_sam.predictor import Embedding, Predictor
from napari_sam.embeddings.store import (
    EmbeddingStore, StackLayout, StoreConflictError, embed_stack, iter_embed_stack, load_embedding,
)

MAX_BYTES_PER_PLANE = 2.2e6


class FakePredictor:
    """The store's view of a predictor, with a cheap encoder whose output depends on the
    plane and the limits, so that stale embeddings would show."""

    def __init__(self, percentiles: tuple[float, float] = (1.0, 99.8)) -> None:
        self.percentiles = percentiles
        self.normalisation = "minmax"
        self.model_name = "fake"
        self.model = SimpleNamespace(img_size=256, prompt_encoder=SimpleNamespace(embed_dim=8, grid_size=(4, 4)))
        self.calls = 0

    def embed(self, plane: np.ndarray, limits: tuple[float, float] | None = None) -> Embedding:
        self.calls += 1
        value = float(np.mean(plane)) + (limits[1] if limits else 0.0)
        features = torch.full((1, 8, 4, 4), value) + torch.arange(16.0).reshape(1, 1, 4, 4)
        return Embedding(features, plane.shape[:2], (256, 256), 256, self.model_name)


@pytest.fixture
def stack() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 1000, (3, 32, 32), dtype=np.uint16)


def read_all(path, predictor, data):
    layout = StackLayout.of(data)
    store = EmbeddingStore.open(path, predictor, layout)
    return [store.get(i, store.digest(data[i])) for i in layout.indices()]


def test_round_trip_and_reuse(tmp_path, stack):
    pred = FakePredictor()
    assert embed_stack(pred, stack, tmp_path / "s.zarr") == (0, 3)
    assert pred.calls == 3
    assert embed_stack(pred, stack, tmp_path / "s.zarr") == (3, 3)
    assert pred.calls == 3
    for i, emb in enumerate(read_all(tmp_path / "s.zarr", pred, stack)):
        direct = pred.embed(stack[i], limits=(0.0, 0.0))  # only the geometry is compared
        assert (emb.original_size, emb.input_size, emb.img_size, emb.model_name) == \
               (direct.original_size, direct.input_size, direct.img_size, direct.model_name)
        assert emb.features.dtype == torch.float32 and emb.features.shape == (1, 8, 4, 4)


def test_an_edited_plane_is_embedded_again(tmp_path, stack):
    pred = FakePredictor()
    embed_stack(pred, stack, tmp_path / "s.zarr")
    edited = stack.copy()
    edited[1, 5, 5] += 1
    items = list(iter_embed_stack(pred, edited, tmp_path / "s.zarr"))
    assert [item.hit for item in items] == [True, False, True]
    assert pred.calls == 4


def test_other_preprocessing_or_shape_is_refused_unless_overwrite(tmp_path, stack):
    pred = FakePredictor()
    embed_stack(pred, stack, tmp_path / "s.zarr")
    for other, data, what in [(FakePredictor(percentiles=(0.5, 99.5)), stack, "preprocessing"),
                              (pred, stack[:2], "data"), (pred, stack.astype(np.float32), "data")]:
        with pytest.raises(StoreConflictError, match=f"other data or another model .*{what}.*overwrite=True"):
            embed_stack(other, data, tmp_path / "s.zarr")
    assert embed_stack(pred, stack, tmp_path / "s.zarr") == (3, 3)  # nothing was dropped
    assert embed_stack(FakePredictor(percentiles=(0.5, 99.5)), stack, tmp_path / "s.zarr", overwrite=True) == (0, 3)
    assert embed_stack(pred, stack[:2], tmp_path / "s.zarr", overwrite=True) == (0, 2)
    assert embed_stack(pred, stack[:2], tmp_path / "s.zarr") == (2, 2)


def test_another_image_is_refused_unless_overwrite(tmp_path, stack):
    pred = FakePredictor()
    embed_stack(pred, stack, tmp_path / "s.zarr", source="/data/a.tif")
    other = stack[::-1].copy()  # same shape and dtype: only the recorded source tells them apart
    with pytest.raises(StoreConflictError, match=r"another image, /data/a.tif, not of /data/b.tif.*overwrite=True"):
        embed_stack(pred, other, tmp_path / "s.zarr", source="/data/b.tif")
    assert pred.calls == 3
    assert embed_stack(pred, stack, tmp_path / "s.zarr", source="/data/a.tif") == (3, 3)  # kept whole
    # Taken over: planes are reused only where their content is the same (the middle one).
    assert embed_stack(pred, other, tmp_path / "s.zarr", source="/data/b.tif", overwrite=True) == (1, 3)
    assert embed_stack(pred, other, tmp_path / "s.zarr", source="/data/b.tif") == (3, 3)
    assert embed_stack(pred, other, tmp_path / "s.zarr") == (3, 3)  # no source named: no check


def test_a_store_is_never_made_over_other_files(tmp_path, stack):
    import zarr

    pred = FakePredictor()
    (tmp_path / "notes.txt").write_text("keep me")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "cells.tif").write_bytes(b"an image")
    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    group.attrs.put({"multiscales": [{"version": "0.4"}]})
    group.create_array("0", shape=(3, 32, 32), dtype="uint16")
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    for path, match in [(tmp_path / "notes.txt", "is a file"), (folder, "folder of other files"),
                        (tmp_path / "ome.zarr", "folder of other files")]:
        for overwrite in (False, True):
            with pytest.raises(StoreConflictError, match=match):
                embed_stack(pred, stack, path, overwrite=overwrite)
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
    (tmp_path / "empty").mkdir()
    assert embed_stack(pred, stack, tmp_path / "empty") == (0, 3)  # an empty folder is fine


def test_failed_write_leaves_the_plane_undone(tmp_path, stack, monkeypatch):
    import zarr

    pred = FakePredictor()
    real_setitem = zarr.Array.__setitem__

    def full_disk(self, key, value):
        if self.basename == "features" and key == (1,):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_setitem(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", full_disk)
    with pytest.raises(OSError, match="No space"):
        embed_stack(pred, stack, tmp_path / "s.zarr")
    monkeypatch.setattr(zarr.Array, "__setitem__", real_setitem)
    items = list(iter_embed_stack(pred, stack, tmp_path / "s.zarr"))
    assert [item.hit for item in items] == [True, False, False]


def test_unreadable_digest_means_embed_again(tmp_path, stack):
    pred = FakePredictor()
    embed_stack(pred, stack, tmp_path / "s.zarr")
    chunk = tmp_path / "s.zarr" / "digest" / "c" / "0" / "0"
    assert chunk.is_file()
    chunk.write_bytes(b"\x00garbage")  # a torn write
    items = list(iter_embed_stack(pred, stack, tmp_path / "s.zarr"))
    assert [item.hit for item in items] == [False, True, True]


def test_interrupted_creation_starts_afresh(tmp_path, stack):
    import zarr

    pred = FakePredictor()
    embed_stack(pred, stack, tmp_path / "s.zarr")
    zarr.open_group(str(tmp_path / "s.zarr"), mode="a").attrs.put({})  # as if cut off while creating
    assert embed_stack(pred, stack, tmp_path / "s.zarr") == (0, 3)


def test_channel_axis_and_lazy_input(tmp_path):
    from .test_imaging import ReadLog

    data = np.random.default_rng(1).integers(0, 255, (4, 2, 16, 16)).astype(np.float32)
    lazy = ReadLog(data, max_elements=2 * 16 * 16)
    pred = FakePredictor()
    assert embed_stack(pred, lazy, tmp_path / "s.zarr", channel_axis=1) == (0, 4)
    assert len(lazy.reads) == 5  # the first plane once to describe the stack, then each plane
    assert load_embedding(tmp_path / "s.zarr", (3,)) is not None


def test_real_embeddings_round_trip_exactly(tmp_path, lite_predictor, nuclei3d):
    planes = nuclei3d[0][10:12]
    embed_stack(lite_predictor, planes, tmp_path / "s.zarr")
    for i in range(2):
        stored = load_embedding(tmp_path / "s.zarr", (i,))
        direct = lite_predictor.embed(planes[i])
        assert torch.equal(stored.features, direct.features.half().float())
        assert (stored.original_size, stored.input_size, stored.img_size, stored.model_name) == \
               (direct.original_size, direct.input_size, direct.img_size, direct.model_name)


def test_cli_embeds_a_stack_once(tmp_path, nuclei3d, monkeypatch, capsys):
    stack = nuclei3d[0][:12]  # 12 real slices, 61 x 57
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    out = tmp_path / "stack.zarr"
    args = ["embed", str(tmp_path / "stack.tif"), "-o", str(out), "--model", "lite_medsam", "--device", "cpu"]
    assert main(args) == 0
    assert "cache hit: 0/12 planes" in capsys.readouterr().out
    import zarr

    stored = zarr.open_group(str(out), mode="r")["features"].nbytes_stored()
    assert stored / 12 <= MAX_BYTES_PER_PLANE, stored / 12

    calls = []
    real_embed = Predictor.embed

    def counting_embed(self, image, limits=None):
        calls.append(1)
        return real_embed(self, image, limits)

    monkeypatch.setattr(Predictor, "embed", counting_embed)
    assert main(args) == 0
    assert "cache hit: 12/12 planes" in capsys.readouterr().out
    assert calls == []


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["embed", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o.zarr")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["embed", str(tmp_path / "notes.txt"), "-o", str(tmp_path / "o.zarr")]) == 2
    assert "expected .tif" in capsys.readouterr().err


def test_cli_explains_a_folder_given_as_input(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    assert main(["embed", str(folder), "-o", str(tmp_path / "o.zarr")]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not an image stack" in err and "a zarr array" in err and "no image file" in err
    tifffile.imwrite(folder / "cells.tif", np.zeros((2, 16, 16), np.uint16))
    assert main(["embed", str(folder), "-o", str(tmp_path / "o.zarr")]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not an image stack" in err and "napari-sam embed" in err and "cells.tif" in err
    assert "Traceback" not in err and "StorePath" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.zarr").exists()


@pytest.fixture
def cli_model(lite_medsam, monkeypatch):
    """`napari-sam embed` with the session's LiteMedSAM instead of loading it again."""
    import napari_sam.model.loading

    loads = []
    monkeypatch.setattr(napari_sam.model.loading, "load_model", lambda *a, **k: loads.append(1) or lite_medsam)
    return loads


def test_cli_refuses_to_embed_another_image_into_a_store(tmp_path, cli_model, capsys):
    rng = np.random.default_rng(3)
    for name in ("a.npy", "b.npy"):
        np.save(tmp_path / name, rng.integers(0, 255, (2, 32, 32), dtype=np.uint8))
    out = str(tmp_path / "s.zarr")
    assert main(["embed", str(tmp_path / "a.npy"), "-o", out, "--device", "cpu"]) == 0
    capsys.readouterr()
    cli_model.clear()
    stored = {p: p.read_bytes() for p in (tmp_path / "s.zarr").rglob("*") if p.is_file()}
    assert main(["embed", str(tmp_path / "b.npy"), "-o", out, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "holds the embeddings of another image" in err and "a.npy" in err and "--overwrite" in err
    assert cli_model == []  # refused before the model was loaded
    assert {p: p.read_bytes() for p in (tmp_path / "s.zarr").rglob("*") if p.is_file()} == stored
    # Another shape of the same file is caught once the model says what the store would hold.
    np.save(tmp_path / "a.npy", rng.integers(0, 255, (3, 32, 32), dtype=np.uint8))
    assert main(["embed", str(tmp_path / "a.npy"), "-o", out, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "other data or another model" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in (tmp_path / "s.zarr").rglob("*") if p.is_file()} == stored
    assert main(["embed", str(tmp_path / "b.npy"), "-o", out, "--device", "cpu", "--overwrite"]) == 0
    assert "cache hit: 0/2 planes" in capsys.readouterr().out
    assert main(["embed", str(tmp_path / "b.npy"), "-o", out, "--device", "cpu"]) == 0
    assert "cache hit: 2/2 planes" in capsys.readouterr().out


def test_store_files_get_the_permissions_of_any_new_file(tmp_path, stack):
    import os
    import stat

    old = os.umask(0o002)
    try:
        embed_stack(FakePredictor(), stack, tmp_path / "s.zarr")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "s.zarr").rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o664}


def test_zoomed_tiles_go_to_the_store_and_the_engine_serves_them(tmp_path, lite_predictor, nuclei2d, capsys):
    """``napari-sam embed --tiles`` stores each plane's zoomed tiles; an engine with the
    store attached takes them from there (no encoder call) and answers prompts with exactly
    the masks it would compute itself. The first plane is photon-limited: every plane's
    tiles are then denoised, in the store as in the engine."""
    from napari_sam.embeddings.engine import Engine, PlaneSource
    from napari_sam.embeddings.store import EmbeddingStore, StackLayout
    from napari_sam.variants import low_photon

    image, labels = nuclei2d
    stack = np.stack([low_photon(image, labels, photons=15)[0][:192, :192], image[192:384, 192:384]])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    args = ["embed", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "s.zarr"), "--tiles", "--model", "lite_medsam",
            "--device", "cpu"]
    assert main(args) == 0
    assert "cache hit: 0/2 planes" in capsys.readouterr().out

    source = PlaneSource(stack)
    engine = Engine(lite_predictor)
    engine.attach_store(source, EmbeddingStore.open(tmp_path / "s.zarr", lite_predictor, StackLayout.of(stack),
                                                    create=False))
    engine.request(source, (1,), tiles_near=(0.0, 0.0))
    engine.run_all()
    assert engine.tiles_embedded(source, (1,)) == (4, 4) and engine.store_hits == 5  # the plane and its 4 tiles
    assert engine.denoises(source, (1,))
    assert engine.prompts.encoder_calls == 0
    box = [40, 40, 70, 75]
    fresh = Engine(lite_predictor)
    assert np.array_equal(engine.segment(source, (1,), box=box).masks, fresh.segment(source, (1,), box=box).masks)
    assert engine.prompts.encoder_calls == 0

    assert main(args) == 0  # everything is there already
    assert "cache hit: 2/2 planes" in capsys.readouterr().out
    assert main(args[:-4] + ["--object-size", "60", "--model", "lite_medsam", "--device", "cpu"]) == 0
    assert "cache hit: 0/2 planes" in capsys.readouterr().out  # other tiles: made afresh
    assert main(args[:-4] + ["--object-size", "-3"]) == 2
    assert "--object-size must be a positive number" in capsys.readouterr().err


def test_an_engine_takes_the_object_size_its_stored_tiles_were_made_for(tmp_path, lite_predictor, nuclei2d):
    """A store records the object size of its tiles; an engine attaching it plans the same
    tiles (not those of the size it would measure) and so embeds nothing, unless the user
    set a size first."""
    from napari_sam.embeddings.engine import Engine, PlaneSource

    image, _ = nuclei2d
    stack = image[None, :192, :192].copy()
    embed_stack(lite_predictor, stack, tmp_path / "s.zarr", tiles=True, object_size=60.0)
    store = EmbeddingStore.open(tmp_path / "s.zarr", lite_predictor, StackLayout.of(stack), create=False)
    assert store.object_size == 60.0

    source = PlaneSource(stack)
    measured = Engine(lite_predictor).tiles(source, (0,))  # the ~17 px nuclei as measured: other tiles
    assert [w.bounds for w in measured] != store.tiles
    engine = Engine(lite_predictor)
    engine.attach_store(source, store)
    assert engine.known_object_size(source, (0,)) == 60.0
    assert [w.bounds for w in engine.tiles(source, (0,))] == store.tiles
    engine.request(source, (0,), tiles_near=(0.0, 0.0))
    engine.run_all()
    assert engine.prompts.encoder_calls == 0 and engine.tiles_embedded(source, (0,)) == (len(store.tiles),) * 2

    chosen = Engine(lite_predictor)
    chosen.set_object_size(source, 20.0)
    chosen.attach_store(source, store)
    assert chosen.known_object_size(source, (0,)) == 20.0
