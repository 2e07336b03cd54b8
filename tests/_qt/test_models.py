"""Model selection: a model that needs downloading shows its progress in napari's activity
dock; the download here is real, from a local file:// URL into a temporary cache."""

from __future__ import annotations

import dataclasses

import pytest

from napari_sam.model.registry import get_spec, register, unregister
from napari_sam.model.weights import CACHE_ENV, locate_bundled

from .conftest import TIMEOUT_MS, idle


@pytest.fixture
def downloadable(tmp_path, monkeypatch):
    """LiteMedSAM's weights registered as a model that must be fetched from a URL."""
    base = get_spec("lite_medsam")
    source = locate_bundled(base)
    spec = dataclasses.replace(base, name="lite_download", title="LiteMedSAM (downloaded)", aliases=(),
                               bundled=None, filename="lite_download.pth", url=source.as_uri())
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    register(spec, replace=True)
    yield spec
    unregister(spec.name)


def test_download_progress_then_the_model_is_used(sam, qtbot, downloadable, nuclei2d, monkeypatch):
    from napari_sam._qt import workers

    bars = []  # every progress bar the loader makes

    class Recorded(workers.progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(workers, "progress", Recorded)
    image, _ = nuclei2d
    viewer, widget = sam(image)
    seen = []
    widget.loader.downloading.connect(lambda done, total: seen.append((done, total)))

    widget.ui.model.setCurrentIndex(widget.ui.model.findData("lite_download"))
    assert "downloading" in widget.ui.status.text()
    qtbot.waitUntil(lambda: widget.engine is not None and widget.engine.model_name == "lite_download",
                    timeout=TIMEOUT_MS)
    size = downloadable.size_bytes
    assert seen and seen[-1] == (size, size)
    # napari runs processEvents while it makes a bar: the reports delivered then must
    # update that one bar, not make one each
    assert len(bars) == 1 and bars[0].desc.startswith("SAM: downloading weights") and bars[0].n == size
    assert not widget.loader.bar.shown  # closed when the load finished
    idle(qtbot, widget)
    assert widget.engine.key(widget.view.source, widget.index) in widget.cache


def test_a_failing_model_load_reports_and_keeps_the_widget_usable(sam, qtbot, downloadable, nuclei2d):
    image, _ = nuclei2d
    viewer, widget = sam(image)
    broken = dataclasses.replace(downloadable, name="lite_broken", title="broken", filename="broken.pth",
                                 url=downloadable.url + ".missing")
    register(broken, replace=True)
    try:
        widget.ui.model.addItem(broken.title, broken.name)
        widget.ui.model.setCurrentIndex(widget.ui.model.findData("lite_broken"))
        qtbot.waitUntil(lambda: "could not load lite_broken" in widget.ui.hint.text(), timeout=TIMEOUT_MS)
        # One line in the dock (the whole advice in the tooltip and the notification), and
        # the model that works is back in use, shown in the combo.
        status = widget.ui.hint
        assert "\n" not in status.text() and status.text().endswith("still using lite_medsam")
        assert "NAPARI_SAM_MIRROR" in status.toolTip() and "NAPARI_SAM_MIRROR" not in status.text()
        assert widget.ui.model.currentData() == "lite_medsam" and widget.engine.model_name == "lite_medsam"
        assert status.sizeHint().width() <= widget.width()  # the message does not widen the dock
        idle(qtbot, widget)
        assert widget.engine.key(widget.view.source, widget.index) in widget.cache
    finally:
        unregister(broken.name)
