"""The part of a stack around one object, and how the intensity carry reads it.

A :class:`Piece` is an object within its bounding column, so a stack's objects cost
memory by their size. An :class:`ObjectColumn` is the stack cut to the window around the
object, all slices, read once and denoised: it measures the object's
:class:`Appearance` on its start slice, finds its extent from the intensity profile
(see :mod:`napari_sam.segmentation.propagation`), and grows a mask from one slice to the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage as ndi

from ..imaging import finite
from ..masks import connected_part


class ColumnParams(Protocol):
    """The settings a column reads (:class:`~napari_sam.segmentation.propagation.PropagationParams` has them)."""

    denoise_sigma: float
    profile_sigma: float
    end_level: float
    valley: float
    level: float
    grow: int
    ring: int


@dataclass(frozen=True)
class Piece:
    """One object within its bounding column: ``mask`` covers slices ``z0 ..`` and the
    in-plane window from (``r0``, ``c0``), so a stack's objects cost memory by their size."""

    z0: int
    r0: int
    c0: int
    mask: np.ndarray  # (slices, rows, cols) bool

    @property
    def where(self) -> tuple[slice, slice, slice]:
        """The index of the piece's box in the stack."""
        dz, dh, dw = self.mask.shape
        return slice(self.z0, self.z0 + dz), slice(self.r0, self.r0 + dh), slice(self.c0, self.c0 + dw)

    def plane(self, z: int, plane_shape: tuple[int, int]) -> np.ndarray:
        """The object on slice ``z`` as a full (H, W) bool array (empty off the piece)."""
        full = np.zeros(plane_shape, dtype=bool)
        if self.z0 <= z < self.z0 + self.mask.shape[0]:
            h, w = self.mask.shape[1:]
            full[self.r0:self.r0 + h, self.c0:self.c0 + w] = self.mask[z - self.z0]
        return full

    def paste(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The object as a full (Z, H, W) bool array."""
        full = np.zeros(shape, dtype=bool)
        full[self.where] = self.mask
        return full


@dataclass(frozen=True)
class Appearance:
    """How the object stands out on its start slice, in the denoised column."""

    background: float
    brightness: float
    sign: float  # +1: brighter than its surroundings; -1: darker
    ring: np.ndarray  # the pixels around the start mask that measure the background

    def point(self, fraction: float) -> float:
        """The intensity ``fraction`` of the way from background to brightness (sign-corrected)."""
        return self.sign * self.background + fraction * abs(self.brightness - self.background)


class ObjectColumn:
    """The part of the stack around the object, all slices, read once and denoised."""

    def __init__(self, volume: object, window: tuple[slice, slice], params: ColumnParams) -> None:
        self.window, self.params, self.shape = window, params, tuple(getattr(volume, "shape", np.shape(volume)))
        raw = finite(np.asarray(volume[(slice(None), *window)], dtype=np.float32))  # type: ignore[index]
        self.denoised = ndi.gaussian_filter(raw, params.denoise_sigma)
        self.profile_planes = ndi.gaussian_filter(raw, (0, params.profile_sigma, params.profile_sigma))

    def crop(self, full: np.ndarray) -> np.ndarray:
        """A plane-sized mask cut to the column's window."""
        return np.asarray(full, dtype=bool)[self.window]

    def piece(self, found: dict[int, np.ndarray]) -> Piece:
        """The slices found (slice -> window mask, contiguous) as one piece."""
        z0 = min(found)
        mask = np.stack([found[k] for k in range(z0, max(found) + 1)])
        return Piece(z0, self.window[0].start or 0, self.window[1].start or 0, mask)

    def paste(self, local: np.ndarray) -> np.ndarray:
        """A window mask placed on an empty plane-sized one."""
        full = np.zeros(self.shape[1:], dtype=bool)
        full[self.window] = local
        return full

    def look(self, z: int, start: np.ndarray) -> Appearance:
        """The object's brightness against the ring around ``start`` on slice ``z``."""
        ring = ndi.binary_dilation(start, iterations=self.params.ring) & ~ndi.binary_dilation(start, iterations=1)
        plane = self.denoised[z]
        background = float(np.median(plane[ring])) if ring.any() else float(np.median(plane))
        brightness = float(np.median(plane[start]))
        return Appearance(background, brightness, 1.0 if brightness >= background else -1.0, ring)

    def extent(self, z: int, start: np.ndarray, look: Appearance) -> tuple[int, int]:
        """First and last slice of the object, from its profile (see the module docstring)."""
        footprint = ndi.binary_erosion(start)
        if not footprint.any():
            footprint = start
        profile = look.sign * np.array([plane[footprint].mean() for plane in self.profile_planes])
        ring = look.ring
        background = look.sign * float(np.median(self.profile_planes[z][ring])) if ring.any() else profile.min()
        ends = []
        for step in (-1, 1):
            k, top, low, valley = z, profile[z], profile[z], z
            while 0 <= k + step < len(profile):
                nxt = k + step
                span = max(top - background, 1e-6)
                if profile[nxt] < background + self.params.end_level * span:
                    break
                if low < top - self.params.valley * span and profile[nxt] > low + self.params.valley * span:
                    k = valley - step  # rising again after a dip: a neighbour; leave the dip out
                    break
                if profile[nxt] < low:
                    low, valley = profile[nxt], nxt
                elif low >= top - self.params.valley * span:
                    top = max(top, profile[nxt])  # still on the object's plateau
                k = nxt
            ends.append(k)
        return ends[0], ends[1]

    def bright(self, k: int, look: Appearance) -> np.ndarray:
        """Where slice k is past the object's ``level`` (on its side of the background)."""
        return look.sign * self.denoised[k] > look.point(self.params.level)

    def grow(self, k: int, prev: np.ndarray, look: Appearance) -> np.ndarray:
        """The previous mask grown by ``grow`` pixels, within the object's level on slice k."""
        return connected_part(ndi.binary_dilation(prev, iterations=self.params.grow) & self.bright(k, look), prev,
                              largest_if_apart=False)

    def keep_bright(self, k: int, prev: np.ndarray, look: Appearance, mask: np.ndarray) -> np.ndarray:
        """The model's mask on slice k, kept to the object's bright part next to ``prev``."""
        return connected_part(mask & self.bright(k, look), prev, largest_if_apart=False)


__all__ = ["Appearance", "ColumnParams", "ObjectColumn", "Piece"]
