"""Segment everything in a (Z, H, W) stack and return 3D instance labels.

Each plane on its own finds few of the small, dim cross-sections of nuclei in a noisy
anisotropic stack (on the real nucleus volume of the tests, per-plane segmentation linked
by overlap reaches an F1 of 0.20). Here objects are found in 3D instead: seeds are the local
maxima of the stack smoothed at the objects' size (brightest first); each seed's box, from
the bright blob around it on its slice, is segmented by SAM and carried through the stack by
:func:`napari_sam.propagate`. A seed inside an object already found is skipped,
and objects keep the voxels they took first.

The steps are separate functions (:func:`plan_seeds`, :func:`carry_seed`,
:func:`assemble_steps`) so that the carrying, the costly part, can run elsewhere (on a dask
cluster, see :mod:`napari_sam.cli.batch`) and still give the serial run's labels.

Seeds are looked for as bright blobs; a stack of dark objects on a bright background
(stains, brightfield) is mirrored within its range for that, and only for that.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max

from .automatic import AutoParams, run_with_progress
from ..errors import Cancelled
from ..imaging import finite
from ..masks import bbox
from ..prompting.object_size import objects_are_bright
from ..predictor import Predictor
from .column import Piece
from .propagation import PropagationParams, propagate_piece


def seeds(volume: np.ndarray, params: AutoParams = AutoParams()) -> np.ndarray:
    """(N, 3) local maxima (z, row, col) of the stack smoothed at the smallest object size,
    brighter than ``params.seed_level`` between the stack's median and its 99.5th
    percentile, brightest first."""
    params = params.sized_for(volume)
    sigma = params.min_diameter / 3
    smooth = ndi.gaussian_filter(np.asarray(volume, dtype=np.float32), (1.0, sigma, sigma))
    background, top = np.median(smooth), np.percentile(smooth, 99.5)
    found = peak_local_max(smooth, min_distance=max(1, round(params.min_diameter / 1.5)), exclude_border=False,
                           threshold_abs=background + params.seed_level * (top - background))
    order = np.argsort(-smooth[tuple(found.T)], kind="stable")
    return found[order]


@dataclass(frozen=True)
class Seed:
    """Where an object is looked for: a voxel and the box of its blob on its slice (None
    when the blob is not an object: too large, or not brighter than the background)."""

    at: tuple[int, int, int]
    box: np.ndarray | None


def checked_volume(volume: object) -> np.ndarray:
    """The volume as a numeric (Z, H, W) array; NaN and infinities replaced (a float32 copy)
    only when there are any."""
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) volume, got shape {vol.shape}")
    if not np.issubdtype(vol.dtype, np.number) or vol.dtype == np.bool_:
        raise TypeError(f"expected a numeric volume, got dtype {vol.dtype}")
    return finite(vol) if np.issubdtype(vol.dtype, np.inexact) else vol


def plan_seeds(volume: np.ndarray, params: AutoParams = AutoParams(),
               propagation: PropagationParams = PropagationParams()) -> list[Seed]:
    """The seeds of a checked volume (see :func:`checked_volume`), most contrasted first;
    the objects may be brighter or darker than their background (judged on the middle slice)."""
    params = params.sized_for(volume)
    bright = _objects_bright(volume)
    denoised = ndi.gaussian_filter(bright, propagation.denoise_sigma)
    background = float(np.median(denoised))
    return [Seed((int(z), int(r), int(c)), _seed_box(denoised[z], (r, c), background, params.max_diameter))
            for z, r, c in seeds(bright, params)]


def _objects_bright(volume: np.ndarray) -> np.ndarray:
    """The volume as float32, mirrored within its range when its objects are darker than
    their background, so that they are bright blobs for :func:`seeds`."""
    vol = volume.astype(np.float32, copy=False)
    if objects_are_bright(vol[vol.shape[0] // 2]):
        return vol
    return (float(vol.max()) + float(vol.min())) - vol


def carry_seed(predictor: Predictor, volume: np.ndarray, seed: Seed,
               propagation: PropagationParams = PropagationParams()) -> Piece:
    """The object of one seed (with a box), segmented on its slice and carried through the stack."""
    return propagate_piece(predictor, volume, seed.at[0], box=seed.box, params=propagation)


def assemble_steps(shape: tuple[int, int, int], planned: Sequence[Seed], piece_of: Callable[[int], Piece],
                   min_area: int, cancel: Callable[[], bool] | None = None,
                   ) -> Generator[tuple[int, int], None, np.ndarray]:
    """Number the seeds' objects in seed order, yielding (seeds done, total); returns int32 labels.

    ``piece_of(i)`` gives seed i's object; it is asked only for seeds with a box that lie
    outside every object kept so far. An object keeps the voxels no earlier object took,
    if at least ``min_area`` of them. Computing the pieces ahead (on a cluster, say) and
    looking them up here gives the same labels as computing them on demand.
    """
    labels = np.zeros(shape, dtype=np.int32)
    count = 0
    for i, seed in enumerate(planned):
        if cancel is not None and cancel():
            raise Cancelled("segmentation was cancelled")
        if seed.box is not None and not labels[seed.at]:
            piece = piece_of(i)
            region = labels[piece.where]
            free = piece.mask & (region == 0)
            if free.sum() >= min_area:
                count += 1
                region[free] = count
        yield i + 1, len(planned)
    return labels


def segment_volume_steps(
    predictor: Predictor, volume: object, params: AutoParams = AutoParams(),
    cancel: Callable[[], bool] | None = None, propagation: PropagationParams = PropagationParams(),
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Find and carry every object of a (Z, H, W) volume, yielding (seeds done, total);
    returns (Z, H, W) int32 labels numbered 1..N."""
    vol = checked_volume(volume)
    planned = plan_seeds(vol, params, propagation)
    return (yield from assemble_steps(vol.shape, planned,
                                      lambda i: carry_seed(predictor, vol, planned[i], propagation),
                                      params.min_area, cancel))


def segment_volume(predictor: Predictor, volume: object, params: AutoParams = AutoParams(),
                   progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """3D instance labels of a (Z, H, W) volume (see :func:`segment_volume_steps`)."""
    return run_with_progress(segment_volume_steps(predictor, volume, params, cancel), progress)


def _seed_box(plane: np.ndarray, at: tuple[int, int], background: float, max_size: float) -> np.ndarray | None:
    """The box around the blob brighter than halfway from background to the seed, or None
    when the seed is not brighter than the background or its blob is larger than max_size."""
    level = background + 0.5 * (plane[at] - background)
    if plane[at] <= level:
        return None
    parts, _ = ndi.label(plane > level)
    blob = parts == parts[at]
    r0, c0, r1, c1 = bbox(blob)
    if r1 - r0 + 1 > max_size or c1 - c0 + 1 > max_size:
        return None
    return np.array([r0, c0, r1, c1], dtype=np.float32)


__all__ = ["Seed", "assemble_steps", "carry_seed", "checked_volume", "plan_seeds", "seeds", "segment_volume",
           "segment_volume_steps"]
