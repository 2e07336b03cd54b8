"""One prompt through a stack: synthetic objects with known extents, the stop rules,
corrections, and real nucleus volumes with LiteMedSAM."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops

from napari_sam.errors import Cancelled
from napari_sam.metrics import iou
from napari_sam.segmentation.propagation import PropagationParams, propagate, propagate_piece


def _ellipsoid(shape, centre, radii):
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 + \
        ((xx - centre[2]) / radii[2]) ** 2 <= 1


@pytest.fixture(scope="module")
def stacked():
    """Two nuclei stacked in z that touch, and a third on its own, in noise."""
    shape = (24, 64, 64)
    a = _ellipsoid(shape, (6, 30, 30), (4.5, 12, 12))
    b = _ellipsoid(shape, (15, 32, 31), (4.5, 13, 12)) & ~a
    c = _ellipsoid(shape, (12, 12, 50), (5, 8, 8))
    rng = np.random.default_rng(3)
    volume = 100 + 120 * a + 90 * b + 150 * c + rng.normal(0, 12, shape)
    return volume.astype(np.float32), a, b, c


@pytest.fixture(scope="module")
def embed(lite_predictor, stacked):
    """Slice embeddings of the synthetic stack, computed once for all tests."""
    cache: dict = {}

    def get(k):
        if k not in cache:
            cache[k] = lite_predictor.embed(stacked[0][k])
        return cache[k]

    return get


def _box(mask2d):
    r, c = np.flatnonzero(mask2d.any(1)), np.flatnonzero(mask2d.any(0))
    return np.array([r[0], c[0], r[-1], c[-1]])


def test_follows_an_object_and_stops_at_its_stacked_neighbour(lite_predictor, stacked, embed):
    volume, a, b, _ = stacked
    out = propagate(lite_predictor, volume, 6, box=_box(a[6]), embed=embed)
    assert out.shape == volume.shape and out.dtype == bool
    assert iou(out, a) > 0.7, iou(out, a)
    assert (out & b).sum() < 0.05 * b.sum()  # did not run into the nucleus above
    ends = np.flatnonzero(out.any((1, 2)))
    assert ends[0] >= 1 and ends[-1] <= 11


def test_a_lone_object_ends_where_its_signal_ends(lite_predictor, stacked, embed):
    volume, _, _, c = stacked
    out = propagate(lite_predictor, volume, 12, box=_box(c[12]), embed=embed)
    assert iou(out, c) > 0.7, iou(out, c)
    slices = np.flatnonzero(out.any((1, 2)))
    assert slices[0] >= 6 and slices[-1] <= 18  # the object spans 8..16


def test_nan_and_inf_voxels_count_as_background(lite_predictor, stacked, embed):
    volume, _, _, c = stacked
    holed = volume.copy()
    holed[10:14, 0:8, 0:8] = np.nan  # a dead corner, away from the object
    holed[0, 5, 40:60] = np.inf
    out = propagate(lite_predictor, holed, 12, box=_box(c[12]), embed=embed)
    assert iou(out, c) > 0.7, iou(out, c)


def test_a_piece_holds_only_the_objects_column(lite_predictor, stacked, embed):
    volume, _, _, c = stacked
    piece = propagate_piece(lite_predictor, volume, 12, box=_box(c[12]), embed=embed)
    out = propagate(lite_predictor, volume, 12, box=_box(c[12]), embed=embed)
    np.testing.assert_array_equal(piece.paste(volume.shape), out)
    slices = np.flatnonzero(out.any((1, 2)))
    assert piece.mask.shape[0] == slices[-1] - slices[0] + 1  # just the object's slices
    assert piece.mask.size < 0.15 * volume.size  # a 16-pixel object in a 64x64 stack


def test_corrections_are_taken_as_given(lite_predictor, stacked, embed):
    volume, a, _, _ = stacked
    stop = propagate(lite_predictor, volume, 6, box=_box(a[6]), corrections={8: np.zeros(a.shape[1:], bool)}, embed=embed)
    assert not stop[8:].any() and stop[7].any()
    fixed = a[4] & (np.arange(64)[None, :] < 30)  # the user says: only the left half here
    out = propagate(lite_predictor, volume, 6, box=_box(a[6]), corrections={4: fixed}, embed=embed)
    np.testing.assert_array_equal(out[4], fixed)
    # a start mask (the chosen candidate) works in place of prompts
    from_mask = propagate(lite_predictor, volume, 6, mask=a[6], embed=embed)
    np.testing.assert_array_equal(from_mask[6], a[6])
    assert iou(from_mask, a) > 0.7


def test_bad_requests_are_refused(lite_predictor, stacked):
    volume = stacked[0]
    with pytest.raises(ValueError, match=r"\(Z, H, W\)"):
        propagate(lite_predictor, volume[0], 0, box=[1, 1, 9, 9])
    with pytest.raises(IndexError, match="outside"):
        propagate(lite_predictor, volume, 24, box=[1, 1, 9, 9])
    with pytest.raises(ValueError, match="prompt"):
        propagate(lite_predictor, volume, 3)
    with pytest.raises(ValueError, match="start mask"):
        propagate(lite_predictor, volume, 3, mask=np.ones((5, 5), bool))
    with pytest.raises(Cancelled):
        propagate(lite_predictor, volume, 6, mask=stacked[1][6], cancel=lambda: True)


def test_model_carry_prompts_sam_on_every_slice(lite_predictor, stacked, embed):
    volume, a, b, _ = stacked
    seen = []

    def spy(k):
        seen.append(k)
        return embed(k)

    out = propagate(lite_predictor, volume, 6, box=_box(a[6]), embed=spy, params=PropagationParams(carry="model"))
    assert iou(out, a) > 0.7, iou(out, a)
    assert (out & b).sum() < 0.05 * b.sum()
    assert sorted(set(seen)) == [k for k in range(volume.shape[0]) if out[k].any() and k != 6]
    with pytest.raises(ValueError, match="carry"):
        propagate(lite_predictor, volume, 6, box=_box(a[6]), params=PropagationParams(carry="sam"))


def test_dark_objects_are_followed_with_the_contrast_reversed(lite_predictor, stacked):
    volume, _, _, c = stacked
    out = propagate(lite_predictor, 400 - volume, 12, box=_box(c[12]))
    assert iou(out, c) > 0.7, iou(out, c)


def test_real_nucleus_volume_one_box_per_nucleus(lite_predictor, nuclei3d):
    # 51 noisy, crowded nuclei about 7 slices deep and 15 px wide. A naive "previous box
    # + 2 px" propagation never stops and scores a mean 3D IoU of about 0.2 here; SAM
    # prompted slice by slice from the previous mask (carry="model") about 0.54.
    volume, labels = nuclei3d
    scores = []
    for region in regionprops(labels):
        mid = (region.bbox[0] + region.bbox[3] - 1) // 2
        truth = labels == region.label
        # the default carry needs no slice embeddings: only the start slice is segmented by SAM
        out = propagate(lite_predictor, volume, mid, box=_box(truth[mid]), embed=lambda k: pytest.fail("embedded"),
                        spacing=(2.0, 1.0, 1.0))  # z is the coarse axis: followed along z as it is
        scores.append(iou(out, truth))
    # measured 0.635; 0.650 when the threshold cut, not the one on the strongest edges, was
    # the start slice's mask (though its mean IoU on the start slices was lower: 0.701 to 0.709)
    assert np.mean(scores) >= 0.62, np.mean(scores)


def test_real_nucleus_volume_through_y_is_followed_along_z(lite_predictor, nuclei3d):
    # The same volume propagated through y, its planes z x x: nuclei there are 7 rows by 15
    # columns, blurred in z. Carried from plane to plane along y they were lost (mean 3D IoU
    # 0.31, SAM on every plane 0.44; SAM given the true box on every plane 0.63). With the
    # voxel size (z twice y and x, as the annotation's shapes say) they are followed along z.
    # Every other nucleus keeps the suite short: these 26 measure 0.60, all 51 0.61
    # (benchmarks/bench_volume_axes.py gives all three axes).
    volume, labels = (np.moveaxis(a, 1, 0) for a in nuclei3d)
    scores = []
    for region in regionprops(labels)[::2]:
        mid = (region.bbox[0] + region.bbox[3] - 1) // 2
        truth = labels == region.label
        scores.append(iou(propagate(lite_predictor, volume, mid, box=_box(truth[mid]), spacing=(1.0, 2.0, 1.0)), truth))
    assert np.mean(scores) >= 0.55, np.mean(scores)  # measured 0.60


def test_the_package_level_function_is_not_shadowed_by_its_module():
    import napari_sam
    import napari_sam.segmentation.automatic_volume  # noqa: F401  (imports the module that holds propagate)

    assert napari_sam.propagate is propagate and callable(napari_sam.propagate)


def test_motion_carry_follows_a_moving_object_through_the_api(lite_predictor, nuclei2d):
    from napari_sam.variants import moving

    image, labels = nuclei2d
    movie, truth = moving(image[:160, :160], labels[:160, :160], frames=6, speed_px=3.0, seed=1)
    k = next(k for k in np.unique(truth[0]) if k and all((truth[t] == k).sum() > 150 for t in range(6)))
    r, c = np.nonzero(truth[0] == k)
    box = [r.min() - 1, c.min() - 1, r.max() + 1, c.max() + 1]
    moved = propagate(lite_predictor, movie, 0, box=box, params=PropagationParams(carry="motion"))
    carried = propagate(lite_predictor, movie, 0, box=box)  # the intensity carry loses it
    per_frame = [iou(moved[t], truth[t] == k) for t in range(6)]
    assert np.mean(per_frame) >= 0.7, per_frame
    assert np.mean(per_frame) > np.mean([iou(carried[t], truth[t] == k) for t in range(6)]) + 0.2
    piece = propagate_piece(lite_predictor, movie, 0, box=box, params=PropagationParams(carry="motion"))
    np.testing.assert_array_equal(piece.paste(movie.shape), moved)


def test_propagate_labels_carries_every_object_of_a_slice_under_its_id(lite_predictor, stacked, embed):
    from napari_sam import propagate_labels

    volume, a, b, c = stacked
    start = np.zeros(volume.shape[1:], np.uint16)  # both objects, committed on slice 8
    start[a[8]] = 3
    start[c[8]] = 7
    seen = []
    out = propagate_labels(lite_predictor, volume, 8, start, progress=lambda d, n: seen.append((d, n)))
    assert out.shape == volume.shape and set(np.unique(out)) == {0, 3, 7}
    assert iou(out == 3, a) > 0.7 and iou(out == 7, c) > 0.7, (iou(out == 3, a), iou(out == 7, c))
    assert ((out == 3) & b).sum() < 0.05 * b.sum()
    assert seen[-1] == (2, 2)
    with pytest.raises(ValueError, match="shape"):
        propagate_labels(lite_predictor, volume, 8, start[:10])
