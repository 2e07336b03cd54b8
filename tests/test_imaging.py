"""imaging: planes of nD arrays read lazily, intensity limits, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.imaging import (
    intensity_limits,
    model_input,
    plane_of,
    to_intensity,
)


class ReadLog:
    """An array-like that records every read and refuses to hand out more than a plane."""

    def __init__(self, data: np.ndarray, max_elements: int) -> None:
        self.data, self.max_elements = data, max_elements
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.reads: list = []

    def __getitem__(self, key):
        out = self.data[key]
        assert out.size <= self.max_elements, f"read {out.shape} for {key}"
        self.reads.append(key)
        return out

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was read")


@pytest.fixture(scope="module")
def tczyx() -> np.ndarray:
    return np.arange(2 * 3 * 4 * 5 * 6, dtype=np.uint16).reshape(2, 3, 4, 5, 6)


# --------------------------------------------------------------------------- planes


def test_plane_from_current_step_or_stack_index(tczyx):
    np.testing.assert_array_equal(plane_of(tczyx, (1, 2, 3, 0, 0)), tczyx[1, 2, 3])
    np.testing.assert_array_equal(plane_of(tczyx, (1, 2, 3)), tczyx[1, 2, 3])


def test_plane_axes_follow_the_displayed_dims(tczyx):
    # napari showing (z, x) with y as a slider: rows are z, columns x.
    plane = plane_of(tczyx, (0, 1, 0, 2, 0), plane_axes=(2, 4))
    np.testing.assert_array_equal(plane, tczyx[0, 1, :, 2, :])
    # transposed display order
    np.testing.assert_array_equal(plane_of(tczyx, (0, 1, 2), plane_axes=(-1, -2)), tczyx[0, 1, 2].T)


def test_channel_axis_becomes_colours(tczyx):
    plane = plane_of(tczyx, (1, 0, 2, 0, 0), channel_axis=1)
    assert plane.shape == (5, 6, 3)
    np.testing.assert_array_equal(plane, np.moveaxis(tczyx[1, :, 2], 0, -1))
    two = plane_of(tczyx[:, :2], (0, 1), channel_axis=1)
    assert two.shape == (5, 6, 3) and not two[..., 2].any()
    np.testing.assert_array_equal(two[..., 1], tczyx[0, 1, 1])


def test_rgb_planes(tczyx):
    rgb = np.random.default_rng(0).integers(0, 255, (3, 8, 9, 4), dtype=np.uint8)
    plane = plane_of(rgb, (2,), rgb=True)
    np.testing.assert_array_equal(plane, rgb[2, ..., :3])  # alpha dropped


def test_only_the_plane_is_read_from_lazy_arrays(tczyx):
    lazy = ReadLog(tczyx, max_elements=5 * 6)
    np.testing.assert_array_equal(plane_of(lazy, (1, 0, 3)), tczyx[1, 0, 3])
    assert len(lazy.reads) == 1


def test_memmap_dask_and_zarr(tmp_path, tczyx):
    import dask.array as da
    import zarr

    np.save(tmp_path / "s.npy", tczyx)
    mm = np.load(tmp_path / "s.npy", mmap_mode="r")
    np.testing.assert_array_equal(plane_of(mm, (0, 2, 1)), tczyx[0, 2, 1])

    computed = []

    def block(i):
        computed.append(i)
        return tczyx[i]

    import dask

    lazy = da.stack([da.from_delayed(dask.delayed(block)(i), tczyx.shape[1:], tczyx.dtype) for i in range(2)])
    np.testing.assert_array_equal(plane_of(lazy, (1, 2, 3)), tczyx[1, 2, 3])
    assert computed == [1]

    z = zarr.create_array(tmp_path / "s.zarr", shape=tczyx.shape, chunks=(1, 1, 1, 5, 6), dtype=tczyx.dtype)
    z[:] = tczyx
    np.testing.assert_array_equal(plane_of(z, (1, 1, 1)), tczyx[1, 1, 1])


@pytest.mark.parametrize(
    "data, kwargs, error, match",
    [
        (np.zeros((2, 2, 2, 2, 4, 4)), {}, ValueError, "at most 5"),
        (np.zeros((0, 4, 4)), {}, ValueError, "empty"),
        (np.zeros((3, 0, 4)), {}, ValueError, "empty"),
        ("image.tif", {}, TypeError, "expected an array"),
        (np.array([["a", "b"], ["c", "d"]]), {}, TypeError, "numeric"),
        (np.zeros((4, 4), dtype=complex), {}, TypeError, "numeric"),
        (np.full((2, 8, 8), np.nan), {"index": (1,)}, ValueError, "no finite values"),
        (np.zeros((20, 8, 8)), {"index": (), "channel_axis": 0}, ValueError, "right axis"),
        (np.zeros((3, 8, 8)), {"index": (), "channel_axis": 5}, ValueError, "out of range"),
        (np.zeros((3, 8, 8)), {"index": (), "channel_axis": -1}, ValueError, "plane axes"),
        (np.zeros((3, 8, 8, 3)), {"index": (), "channel_axis": 0, "rgb": True}, ValueError, "not both"),
        (np.zeros((3, 8, 8)), {"index": (0,), "rgb": True}, ValueError, "3 or 4 colours"),
        (np.zeros((3, 8, 8)), {"index": (0, 1)}, ValueError, "one per axis"),
        (np.zeros((3, 8, 8)), {"index": (3,)}, IndexError, "out of range"),
        (np.zeros((3, 8, 8)), {"index": (0,), "plane_axes": (1, 1)}, ValueError, "same axis"),
        (np.zeros(8), {}, ValueError, "at least 2"),
    ],
)
def test_bad_input_raises_clear_errors(data, kwargs, error, match):
    kwargs = {"index": (0,) * max(0, np.ndim(data) - 2), **kwargs}
    with pytest.raises(error, match=match):
        plane_of(data, **kwargs)


# --------------------------------------------------------------------------- intensity limits


def test_limits_of_the_plane_stretch_a_crop_like_the_plane(nuclei2d):
    image = nuclei2d[0]
    lo, hi = intensity_limits(image)
    whole = to_intensity(image)
    crop = image[100:164, 200:264]
    # With the plane's limits, a crop maps exactly like that part of the plane ...
    np.testing.assert_array_equal(to_intensity(crop, limits=(lo, hi)), whole[100:164, 200:264])
    # ... whereas its own percentiles re-stretch it.
    assert not np.array_equal(to_intensity(crop), whole[100:164, 200:264])


def test_limits_resist_hot_pixels_and_ignore_nan(nuclei2d):
    image = nuclei2d[0].astype(np.float32)
    lo, hi = intensity_limits(image)
    spoilt = image.copy()
    rng = np.random.default_rng(0)
    spoilt[rng.integers(0, 512, 20), rng.integers(0, 512, 20)] = 65535
    spoilt[:4, :4] = np.nan
    lo2, hi2 = intensity_limits(spoilt)
    assert abs(lo2 - lo) <= 0.01 * (hi - lo) and abs(hi2 - hi) <= 0.05 * (hi - lo)
    assert hi < 65535


def test_limits_edge_cases():
    assert intensity_limits(np.zeros((4, 4), np.uint8)) == (0.0, 255.0)
    flat = np.full((4, 4), 7.0)
    assert intensity_limits(flat) == (7.0, 7.0)
    assert not to_intensity(flat).any()
    with pytest.raises(ValueError, match="no finite"):
        intensity_limits(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="low <= high"):
        to_intensity(np.ones((4, 4), np.float32), limits=(5, 1))
    with pytest.raises(TypeError, match="two numbers"):
        to_intensity(np.ones((4, 4), np.float32), limits="ab")


def test_model_input_with_the_planes_own_limits_is_unchanged(nuclei2d):
    image = nuclei2d[0]
    a, size_a = model_input(image, 256, "minmax")
    b, size_b = model_input(image, 256, "minmax", limits=intensity_limits(image))
    assert size_a == size_b == (256, 256)
    assert np.array_equal(a.numpy(), b.numpy())
