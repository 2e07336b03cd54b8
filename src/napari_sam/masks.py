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


def box_around(mask: np.ndarray, pixels: float = 0.0, share: float = 0.0) -> np.ndarray:
    """A box prompt (r0, c0, r1, c1) around a non-empty mask, grown on every side by the
    larger of ``pixels`` and ``share`` of the mask's longer side, cut to the plane."""
    r0, c0, r1, c1 = bbox(mask)
    pad = max(pixels, share * max(r1 - r0 + 1, c1 - c0 + 1))
    h, w = mask.shape
    box = np.array([r0 - pad, c0 - pad, r1 + pad, c1 + pad], dtype=np.float32)
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


def object_contrast(plane: np.ndarray, mask: np.ndarray) -> float:
    """Mean inside the mask minus the median of a thin ring around it (negative: darker)."""
    ring = ndi.binary_dilation(mask, iterations=4) & ~ndi.binary_dilation(mask, iterations=1)
    values = grey(plane)
    return float(values[mask].mean() - np.median(values[ring])) if ring.any() else 0.0


__all__ = ["bbox", "box_around", "centre", "connected_part", "edge_strength", "grey", "interior_point", "object_contrast",
           "shifted", "stability_scores"]
