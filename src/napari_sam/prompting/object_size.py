"""How big the objects of a plane are: the size that sets the zoom of prompting.

A granulometry on the thresholded plane: objects are the minority side of an Otsu
threshold (bright on dark or dark on bright), and each connected region's widest inscribed
disc gives its diameter; touching objects merged by the threshold still give one object's
width. Large planes are measured on a block-averaged copy. Pure numpy/scipy/scikit-image.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.transform import downscale_local_mean

MAX_SIDE = 1024  # larger planes are averaged down to about this side first
MIN_DIAMETER = 4.0


def default_diameter(shape: tuple[int, int]) -> float:
    """The guess when nothing can be measured: 1/20 of the shorter side."""
    return max(MIN_DIAMETER, min(shape[:2]) / 20.0)


def foreground(smooth: np.ndarray) -> np.ndarray:
    """The objects' side of an Otsu threshold of a (smoothed, non-constant) grey plane:
    the minority side, so bright objects on dark and dark objects on bright alike."""
    fg = smooth > threshold_otsu(smooth)
    return ~fg if fg.mean() > 0.5 else fg


def _smoothed_grey(plane: np.ndarray) -> tuple[np.ndarray | None, int]:
    """``plane`` as grey, non-finite values set to its median, block-averaged by k to about
    :data:`MAX_SIDE`, smoothed; (None, k) when nothing in it varies."""
    img = np.asarray(plane, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    if not np.isfinite(img).all():
        finite = np.isfinite(img)
        if not finite.any():
            return None, 1
        img = np.where(finite, img, np.median(img[finite]))
    k = max(1, math.ceil(max(img.shape) / MAX_SIDE))
    if k > 1:
        img = downscale_local_mean(img, (k, k))
    smooth = ndi.gaussian_filter(img, 1.0)
    return (smooth if np.ptp(smooth) > 0 else None), k


def objects_are_bright(plane: np.ndarray) -> bool:
    """Whether ``plane``'s objects are brighter than its background (see :func:`foreground`);
    True for a constant plane."""
    smooth, _ = _smoothed_grey(plane)
    if smooth is None:
        return True
    fg = foreground(smooth)
    return bool(smooth[fg].mean() >= smooth[~fg].mean())


def estimate_diameter(plane: np.ndarray) -> float:
    """The typical object diameter in pixels of ``plane`` (H, W) or (H, W, C), any dtype."""
    shape = np.shape(plane)[:2]
    smooth, k = _smoothed_grey(plane)
    if smooth is None:
        return default_diameter(shape)
    fg = foreground(smooth)
    fg = ndi.binary_opening(fg)  # single-pixel noise is no object
    labels, n = ndi.label(fg)
    if n == 0:
        return default_diameter(shape)
    areas = np.bincount(labels.ravel())[1:]
    radii = np.asarray(ndi.maximum(ndi.distance_transform_edt(fg), labels, np.arange(1, n + 1)))
    keep = areas >= 9
    if not keep.any():
        return default_diameter(shape)
    # Weighted by area: a few large objects outweigh specks left by noise.
    diameters = 2.0 * radii[keep] * k
    order = np.argsort(diameters)
    cum = np.cumsum(areas[keep][order])
    median = float(diameters[order][np.searchsorted(cum, cum[-1] / 2.0)])
    return float(np.clip(median, MIN_DIAMETER, max(shape)))


def estimate_stack_diameter(image: np.ndarray, planes: int = 5) -> float:
    """:func:`estimate_diameter` of a plane (H, W) or (H, W, C), or for a (Z, H, W) stack
    the median over ``planes`` evenly spaced planes."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] not in (3, 4):
        picks = np.unique(np.linspace(0, img.shape[0] - 1, min(planes, img.shape[0])).round().astype(int))
        return float(np.median([estimate_diameter(img[z]) for z in picks]))
    return estimate_diameter(img)
