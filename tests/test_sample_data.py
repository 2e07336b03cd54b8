"""Synthetic nucleus sample data: plain numpy, no napari, no download."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam._sample_data import sample_nuclei_2d, sample_nuclei_3d, sample_nuclei_movie, synthetic_nuclei


def test_synthetic_nuclei_2d_look_like_nuclei():
    image, labels = synthetic_nuclei((200, 180), n=20, seed=0)
    assert image.dtype == np.uint16 and labels.dtype == np.int32 and image.shape == labels.shape == (200, 180)
    assert labels.max() == 20 and set(np.unique(labels)) == set(range(21))
    areas = np.bincount(labels.ravel())[1:]
    assert areas.min() > 30 and areas.max() < 700
    assert image[labels > 0].mean() > 3 * image[labels == 0].mean()  # bright on dark
    again, _ = synthetic_nuclei((200, 180), n=20, seed=0)
    assert np.array_equal(image, again)  # seeded: reproducible


def test_synthetic_nuclei_3d_are_anisotropic():
    image, labels = synthetic_nuclei((16, 64, 64), n=6, radius=(8.0, 10.0), z_ratio=0.5, seed=1)
    assert image.shape == labels.shape == (16, 64, 64) and labels.max() >= 4
    for i in range(1, labels.max() + 1):
        z, y, x = np.nonzero(labels == i)
        assert np.ptp(z) < max(np.ptp(y), np.ptp(x))  # flatter along z
    with pytest.raises(ValueError):
        synthetic_nuclei((4, 4, 4, 4))


def test_napari_samples_are_layer_data():
    for sample, shape, axes in ((sample_nuclei_2d, (256, 256), ("y", "x")),
                                (sample_nuclei_3d, (16, 128, 128), ("z", "y", "x")),
                                (sample_nuclei_movie, (12, 256, 256), ("t", "y", "x"))):
        (data, meta, kind), = sample()
        assert kind == "image" and data.shape == shape and "name" in meta and meta["axis_labels"] == axes
    assert sample_nuclei_3d()[0][1]["scale"] == (2.0, 1.0, 1.0)  # z sampled twice as coarsely


def test_the_movie_sample_moves():
    (movie, _, _), = sample_nuclei_movie()
    first, last = movie[0].astype(float), movie[-1].astype(float)
    assert np.corrcoef(first.ravel(), last.ravel())[0, 1] < 0.5  # the nuclei moved away from where they were
