"""Sample data for napari: synthetic fluorescence nuclei, generated here, no download.

:func:`synthetic_nuclei` is plain numpy/scipy (testable without napari); the
``sample_*`` functions wrap it as napari layer data.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

LayerData = tuple[np.ndarray, dict, str]


def synthetic_nuclei(
    shape: tuple[int, ...] = (256, 256),
    n: int = 30,
    radius: tuple[float, float] = (7.0, 13.0),
    z_ratio: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Blurred, noisy, textured ellipses (2D) or ellipsoids (3D) like stained nuclei.

    Returns a uint16 image and its int32 instance labels (0 = background). In 3D the
    first axis is z, with radii scaled by ``z_ratio`` (anisotropic sampling). Objects
    may touch but do not overlap; fewer than ``n`` are placed when space runs out.
    """
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be 2D or 3D, got {shape}")
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    brightness = np.zeros(shape, dtype=np.float32)
    placed = 0
    for _ in range(n * 20):
        if placed == n:
            break
        mask, where = _random_nucleus(shape, radius, z_ratio, rng)
        if mask is None or (labels[where][mask] > 0).any():
            continue
        placed += 1
        labels[where][mask] = placed
        brightness[where][mask] = rng.uniform(0.45, 1.0)
    texture = ndi.gaussian_filter(rng.normal(0.0, 1.0, shape).astype(np.float32), 1.5)
    signal = brightness * (1.0 + 0.3 * texture / (texture.std() + 1e-6))
    signal = ndi.gaussian_filter(signal, 1.2)
    image = 120.0 + 2600.0 * signal + rng.normal(0.0, 40.0, shape)
    return np.clip(image, 0, 65535).astype(np.uint16), labels


def _random_nucleus(shape: tuple[int, ...], radius: tuple[float, float], z_ratio: float,
                    rng: np.random.Generator) -> tuple[np.ndarray | None, tuple[slice, ...]]:
    """A random ellipse/ellipsoid: its mask inside a bounding box, and that box."""
    r_major = rng.uniform(*radius)
    radii = np.array([r_major, r_major * rng.uniform(0.65, 1.0)])
    angle = rng.uniform(0, np.pi)
    if len(shape) == 3:
        radii = np.concatenate([[r_major * z_ratio], radii])
    centre = np.array([rng.uniform(0, s) for s in shape])
    extent = np.full(len(shape), radii[-2:].max())  # any rotation fits in the major radius
    extent[:-2] = radii[:-2]
    half = np.ceil(extent) + 1
    lo = np.maximum(np.floor(centre - half), 0).astype(int)
    hi = np.minimum(np.ceil(centre + half) + 1, shape).astype(int)
    if np.any(hi - lo < 2):
        return None, ()
    grids = np.meshgrid(*[np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)], indexing="ij")
    y, x = grids[-2], grids[-1]
    u = np.cos(angle) * y + np.sin(angle) * x
    v = -np.sin(angle) * y + np.cos(angle) * x
    q = (u / radii[-2]) ** 2 + (v / radii[-1]) ** 2
    if len(shape) == 3:
        q = q + (grids[0] / radii[0]) ** 2
    mask = q <= 1.0
    if mask.sum() < 9:
        return None, ()
    return mask, tuple(slice(a, b) for a, b in zip(lo, hi))


def sample_nuclei_2d() -> list[LayerData]:
    """napari sample: a 256x256 field of synthetic nuclei."""
    image, _ = synthetic_nuclei((256, 256), n=30, seed=1)
    return [(image, {"name": "nuclei 2D (synthetic)", "contrast_limits": (0, int(image.max())),
                     "axis_labels": ("y", "x")}, "image")]


def sample_nuclei_3d() -> list[LayerData]:
    """napari sample: a 16x128x128 stack of synthetic nuclei (z sampled 2x coarser)."""
    image, _ = synthetic_nuclei((16, 128, 128), n=20, radius=(8.0, 12.0), seed=2)
    return [(image, {"name": "nuclei 3D (synthetic)", "contrast_limits": (0, int(image.max())),
                     "axis_labels": ("z", "y", "x"), "scale": (2.0, 1.0, 1.0)}, "image")]


def sample_nuclei_movie() -> list[LayerData]:
    """napari sample: 12 frames of 256x256 synthetic nuclei, each moving about 3 px per
    frame, with a time axis named ``t`` (commit through stack follows them)."""
    from .variants import moving

    image, labels = synthetic_nuclei((256, 256), n=30, seed=1)
    movie, _ = moving(image, labels, frames=12, speed_px=3.0, seed=3)
    return [(movie, {"name": "moving nuclei (synthetic)", "contrast_limits": (0, int(movie.max())),
                     "axis_labels": ("t", "y", "x")}, "image")]
