"""The image variants of one annotated field (napari_sam.variants), on the real nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label as connected

from napari_sam import variants as V


def _areas(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels.ravel().astype(np.int64))[1:]
    return counts[counts > 0]


def _edge_ids(labels: np.ndarray) -> set[int]:
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return set(np.unique(edge[edge > 0]).tolist())


def _contrast(image: np.ndarray, labels: np.ndarray) -> float:
    """Mean intensity inside the objects minus outside (channels averaged)."""
    grey = image.mean(axis=-1) if image.ndim == 3 else image.astype(np.float64)
    return float(grey[labels > 0].mean() - grey[labels == 0].mean())


@pytest.fixture(scope="module")
def tiled(nuclei2d):
    return V.tile(*nuclei2d, 2048)


@pytest.mark.parametrize("factor", [2, 3])
def test_magnify_grows_objects_by_the_factor(nuclei2d, factor):
    image, labels = nuclei2d
    big, big_labels = V.magnify(image, labels, factor)
    assert big.shape == big_labels.shape == (512 * factor, 512 * factor)
    assert big.dtype == image.dtype and big_labels.dtype == labels.dtype
    assert set(np.unique(big_labels)) == set(np.unique(labels))
    ratio = _areas(big_labels) / _areas(labels)
    assert ratio.mean() == pytest.approx(factor ** 2, rel=0.02)
    # An integer factor repeats each label pixel; the image stays on its objects.
    assert np.array_equal(big_labels, np.repeat(np.repeat(labels, factor, 0), factor, 1))
    assert _contrast(big, big_labels) == pytest.approx(_contrast(image, labels), rel=0.05)


def test_magnify_fractional_and_cubic(nuclei2d):
    image, labels = nuclei2d
    big, big_labels = V.magnify(image, labels, 1.5, order=3)
    assert big.shape == (768, 768) and big.dtype == np.uint16
    assert (_areas(big_labels) / _areas(labels)).mean() == pytest.approx(2.25, rel=0.05)
    with pytest.raises(ValueError):
        V.magnify(image, labels, 0)


def test_tile_makes_distinct_copies(nuclei2d, tiled):
    image, labels = nuclei2d
    big, big_labels = tiled
    assert big.shape == big_labels.shape == (2048, 2048)
    assert big.dtype == image.dtype and np.issubdtype(big_labels.dtype, np.integer)
    n = len(np.unique(big_labels)) - 1
    assert big_labels.max() == n  # renumbered 1..N
    inner = [k for k in np.unique(labels[labels > 0]) if k not in _edge_ids(labels)]
    # 16 copies: each inner object 16 times; edge objects merge with their mirror images.
    assert 16 * len(inner) < n < 16 * (len(np.unique(labels)) - 1)
    # Each id is one connected object (8-connected, as in the original labels).
    assert connected(big_labels, background=0, connectivity=2).max() == n
    # The top-left copy is the original; its inner objects keep their masks.
    corner = big_labels[:512, :512]
    assert np.array_equal(big[:512, :512], image)
    assert np.array_equal(corner > 0, labels > 0)
    for k in inner[:10]:
        ids = np.unique(corner[labels == k])
        assert len(ids) == 1 and np.array_equal(corner == ids[0], labels == k)
    # Its mirror image in the next copy is a different object with the mirrored mask.
    k = inner[0]
    mirror = big_labels[512:1024, :512][::-1]
    ids = np.unique(mirror[labels == k])
    assert len(ids) == 1 and ids[0] != np.unique(corner[labels == k])[0]
    assert _contrast(big, big_labels) == pytest.approx(_contrast(image, labels), rel=0.02)


def test_tile_wrap_and_small_fields(nuclei2d):
    image, labels = nuclei2d
    big, big_labels = V.tile(image, labels, (600, 1100), mode="wrap")
    assert big.shape == (600, 1100)
    assert np.array_equal(big[512:600, :512], image[:88])  # wrapped round
    assert np.array_equal(big[:512, 512:1024], image)
    assert connected(big_labels, background=0, connectivity=2).max() == big_labels.max()
    crop, crop_labels = V.tile(image, labels, 256)
    assert np.array_equal(crop, image[:256, :256])
    assert np.array_equal(crop_labels > 0, labels[:256, :256] > 0)
    with pytest.raises(ValueError):
        V.tile(image, labels, 1024, mode="constant")


def test_low_photon_noise_and_determinism(nuclei2d):
    image, labels = nuclei2d
    photons = 15.0
    noisy, same_labels = V.low_photon(image, labels, photons=photons, seed=3)
    assert noisy.shape == image.shape and noisy.dtype == image.dtype
    assert np.array_equal(same_labels, labels)
    assert _contrast(noisy, labels) > 0.8 * _contrast(image, labels)
    # Poisson: in photon units the added noise's variance equals the mean count.
    gain = photons / image[labels > 0].mean()
    inside = labels > 0
    added = (noisy.astype(np.float64) - image) * gain
    assert added[inside].var() / (image[inside] * gain).mean() == pytest.approx(1.0, rel=0.15)
    assert np.array_equal(noisy, V.low_photon(image, labels, photons=photons, seed=3)[0])
    assert not np.array_equal(noisy, V.low_photon(image, labels, photons=photons, seed=4)[0])


def test_inverted_has_dark_objects(nuclei2d):
    image, labels = nuclei2d
    dark, same_labels = V.inverted(image, labels)
    assert dark.dtype == image.dtype and np.array_equal(same_labels, labels)
    assert _contrast(image, labels) > 0 > _contrast(dark, labels)
    assert (dark.min(), dark.max()) == (image.min(), image.max())
    assert np.array_equal(V.inverted(dark, labels)[0], image)


def test_rgb_stain_purple_on_light(nuclei2d):
    image, labels = nuclei2d
    rgb, same_labels = V.rgb_stain(image, labels)
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    assert np.array_equal(same_labels, labels)
    assert _contrast(rgb, labels) < -20  # dark objects
    background = rgb[labels == 0].mean(axis=0)
    assert background.min() > 180  # a light background
    objects = rgb[labels > 0].astype(np.float64).mean(axis=0)
    r, g, b = objects
    assert b > r > g  # purple: blue and red over green


def test_moving_objects_move_by_speed(nuclei2d):
    image, labels = nuclei2d
    frames, speed = 6, 4.0
    movie, tracks = V.moving(image, labels, frames=frames, speed_px=speed, seed=1)
    assert movie.shape == tracks.shape == (frames, 512, 512)
    assert movie.dtype == image.dtype and tracks.dtype == labels.dtype
    ids = np.unique(labels[labels > 0])
    steps = []
    for t in range(frames):
        assert _contrast(movie[t], tracks[t]) > 0.8 * _contrast(image, labels)
        edge = np.concatenate([tracks[t, 0], tracks[t, -1], tracks[t, :, 0], tracks[t, :, -1]])
        assert not edge.any()  # objects stay whole inside the field
        assert set(np.unique(tracks[t])) <= set(ids) | {0}
    # Object areas hardly change (overlaps overwrite a few); centroids move by ~speed per frame.
    n = int(labels.max()) + 1
    before, after = np.bincount(labels.ravel(), minlength=n)[ids], np.bincount(tracks[-1].ravel(), minlength=n)[ids]
    assert np.median(after / before) == pytest.approx(1, abs=0.1)
    for t in range(1, frames):
        present = [k for k in ids if (tracks[t - 1] == k).any() and (tracks[t] == k).any()]
        a = np.array(ndi.center_of_mass(np.ones_like(labels), tracks[t - 1], present))
        b = np.array(ndi.center_of_mass(np.ones_like(labels), tracks[t], present))
        steps.append(np.linalg.norm(b - a, axis=1))
    assert np.median(np.concatenate(steps)) == pytest.approx(speed, rel=0.15)


def test_moving_is_deterministic(nuclei2d):
    image, labels = nuclei2d
    crop = image[:200, :200], labels[:200, :200]
    a = V.moving(*crop, frames=3, speed_px=2, seed=5)
    b = V.moving(*crop, frames=3, speed_px=2, seed=5)
    c = V.moving(*crop, frames=3, speed_px=2, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    still = V.moving(*crop, frames=2, speed_px=0, seed=5, turn_deg=0)
    assert np.array_equal(still[1][0], still[1][1])


def test_standard_variants(nuclei2d):
    image, labels = nuclei2d
    assert list(V.VARIANTS) == ["native", "2x", "3x", "2048", "low_photon", "inverted", "rgb"]
    names = ["native", "inverted", "rgb"]
    got = list(V.standard_variants(image, labels, names))
    assert [g[0] for g in got] == names
    assert np.array_equal(got[0][1], image) and got[0][1] is not image
    assert got[2][1].shape == (512, 512, 3)
    with pytest.raises(KeyError):
        next(V.standard_variants(image, labels, ["5x"]))


def test_corrupted_labels_moves_every_outline_a_few_pixels(nuclei2d):
    from napari_sam.metrics import iou
    from napari_sam.variants import corrupted_labels

    _, labels = nuclei2d
    bad = corrupted_labels(labels, pixels=2, seed=3)
    assert np.array_equal(bad, corrupted_labels(labels, pixels=2, seed=3))  # deterministic
    assert bad.dtype == labels.dtype and set(np.unique(bad)) == set(np.unique(labels))
    ious = np.array([iou(labels == i, bad == i) for i in np.unique(labels)[1:]])
    assert 0.6 < ious.mean() < 0.85 and ious.max() < 1.0  # each object changed, none lost
    grown = ndi.binary_dilation(labels > 0, np.ones((3, 3)), iterations=2)
    assert not (bad > 0)[~grown].any()  # nothing moved further than the few pixels
