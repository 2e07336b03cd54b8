"""The window grid of zoomed prompting: what plan_window picks is what level_windows lists."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.prompting.windows import Window, level_for_diameter, level_windows, nearest_first, plan_window, top_level


@pytest.mark.parametrize("shape", [(512, 512), (300, 700), (2048, 2048), (100, 90)])
def test_planned_windows_are_grid_windows(shape):
    rng = np.random.default_rng(0)
    tile, context = 128, 1.5
    grids = {level: set(level_windows(shape, tile, level)) for level in range(top_level(shape, tile) + 1)}
    for _ in range(300):
        size = rng.uniform(1, np.array(shape) / 2)
        r0, c0 = rng.uniform(0, np.array(shape) - size)
        extent = np.array([r0, c0, r0 + size[0], c0 + size[1]])
        win, level = plan_window(extent, shape, tile, context)
        assert win in grids[level]
        assert 0 <= win.r0 < win.r1 <= shape[0] and 0 <= win.c0 < win.c1 <= shape[1]


def test_grid_covers_the_plane_with_half_overlap():
    wins = level_windows((512, 512), 128, 0)
    assert len(wins) == 49 and all(w.shape == (128, 128) for w in wins)
    cover = np.zeros((512, 512), int)
    for w in wins:
        cover[w.r0:w.r1, w.c0:w.c1] += 1
    assert cover.min() >= 1
    assert level_windows((512, 512), 128, 2) == [Window(0, 0, 512, 512)]


@pytest.mark.parametrize("diameter", [8, 24, 48, 72, 95])
def test_an_object_of_the_level_diameter_always_fits_its_nearest_window(diameter):
    """Any object of the diameter the level was chosen for, anywhere, gets a window of
    that level (so the tiles embedded for it answer it without another encoder call)."""
    shape, tile, context = (1024, 1024), 128, 1.5
    level = level_for_diameter(diameter, shape, tile, context)
    assert tile * 2 ** level >= 2 * context * diameter
    assert level == 0 or tile * 2 ** (level - 1) < 2 * context * diameter
    rng = np.random.default_rng(diameter)
    for r, c in rng.uniform(0, 1024 - diameter, (200, 2)):
        _, got = plan_window(np.array([r, c, r + diameter, c + diameter]), shape, tile, context, level)
        assert got == level


def test_nearest_first_orders_by_distance():
    wins = nearest_first(level_windows((512, 512), 128, 0), (500.0, 10.0))
    assert wins[0] == Window(384, 0, 512, 128)
    d = [np.hypot(w.centre[0] - 500, w.centre[1] - 10) for w in wins]
    assert d == sorted(d)
