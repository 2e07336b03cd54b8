"""The widget reads embeddings that 'napari-sam embed' precomputed, and refuses a store
made for other data."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_sam import cli
from napari_sam.cache import EmbeddingCache

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
