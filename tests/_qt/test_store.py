"""The widget reads embeddings that 'napari-sam embed' precomputed, refuses a store made
for other data, and says so when a store can no longer be written."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_sam import cli
from napari_sam.cache import EmbeddingCache
from napari_sam.embeddings.store import EmbeddingStore, StackLayout

from .conftest import TIMEOUT_MS, idle


def test_widget_serves_planes_from_a_cli_store(sam, qtbot, tmp_path, nuclei3d):
    volume = np.ascontiguousarray(nuclei3d[0][10:13])  # three real planes
    tifffile.imwrite(tmp_path / "stack.tif", volume)
    store = tmp_path / "stack.zarr"
    assert cli.main(["embed", str(tmp_path / "stack.tif"), "-o", str(store), "--device", "cpu"]) == 0

    viewer, widget = sam(volume, cache=EmbeddingCache())
    idle(qtbot, widget)
    engine = widget.engine
    engine.cache.clear()
    calls = []
    encode = engine.predictor.embed
    engine.predictor.embed = lambda *a, **k: calls.append(1) or encode(*a, **k)
    try:
        assert widget.open_store(str(store))
        for z in (1, 0, 2):
            viewer.dims.set_current_step(0, z)
            qtbot.waitUntil(lambda: widget.index == (z,) and engine.key(widget.view.source, (z,)) in engine.cache,
                            timeout=TIMEOUT_MS)
        idle(qtbot, widget)
    finally:
        engine.predictor.embed = encode
    assert calls == [] and engine.store_hits >= 3
    direct = engine.predictor.embed(volume[1])
    np.testing.assert_allclose(engine.cache.get(engine.key(widget.view.source, (1,))).features,
                               direct.features, atol=2e-2)  # stored in float16

    # A store made for other data is refused, and left as it was.
    other = viewer.add_image(volume[:, :40], name="cropped")
    widget.ui.image.set_layer(other)
    qtbot.waitUntil(lambda: widget.view is not None and widget.view.layer is other, timeout=TIMEOUT_MS)
    before = sorted(p.name for p in store.rglob("*"))
    assert not widget.open_store(str(store))
    assert "made for other data" in widget.ui.status.text()
    assert sorted(p.name for p in store.rglob("*")) == before
    idle(qtbot, widget)


def test_a_store_the_disk_no_longer_takes_is_reported_once(sam, qtbot, tmp_path, nuclei3d, monkeypatch):
    """A full disk under the store: the widget says so once, and goes on embedding in memory."""
    volume = np.ascontiguousarray(nuclei3d[0][10:13])
    viewer, widget = sam(volume, cache=EmbeddingCache())
    idle(qtbot, widget)
    engine, source = widget.engine, widget.view.source
    path = tmp_path / "stack.zarr"
    layout = StackLayout.of(source.data, source.channel_axis, source.rgb, source.plane_axes)
    EmbeddingStore.open(path, engine.predictor, layout)  # empty: every plane embedded is written

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EmbeddingStore, "put", full_disk)
    engine.cache.clear()
    assert widget.open_store(str(path))
    qtbot.waitUntil(lambda: "no longer saved" in widget.ui.status.text(), timeout=TIMEOUT_MS)
    status = widget.ui.status.text()
    assert str(path) in status and "No space left on device" in status and "kept in memory" in status
    assert engine.key(source, widget.index) in engine.cache and engine.store_for(source) is None
    idle(qtbot, widget)

    # Planes embedded later (the store is no longer written) say nothing more about it.
    engine.cache.clear()
    viewer.dims.set_current_step(0, 0)
    qtbot.waitUntil(lambda: widget.index == (0,) and engine.key(source, (0,)) in engine.cache, timeout=TIMEOUT_MS)
    idle(qtbot, widget)
    assert "no longer saved" not in widget.ui.status.text()
