"""Photon-limited planes: how noisy a plane is, and a denoised copy for the model.

LiteMedSAM draws ragged, fragmented outlines on shot-noise-limited fluorescence. The noise
is measured with a Poisson-Gaussian model, variance = gain * mean + floor, fitted on
neighbour differences in intensity bins. A variance-stabilising transform built from that
fit turns the noise into unit Gaussian noise, so that the objects' contrast can be given in
noise sigmas. A plane whose objects stand fewer than :data:`LIMITED_CONTRAST` sigmas above
their background is denoised before it is shown to the model: non-local means on the
stabilised values, then back to intensities. Pure numpy/scipy/scikit-image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from .object_size import foreground

# Objects fewer noise sigmas above (or below) their background than this are denoised. The
# bundled nuclei measure 7.4 (2.8 imaged with 15 photons per nucleus pixel, 3.6 with 30,
# 4.7 with 60); the automatic method's mSA there: 0.348 as they are, 0.471 denoised. On the
# native image denoising costs 0.04 mSA, so it must not fire there.
LIMITED_CONTRAST = 4.5
# Non-local means on the stabilised values (unit noise): patches of 5 px searched 6 px
# around each pixel. SIGMA (the noise the patch distances discount) and H (the filter
# strength) are in noise sigmas and kept low: the outlines must survive. mSA of the
# automatic method, not denoised -> H 0.5 / 0.55, on the nuclei at 15 photons (two noise
# draws), 8 and 30 photons, and at 15 photons magnified 2x: 0.348 -> 0.463 / 0.471, 0.322
# -> 0.421 / 0.472, 0.293 -> 0.399 / 0.411, 0.432 -> 0.499 / 0.508, 0.368 -> 0.383 /
# 0.350. Stronger filtering (H 0.65-1.0) lowered them all again.
PATCH, DISTANCE, H, SIGMA = 5, 6, 0.55, 0.45
MARGIN = PATCH // 2 + DISTANCE  # a pixel's denoised value depends on this many around it
FIT_PIXELS = 1 << 20  # the noise is fitted on at most about this many neighbour pairs
_BINS = 20


@dataclass(frozen=True)
class NoiseModel:
    """A plane's noise, variance = ``gain`` * mean + ``floor`` (clipped below at
    ``min_var``), over its intensities ``low`` to ``high``, and the objects' ``contrast``
    in noise sigmas."""

    gain: float
    floor: float
    min_var: float
    low: float
    high: float
    contrast: float = 0.0

    @property
    def limited(self) -> bool:
        """Whether the plane is photon-limited: denoised before the model sees it."""
        return self.contrast < LIMITED_CONTRAST

    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        grid = np.linspace(self.low, self.high, 4096)
        var = np.maximum(self.gain * grid + self.floor, self.min_var)
        step = np.diff(grid, prepend=grid[0]) / np.sqrt(var)
        return grid, np.cumsum(step)

    def stabilize(self, values: np.ndarray) -> np.ndarray:
        """Intensities -> values whose noise is about unit Gaussian."""
        grid, t = self._table()
        return np.interp(values, grid, t).astype(np.float32)

    def restore(self, stabilized: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`stabilize`."""
        grid, t = self._table()
        return np.interp(stabilized, t, grid).astype(np.float32)


def fit_noise(plane: np.ndarray) -> NoiseModel | None:
    """The noise model of a single-channel plane, or None where none can be fitted (RGB,
    constant or non-finite planes)."""
    x = np.asarray(plane)
    if x.ndim != 2 or min(x.shape) < 8:
        return None
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        return None
    low, high = float(x.min()), float(x.max())
    if high <= low:
        return None
    # Sampled rows, as float: a large plane is never copied whole.
    rows = x[:: max(1, int(np.ceil(x.size / FIT_PIXELS)))].astype(np.float32)
    mean = ((rows[:, 1:] + rows[:, :-1]) / 2).ravel()
    # Half the squared difference of two neighbours estimates the variance at their mean;
    # medians per bin ignore the few pairs that straddle an edge (0.4549: chi-square(1)'s).
    half_sq = ((rows[:, 1:] - rows[:, :-1]) ** 2 / 2).ravel()
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, _BINS + 1)))
    if len(edges) < 3:
        return None
    which = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, len(edges) - 2)
    mu, var = [], []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.sum() >= 100:
            mu.append(float(np.median(mean[sel])))
            var.append(float(np.median(half_sq[sel])) / 0.4549)
    if len(mu) < 2 or max(var) <= 0:
        return None
    gain, floor = np.linalg.lstsq(np.column_stack([mu, np.ones(len(mu))]), np.array(var), rcond=None)[0]
    min_var = max(min(v for v in var if v > 0), 1e-12) if any(v > 0 for v in var) else 1e-12
    model = NoiseModel(float(gain), float(floor), float(min_var), low, high)
    return replace(model, contrast=_contrast(x, model))


def _contrast(x: np.ndarray, model: NoiseModel, max_side: int = 1024) -> float:
    """The objects' contrast to their background in noise sigmas: the distance between
    the stabilised medians on the two sides of the smoothed plane's Otsu threshold
    (every k-th pixel of a large plane: the noise stays as it is)."""
    k = max(1, int(np.ceil(max(x.shape) / max_side)))
    t = model.stabilize(x[::k, ::k])
    fg = foreground(ndi.gaussian_filter(t, 1.0))
    if fg.all() or not fg.any():
        return float("inf")
    return float(abs(np.median(t[fg]) - np.median(t[~fg])))


def denoise(plane: np.ndarray, model: NoiseModel) -> np.ndarray:
    """``plane`` (single channel) denoised: float32 in its own intensities."""
    from skimage.restoration import denoise_nl_means

    t = model.stabilize(np.asarray(plane, dtype=np.float32))
    d = denoise_nl_means(t, h=H, sigma=SIGMA, patch_size=PATCH, patch_distance=DISTANCE, fast_mode=True)
    return model.restore(d)


def denoise_window(plane: np.ndarray, bounds: tuple[int, int, int, int], model: NoiseModel) -> np.ndarray:
    """``plane[r0:r1, c0:c1]`` denoised, with the context its edge pixels need from around
    it: the same values, up to float rounding, as that window of the denoised plane."""
    r0, c0, r1, c1 = bounds
    h, w = plane.shape[:2]
    a0, b0 = max(0, r0 - MARGIN), max(0, c0 - MARGIN)
    a1, b1 = min(h, r1 + MARGIN), min(w, c1 + MARGIN)
    out = denoise(plane[a0:a1, b0:b1], model)
    return out[r0 - a0 : r0 - a0 + (r1 - r0), c0 - b0 : c0 - b0 + (c1 - c0)]


def denoise_sample(plane: np.ndarray, model: NoiseModel, max_side: int = 1024) -> np.ndarray:
    """A denoised copy of ``plane`` sampled down to about ``max_side`` (every k-th pixel,
    which keeps the noise as it is): its intensity distribution, cheaply, for the limits."""
    k = max(1, int(np.ceil(max(plane.shape[:2]) / max_side)))
    return denoise(np.asarray(plane)[::k, ::k], model)
