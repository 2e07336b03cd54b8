"""Photon-limited planes: the noise fit, the decision to denoise, and the denoiser."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.prompting.noise import LIMITED_CONTRAST, denoise, denoise_window, fit_noise
from napari_sam.variants import low_photon, standard_variants


def test_the_fit_recovers_a_poisson_gaussian_gain_and_floor():
    rng = np.random.default_rng(0)
    expected = np.repeat(np.linspace(2, 60, 64), 64).reshape(64, 64).T.repeat(4, 0)  # photons: a ramp
    gain, read_sigma = 3.0, 4.0
    image = gain * rng.poisson(expected) + rng.normal(100, read_sigma, expected.shape)
    model = fit_noise(image)
    assert model.gain == pytest.approx(gain, rel=0.1)
    # variance = gain * (mean - offset) + read noise: the floor holds both
    assert model.floor == pytest.approx(read_sigma ** 2 - gain * 100, rel=0.1)
    # stabilised, the noise is about unit at every level
    t = model.stabilize(image)
    for cols in (slice(0, 8), slice(28, 36), slice(56, 64)):
        half_sq = np.diff(t[:, cols], axis=0) ** 2 / 2
        assert np.sqrt(half_sq.mean()) == pytest.approx(1.0, abs=0.15)
    np.testing.assert_allclose(model.restore(t), image, rtol=1e-3, atol=0.5)


def test_only_photon_limited_planes_are_denoised(nuclei2d):
    image, labels = nuclei2d
    contrast = {}
    for name, variant, _ in standard_variants(image, labels, ["native", "2x", "inverted", "low_photon"]):
        contrast[name] = fit_noise(variant).contrast
    # measured 7.4, 23.9, 7.6 and 2.8 noise sigmas
    assert contrast["low_photon"] < LIMITED_CONTRAST - 1
    assert min(contrast["native"], contrast["2x"], contrast["inverted"]) > LIMITED_CONTRAST + 2
    fewer = [fit_noise(low_photon(image, labels, photons)[0]).contrast for photons in (5, 15, 60)]
    assert fewer[0] < fewer[1] < fewer[2]  # more photons, more contrast
    rgb, = [v for _, v, _ in standard_variants(image, labels, ["rgb"])]
    assert fit_noise(rgb) is None and fit_noise(np.full((64, 64), 3.0)) is None
    assert fit_noise(np.where(np.eye(64, dtype=bool), np.nan, 1.0)) is None


def test_denoising_brings_a_low_photon_plane_closer_to_the_clean_one(nuclei2d):
    image, labels = nuclei2d
    noisy = low_photon(image, labels, 15)[0]
    model = fit_noise(noisy)
    clean = image.astype(np.float32)
    out = denoise(noisy, model)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    before = np.sqrt(np.mean((noisy - clean) ** 2))
    after = np.sqrt(np.mean((out - clean) ** 2))
    assert after < 0.6 * before, (before, after)


def test_a_window_is_denoised_exactly_as_in_the_whole_plane(nuclei2d):
    image, labels = nuclei2d
    noisy = low_photon(image[:200, :180], labels[:200, :180], 15)[0]
    model = fit_noise(noisy)
    whole = denoise(noisy, model)
    for r0, c0, r1, c1 in [(0, 0, 64, 64), (50, 37, 150, 101), (136, 116, 200, 180)]:
        np.testing.assert_array_equal(denoise_window(noisy, (r0, c0, r1, c1), model), whole[r0:r1, c0:c1])
