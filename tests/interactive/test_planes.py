"""Image layers as planes: 2D, z/t stacks, RGB, a channel axis, scaled and transposed views."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image

from napari_sam.interactive.planes import PlaneView, displayed_axes


def test_2d_image_is_a_single_plane():
    view = PlaneView.from_layer(Image(np.zeros((40, 50))), (0, 1))
    assert view.shape == (40, 50) and view.stack_axes == () and view.plane_shape == (40, 50)
    assert view.index_at([3.0, 4.0]) == ()
    assert view.on_plane(np.array([[1.0, 2.0], [30.0, 4.0]]), ()).all()


def test_scaled_3d_stack_maps_world_points_to_planes():
    layer = Image(np.zeros((10, 40, 50)), scale=(4.0, 0.5, 0.5), translate=(8.0, 0.0, 0.0))
    view = PlaneView.from_layer(layer, (1, 2))
    scale, translate = view.scale_translate()
    assert scale.tolist() == [4.0, 0.5, 0.5] and translate.tolist() == [8.0, 0.0, 0.0]
    assert view.index_at([8.0 + 4.0 * 6, 1.0, 1.0]) == (6,)
    assert view.index_at([1000.0, 1.0, 1.0]) == (9,)  # clipped into the stack
    coords = np.array([[6.0, 10.0, 20.0], [5.0, 10.0, 20.0], [6.2, 1.0, 2.0]])
    assert view.on_plane(coords, (6,)).tolist() == [True, False, True]
    assert view.to_plane(coords)[0].tolist() == [10.0, 20.0]
    np.testing.assert_array_equal(view.from_plane([[10.0, 20.0]], (6,)), [[6.0, 10.0, 20.0]])


def test_time_series_of_stacks_indexes_t_and_z():
    data = np.arange(3 * 4 * 8 * 9).reshape(3, 4, 8, 9)
    view = PlaneView.from_layer(Image(data), (2, 3))
    assert view.stack_axes == (0, 1) and view.source.stack_shape == (3, 4)
    np.testing.assert_array_equal(view.source.plane((2, 1)), data[2, 1])
    labels = np.zeros(view.shape, dtype=np.int32)
    rows, cols = np.array([0, 7]), np.array([1, 8])
    labels[view.nd_indices(rows, cols, (2, 1))] = 5
    assert labels[2, 1, 0, 1] == 5 and labels[2, 1, 7, 8] == 5 and labels.sum() == 10


def test_rgb_layers_keep_their_colours():
    rgb = Image(np.zeros((20, 30, 3), dtype=np.uint8), rgb=True)
    view = PlaneView.from_layer(rgb, (0, 1))
    assert view.shape == (20, 30) and view.source.plane(()).shape == (20, 30, 3)
    movie = Image(np.zeros((5, 20, 30, 3), dtype=np.uint8), rgb=True)
    view = PlaneView.from_layer(movie, (1, 2))
    assert view.shape == (5, 20, 30) and view.source.plane((4,)).shape == (20, 30, 3)


def test_channel_axis_becomes_colours_and_leaves_labels_space():
    data = np.random.default_rng(0).random((2, 6, 20, 30))  # (channel, z, y, x)
    view = PlaneView.from_layer(Image(data), (2, 3), channel_axis=0)
    assert view.shape == (6, 20, 30) and view.image_axes == (1, 2, 3) and view.plane_axes == (1, 2)
    plane = view.source.plane((4,))
    assert plane.shape == (20, 30, 3)
    np.testing.assert_array_equal(plane[..., 1], data[1, 4])
    with pytest.raises(ValueError):
        PlaneView.from_layer(Image(data), (0, 3), channel_axis=0)


def test_transposed_display_reads_and_writes_planes_in_display_order():
    data = np.arange(3 * 8 * 9).reshape(3, 8, 9)
    view = PlaneView.from_layer(Image(data), (2, 1))  # columns shown as rows
    assert view.plane_shape == (9, 8)
    np.testing.assert_array_equal(view.source.plane((1,)), data[1].T)
    labels = np.zeros(view.shape, dtype=np.int32)
    view.plane_of(labels, (1,))[2, 5] = 7  # row 2 of the screen is column 2 of the data
    assert labels[1, 5, 2] == 7


def test_displayed_axes_follow_the_viewer():
    viewer = ViewerModel()
    layer = viewer.add_image(np.zeros((4, 5, 6, 7)))
    assert displayed_axes(viewer, layer) == (2, 3)
    viewer.dims.order = (0, 1, 3, 2)
    assert displayed_axes(viewer, layer) == (3, 2)
    viewer.dims.ndisplay = 3
    assert displayed_axes(viewer, layer) is None
    small = viewer.add_image(np.zeros((6, 7)))
    viewer.dims.ndisplay = 2
    viewer.dims.order = (0, 1, 2, 3)
    assert displayed_axes(viewer, small) == (0, 1)


def test_stack_axes_are_named_by_the_layer_then_the_viewer():
    from napari_sam.interactive.planes import is_time_axis

    named = PlaneView.from_layer(Image(np.zeros((3, 4, 8, 9)), axis_labels=("t", "z", "y", "x")), (2, 3))
    assert named.stack_axis_names() == ["t", "z"]
    plain = PlaneView.from_layer(Image(np.zeros((3, 4, 8, 9))), (2, 3))
    assert plain.stack_axis_names() == ["axis 0", "axis 1"]  # napari's "-4", "-3" are no names
    # a 4D viewer labelled by the user, and a 3D layer in it (its axes are the viewer's last three)
    assert PlaneView.from_layer(Image(np.zeros((4, 8, 9))), (1, 2)).stack_axis_names(("time", "z", "y", "x")) == ["z"]
    assert plain.stack_axis_names(("Time", "1", "y", "x")) == ["Time", "axis 1"]
    assert is_time_axis("Time") and is_time_axis("frame") and is_time_axis(" t ") and not is_time_axis("z")


def test_world_point_moves_to_another_plane_of_a_scaled_stack():
    layer = Image(np.zeros((10, 40, 50)), scale=(4.0, 0.5, 0.5), translate=(8.0, 0.0, 0.0))
    view = PlaneView.from_layer(layer, (1, 2))
    point = view.world_point([8.0 + 4.0 * 6, 3.0, 2.0], (2,))
    np.testing.assert_allclose(point, [16.0, 3.0, 2.0])
    assert view.index_at(point) == (2,)
