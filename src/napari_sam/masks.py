"""One object's mask on a plane: its box, centre, interior point, connected part, shift and
contrast with its surroundings. Shared by tracking, propagation and automatic segmentation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

if TYPE_CHECKING:
    import torch


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The first and last row and column of a 2D mask (inclusive), or None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def box_around(mask: np.ndarray, pixels: float = 0.0, share: float = 0.0, origin: tuple[int, int] = (0, 0),
               shape: tuple[int, int] | None = None) -> np.ndarray:
    """A box prompt (r0, c0, r1, c1) around a non-empty mask, grown on every side by the
    larger of ``pixels`` and ``share`` of the mask's longer side, cut to the plane. A mask
    cropped from a plane gives its crop's ``origin`` and the plane's ``shape``."""
    r0, c0, r1, c1 = bbox(mask)
    pad = max(pixels, share * max(r1 - r0 + 1, c1 - c0 + 1))
    h, w = mask.shape if shape is None else shape
    box = np.array([r0 - pad, c0 - pad, r1 + pad, c1 + pad], dtype=np.float32) + np.tile(np.float32(origin), 2)
    return np.clip(box, 0, [h - 1, w - 1, h - 1, w - 1])


def centre(mask: np.ndarray) -> np.ndarray:
    """The centre of mass of a mask, as (row, col)."""
    return np.array(ndi.center_of_mass(mask))


def interior_point(mask: np.ndarray) -> np.ndarray:
    """The mask pixel farthest from its edge, as (row, col)."""
    dist = ndi.distance_transform_edt(mask)
    return np.array(np.unravel_index(np.argmax(dist), mask.shape), np.float32)


def connected_part(mask: np.ndarray, ref: np.ndarray, largest_if_apart: bool = True) -> np.ndarray:
    """The connected part of ``mask`` that overlaps ``ref`` most. When no part overlaps it:
    the largest part (``largest_if_apart``), else nothing."""
    parts, count = ndi.label(mask)
    overlap = np.bincount(parts[np.asarray(ref, dtype=bool)], minlength=count + 1)
    overlap[0] = 0
    if overlap.max():
        return parts == overlap.argmax()
    if not largest_if_apart or not count:
        return np.zeros_like(mask, dtype=bool)
    return parts == 1 + np.argmax(np.bincount(parts.ravel())[1:])


def shifted(mask: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``mask`` moved by a whole-pixel shift, cut at the plane's edge; a mask moved off the
    plane entirely stays where it was."""
    dr, dc = int(round(shift[0])), int(round(shift[1]))
    out = np.zeros_like(mask)
    h, w = mask.shape
    src = mask[max(0, -dr):h - max(0, dr), max(0, -dc):w - max(0, dc)]
    out[max(0, dr):max(0, dr) + src.shape[0], max(0, dc):max(0, dc) + src.shape[1]] = src
    return out if out.any() else mask


def grey(plane: np.ndarray) -> np.ndarray:
    """A plane as float32 intensities, colour channels averaged."""
    x = np.asarray(plane, dtype=np.float32)
    return x.mean(axis=-1) if x.ndim == 3 else x


def edge_strength(gradient: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``gradient`` (an image's gradient magnitude) over the mask's boundary pixels
    (the mask less its erosion): how closely its outline follows the image's edges."""
    edge = mask & ~ndi.binary_erosion(mask)
    return float(gradient[edge].mean()) if edge.any() else 0.0


def stability_scores(logits: torch.Tensor, offset: float) -> np.ndarray:
    """Per mask of ``logits`` (N, ...), cut at 0: its area above ``offset`` over its area
    above ``-offset`` (SAM's stability score; 1 for a crisp mask)."""
    inner = (logits > offset).flatten(1).sum(1).float()
    outer = (logits > -offset).flatten(1).sum(1).float()
    return (inner / outer.clamp(min=1)).cpu().numpy()


# Outlines are compared on the image's gradient magnitude at EDGE_SIGMA px per 25 px of
# object size: fine enough for the edge of a small nucleus, smooth enough for photon noise
# (a scale of 1 px chose worse outlines everywhere, at low photon counts half as well).
EDGE_SIGMA = 2.0


def edge_map(plane: np.ndarray, diameter: float, bounds: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The gradient magnitude of ``plane`` (colours averaged, NaN as the median) at the
    scale of objects ``diameter`` px across (see :data:`EDGE_SIGMA`), over the whole plane
    or over its part ``bounds`` (r0, c0, r1, c1), half-open, computed with a margin so that
    its edges are right."""
    sigma = EDGE_SIGMA * max(1.0, float(diameter) / 25.0)
    h, w = plane.shape[:2]
    r0, c0, r1, c1 = bounds if bounds is not None else (0, 0, h, w)
    pad = int(np.ceil(4 * sigma))
    R0, C0, R1, C1 = max(0, r0 - pad), max(0, c0 - pad), min(h, r1 + pad), min(w, c1 + pad)
    values = grey(plane[R0:R1, C0:C1])
    if np.isnan(values).any():
        values = np.nan_to_num(values, nan=float(np.nanmedian(values)) if not np.isnan(values).all() else 0.0)
    return ndi.gaussian_gradient_magnitude(values, sigma)[r0 - R0:r1 - R0, c0 - C0:c1 - C0]


def on_strongest_edges(gradient: np.ndarray, masks: list[np.ndarray] | np.ndarray) -> int:
    """Index of the mask whose outline lies on the strongest edges of ``gradient`` (see
    :func:`edge_strength`; an empty mask is never chosen unless all are)."""
    strengths = [edge_strength(gradient, m) if m.any() else -1.0 for m in masks]
    return int(np.argmax(strengths))


def object_contrast(plane: np.ndarray, mask: np.ndarray) -> float:
    """Mean inside the mask minus the median of a thin ring around it (negative: darker)."""
    ring = ndi.binary_dilation(mask, iterations=4) & ~ndi.binary_dilation(mask, iterations=1)
    values = grey(plane)
    return float(values[mask].mean() - np.median(values[ring])) if ring.any() else 0.0


__all__ = ["EDGE_SIGMA", "bbox", "box_around", "centre", "connected_part", "edge_map", "edge_strength", "grey",
           "interior_point", "object_contrast", "on_strongest_edges", "shifted", "stability_scores"]
