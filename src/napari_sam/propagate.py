"""Carry one object through a stack: segment it on one slice, then slice by slice up and
down (z) or forward and back (t), each slice prompted by the mask of the one before.

SAM keeps finding *something* in every slice, so the hard part is knowing where the object
ends. A slice is accepted only while all of these hold (each measured on real, noisy
nucleus volumes, where the naive "previous box + 2 px" runs through every slice):

- its mask is not much smaller than the start mask (the object tapers off);
- its area has not grown again after shrinking (growing again means a neighbour stacked
  above or below has been picked up: nuclei are roughly convex);
- it overlaps the previous slice's mask;
- the previous mask's footprint is still brighter than its surroundings, by at least a
  fraction of the start slice's contrast, and that contrast has not risen again after a
  dip (again a neighbour).

No napari here: the widget and scripts call :func:`propagate` with an ``embed`` callable
that serves cached embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi

from .predictor import Embedding, Predictor


@dataclass(frozen=True)
class PropagationParams:
    """Prompting and stopping rules; the defaults are tuned on real nucleus volumes."""

    box_margin: float = 1.5  # pixels added around the previous mask's bounding box
    mask_threshold: float | None = None  # logit cut; None: -1 for box-only models, else 0
    min_area_fraction: float = 0.15  # stop below this part of the start slice's area
    max_regrowth: float = 0.15  # stop when the area grows this much over its running minimum
    min_overlap: float = 0.3  # stop when IoU with the previous slice's mask falls below
    min_contrast: float = 0.5  # stop when the footprint's contrast falls below this x the start's
    contrast_regain: float = 0.15  # stop when contrast rises by this x the start's after a dip
    smooth_sigma: float = 1.5  # Gaussian sigma (pixels) of the contrast measurement, in-plane
    smooth_sigma_stack: float = 1.0  # and across slices: single slices of such data are very noisy


def propagate(
    predictor: Predictor,
    volume: object,
    z: int,
    points: object = None,
    labels: object = None,
    box: object = None,
    mask: np.ndarray | None = None,
    params: PropagationParams = PropagationParams(),
    corrections: Mapping[int, np.ndarray] | None = None,
    embed: Callable[[int], Embedding] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Segment the object prompted on slice ``z`` of a (Z, H, W) stack through the stack.

    Prompt with ``points``/``labels`` and/or ``box`` (plane pixels, as for
    :meth:`Predictor.predict`), or pass the start ``mask`` (e.g. the chosen candidate).
    ``corrections`` maps slice -> mask drawn or fixed by the user: propagation takes it
    as that slice's answer and carries on from it (an empty one ends the object there).
    ``embed(z)`` returns slice z's embedding (default: embed on demand, kept for this call).
    Returns a (Z, H, W) bool array.
    """
    shape = tuple(getattr(volume, "shape", np.shape(volume)))
    if len(shape) != 3:
        raise ValueError(f"propagation needs a (Z, H, W) stack, got shape {shape}")
    n = shape[0]
    if not 0 <= z < n:
        raise IndexError(f"slice {z} is outside the stack of {n} slices")
    if mask is None and points is None and box is None:
        raise ValueError("give a prompt (points and/or a box) or a start mask on slice z")
    corrections = dict(corrections or {})
    threshold = params.mask_threshold
    if threshold is None:
        threshold = -1.0 if predictor.box_only else 0.0
    embed = embed or _embedder(predictor, volume)
    smoothed: dict[int, np.ndarray] = {}

    flat: dict[int, np.ndarray] = {}
    reach = int(np.ceil(2 * params.smooth_sigma_stack))
    weights = np.exp(-0.5 * (np.arange(-reach, reach + 1) / max(params.smooth_sigma_stack, 1e-6)) ** 2)

    def plane(k: int) -> np.ndarray:
        """Slice k smoothed in-plane and across its neighbours, for the contrast test."""
        if k not in smoothed:
            acc, total = 0.0, 0.0
            for d, wgt in zip(range(-reach, reach + 1), weights):
                j = k + d
                if 0 <= j < n:
                    if j not in flat:
                        flat[j] = ndi.gaussian_filter(np.asarray(volume[j], dtype=np.float32), params.smooth_sigma)
                    acc, total = acc + wgt * flat[j], total + wgt
            smoothed[k] = acc / total
        return smoothed[k]

    def decode(k: int, prev: np.ndarray) -> np.ndarray:
        return _mask_from_prompts(predictor, embed(k), threshold, box=_box_around(prev, params.box_margin),
                                  points=None if predictor.box_only else _interior_point(prev)[None])

    out = np.zeros(shape, dtype=bool)
    if z in corrections:
        start = np.asarray(corrections[z], dtype=bool)
    elif mask is not None:
        start = np.asarray(mask, dtype=bool)
        if start.shape != shape[1:]:
            raise ValueError(f"the start mask has shape {start.shape}, the slices {shape[1:]}")
    else:
        if box is not None and predictor.box_only:
            # Box-trained models learnt from loose boxes: a tight one gives too small a mask.
            box = np.asarray(box, np.float32) + np.array([-1, -1, 1, 1], np.float32) * params.box_margin
            box = np.clip(box, 0, [shape[1] - 1, shape[2] - 1, shape[1] - 1, shape[2] - 1])
        start = _mask_from_prompts(predictor, embed(z), threshold, box=box, points=points, labels=labels)
    out[z] = start
    done, total = 1, n
    if progress is not None:
        progress(done, total)
    if not start.any():
        return out
    area0 = int(start.sum())
    contrast0 = _contrast(plane(z), start)
    for step in (-1, 1):
        prev, k = start, z
        area_min, contrast_min = area0, contrast0
        while 0 <= k + step < n:
            if cancel is not None and cancel():
                from .automatic import Cancelled

                raise Cancelled("propagation was cancelled")
            k += step
            if k in corrections:
                current = np.asarray(corrections[k], dtype=bool)
                if not current.any():
                    break
            else:
                contrast = _contrast(plane(k), prev)
                if contrast < params.min_contrast * contrast0 or \
                        contrast > contrast_min + params.contrast_regain * contrast0:
                    break
                contrast_min = min(contrast_min, contrast)
                current = decode(k, prev)
                area = int(current.sum())
                if area < params.min_area_fraction * area0 or area > (1 + params.max_regrowth) * area_min:
                    break
                if _iou(current, prev) < params.min_overlap:
                    break
                area_min = min(area_min, area)
            out[k] = current
            prev = current
            done += 1
            if progress is not None:
                progress(done, total)
    if progress is not None:
        progress(total, total)
    return out


def _embedder(predictor: Predictor, volume: object) -> Callable[[int], Embedding]:
    """Embed slices on demand, each once."""
    cache: dict[int, Embedding] = {}

    def embed(k: int) -> Embedding:
        if k not in cache:
            cache[k] = predictor.embed(np.asarray(volume[k]))
        return cache[k]

    return embed


def _mask_from_prompts(predictor: Predictor, embedding: Embedding, threshold: float, box: object = None,
                       points: object = None, labels: object = None) -> np.ndarray:
    """The best mask for the prompts, cut at ``threshold`` instead of SAM's 0."""
    single = predictor.box_only or (points is not None and box is not None)
    cand = predictor.predict(embedding, points=points, labels=labels, box=box, multimask=not single)
    logits = torch.as_tensor(cand.logits[cand.best][None, None])
    return (predictor.upscale(logits, embedding)[0] > threshold).cpu().numpy()


def _box_around(mask: np.ndarray, margin: float) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    h, w = mask.shape
    box = np.array([rows[0] - margin, cols[0] - margin, rows[-1] + margin, cols[-1] + margin], np.float32)
    return np.clip(box, 0, [h - 1, w - 1, h - 1, w - 1])


def _interior_point(mask: np.ndarray) -> np.ndarray:
    """The mask pixel farthest from its edge, as (row, col)."""
    dist = ndi.distance_transform_edt(mask)
    return np.array(np.unravel_index(np.argmax(dist), mask.shape), np.float32)


def _contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean inside ``mask`` minus the median of a thin ring around it."""
    ring = ndi.binary_dilation(mask, iterations=4) & ~ndi.binary_dilation(mask, iterations=1)
    if not ring.any() or not mask.any():
        return 0.0
    return float(image[mask].mean() - np.median(image[ring]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


__all__ = ["PropagationParams", "propagate"]
