"""The activity bar: its count and its percentage agree, and nothing is sent to napari's bar
(which processes Qt events, a canvas redraw, on every update) unless something changed."""

from __future__ import annotations

from napari_sam._qt.workers import ActivityBar


def test_counts_and_percentages_agree_and_repeats_send_nothing(make_napari_viewer, qtbot):
    make_napari_viewer()
    bar = ActivityBar()
    bar.show(2, 10, "SAM: embedding planes")
    tqdm = bar._bar
    values, etas = [], []
    tqdm.events.value.connect(lambda event: values.append(event.value))
    tqdm.events.eta.connect(lambda event: etas.append(event.value))
    assert (tqdm.n, tqdm.total) == (2, 10) and "2/10" in str(tqdm) and " 20%" in str(tqdm)

    for _ in range(5):  # a slice change that leaves the queue as it was
        bar.set(2, 10)
        bar.show(2, 10, "SAM: embedding planes")
    assert values == [] and etas == []

    bar.set(3, 12)
    assert values == [3] and len(etas) == 1 and "3/12" in etas[-1]
    assert "3/12" in str(tqdm) and " 25%" in str(tqdm)
    bar.set(13, 12)  # more done than the old total: the total follows
    assert (tqdm.n, tqdm.total) == (13, 13) and "13/13" in etas[-1]
    bar.close()
