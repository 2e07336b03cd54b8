"""Follow objects through the frames of a movie (or the slices of a stack) with SAM.

Each next frame is prompted from the previous result moved by the object's estimated
motion: the object's pixels on the previous frame are matched (normalised
cross-correlation over its mask) in the next frame near where its last velocity would
take it, and the moved box (plus an interior point for point-capable models) is answered
by the prompt service at zoom (:class:`~napari_sam.prompting.service.PromptService`). So an object moving
several pixels per frame is not lost, as it is when the previous mask is only grown.

Every frame gets a confidence and may be flagged unsure: the model's predicted IoU is
low, the mask barely overlaps the moved previous mask, its area jumps, or it has lost
most of the start frame's contrast with its surroundings. The model alone keeps finding
*something* where an object bleached away (predicted IoU 0.64-0.90 on such frames of
real nuclei), while the contrast falls from 0.5-1.0 of the start frame's to under 0.45. A run of
unsure frames ends the object there (those frames are dropped); so does an empty mask.

Results are kept per frame as crops (:class:`Track`), so long movies of large frames cost
memory by the objects' size. No napari here; the widget answers prompts through its
engine (tiles already embedded), scripts through :func:`track` on an array.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy import ndimage as ndi

from ..errors import Cancelled
from ..imaging import finite
from ..masks import bbox, box_around, centre, connected_part, grey, interior_point, object_contrast, shifted
from ..metrics import iou
from ..values import Candidates
from ..prompting.service import PromptService, plane_digest


@dataclass(frozen=True)
class TrackParams:
    """How far to look for the object and when a frame is unsure.

    ``search``: how far the object may move from where its velocity predicts, in object
    sizes (plus ``search_px``); ``prior`` is how much the match prefers shifts near that
    prediction (its penalty at the edge of the search). The box around the moved previous mask gets a margin of
    ``box_margin`` of its size (at least a pixel): boxes cut tight to the last mask would
    make each mask a little smaller than the one before. A frame is unsure when the predicted IoU is under
    ``min_score``, the IoU with the moved previous mask under ``min_overlap``, the area
    changes by more than ``area_change`` times, or the object's contrast with its
    surroundings falls under ``min_contrast`` of what it was on the start frame. ``patience`` unsure frames in a row
    end the object (they are dropped).
    """

    search: float = 0.5
    search_px: int = 6
    prior: float = 0.5
    box_margin: float = 0.1
    min_score: float = 0.5
    min_overlap: float = 0.3
    min_contrast: float = 0.4
    area_change: float = 2.0
    patience: int = 2

    def unsure(self, score: float, overlap: float, contrast: float, area_ratio: float) -> bool:
        """Whether a frame with these measures is unsure (``area_ratio``: its area over the
        previous frame's)."""
        return (score < self.min_score or overlap < self.min_overlap or contrast < self.min_contrast
                or not 1 / self.area_change <= area_ratio <= self.area_change)


@dataclass(frozen=True)
class Frame:
    """The object on one frame: ``mask`` is a crop whose corner is (``r0``, ``c0``)."""

    index: int
    r0: int
    c0: int
    mask: np.ndarray
    score: float  # the model's predicted IoU
    overlap: float  # IoU with the previous frame's mask moved by ``shift`` (1 on the start frame)
    contrast: float  # contrast with the surroundings, relative to the start frame's
    shift: tuple[float, float]
    unsure: bool

    @classmethod
    def of(cls, k: int, mask: np.ndarray, score: float, overlap: float, contrast: float,
           shift: tuple[float, float], unsure: bool) -> Frame:
        """Frame ``k`` of a plane ``mask``, kept as the crop of its bounding box."""
        r0, c0, r1, c1 = bbox(mask)
        return cls(k, r0, c0, mask[r0:r1 + 1, c0:c1 + 1].copy(), score, overlap, contrast,
                   (float(shift[0]), float(shift[1])), unsure)

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def paste(self, plane_shape: tuple[int, int]) -> np.ndarray:
        full = np.zeros(plane_shape, dtype=bool)
        h, w = self.mask.shape
        full[self.r0:self.r0 + h, self.c0:self.c0 + w] = self.mask
        return full


@dataclass
class Track:
    """One object through the frames it was found on, with why it stopped each way."""

    plane_shape: tuple[int, int]
    frames: dict[int, Frame] = field(default_factory=dict)
    stopped: dict[int, str] = field(default_factory=dict)  # direction (-1 / +1) -> reason

    @property
    def span(self) -> tuple[int, int]:
        """First and last frame found."""
        return min(self.frames), max(self.frames)

    def confidence(self) -> dict[int, float]:
        """Frame -> confidence in [0, 1]: the predicted IoU, lowered where the mask does
        not follow on from the previous frame's or has lost its contrast."""
        return {k: float(f.score * min(1.0, f.overlap / 0.5) * np.clip(f.contrast / 0.5, 0.0, 1.0))
                for k, f in sorted(self.frames.items())}

    def unsure(self) -> list[int]:
        """The frames kept but flagged unsure."""
        return [k for k, f in sorted(self.frames.items()) if f.unsure]

    def mask(self, k: int) -> np.ndarray:
        """The object's mask on frame ``k`` over the whole plane (empty where not found)."""
        f = self.frames.get(k)
        return np.zeros(self.plane_shape, dtype=bool) if f is None else f.paste(self.plane_shape)

    def paste(self, n_frames: int) -> np.ndarray:
        """The object as a dense (T, H, W) bool array (for small stacks and tests)."""
        out = np.zeros((n_frames, *self.plane_shape), dtype=bool)
        for k, f in self.frames.items():
            out[k] = f.paste(self.plane_shape)
        return out


class Frames(Protocol):
    """What tracking needs from a movie: each frame's pixels and prompts answered on it."""

    def __len__(self) -> int: ...

    def read(self, k: int) -> np.ndarray: ...

    def segment(self, k: int, box: np.ndarray, points: np.ndarray | None) -> Candidates: ...


class ArrayFrames:
    """The frames of a (T, H, W[, 3]) array, prompts answered by ``service`` at zoom.

    Only the frames asked for are read, so lazy (dask, zarr, memmap) movies stay lazy.
    """

    def __init__(self, service: PromptService, volume: object) -> None:
        self.service, self.volume = service, volume
        self._plane: tuple[int, np.ndarray, str] | None = None

    def __len__(self) -> int:
        return int(np.shape(self.volume)[0])

    def read(self, k: int) -> np.ndarray:
        if self._plane is None or self._plane[0] != k:
            plane = finite(np.asarray(self.volume[k]))  # type: ignore[index]
            self._plane = (k, plane, plane_digest(plane))
        return self._plane[1]

    def segment(self, k: int, box: np.ndarray, points: np.ndarray | None) -> Candidates:
        plane = self.read(k)
        assert self._plane is not None
        labels = None if points is None else np.ones(len(points), dtype=np.int32)
        return self.service.segment(plane, points=points, labels=labels, box=box, signature=self._plane[2])


def track(
    frames: Frames,
    start: int,
    mask: np.ndarray,
    params: TrackParams = TrackParams(),
    corrections: Mapping[int, np.ndarray] | None = None,
    use_points: bool = False,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Track:
    """Follow the object of ``mask`` (frame ``start``) backward and forward through ``frames``.

    ``corrections`` maps frame -> a mask the user drew or fixed: it is taken as that
    frame's answer and followed on from (an empty one ends the object there).
    ``use_points`` adds the moved interior point of the previous mask to each box
    (point-capable models). ``cancel()`` returning True raises
    :class:`~napari_sam.errors.Cancelled`.
    """
    n = len(frames)
    mask = np.asarray(mask, dtype=bool)
    corrections = {int(k): np.asarray(v, dtype=bool) for k, v in (corrections or {}).items()}
    plane_shape = mask.shape
    out = Track(plane_shape)
    if not mask.any():
        return out
    out.frames[start] = Frame.of(start, mask, 1.0, 1.0, 1.0, (0.0, 0.0), False)
    start_contrast = object_contrast(frames.read(start), mask)
    done = 1
    for step in (-1, 1):
        prev, k = mask, start
        velocity = np.zeros(2)
        unsure_run: list[int] = []
        reason = "end of the stack"
        while 0 <= k + step < n:
            if cancel is not None and cancel():
                raise Cancelled("tracking was cancelled")
            nxt = k + step
            if nxt in corrections:
                current = corrections[nxt]
                if not current.any():
                    reason = f"your correction on frame {nxt} is empty"
                    break
                shift = tuple(centre(current) - centre(prev))
                frame = Frame.of(nxt, current, 1.0, 1.0, 1.0, shift, False)
            else:
                shift = motion(frames.read(k), frames.read(nxt), prev, velocity, params)
                moved = shifted(prev, shift)
                box = box_around(moved, pixels=1.0, share=params.box_margin)
                points = interior_point(moved)[None] if use_points else None
                cand = frames.segment(nxt, box, points)
                current = connected_part(cand.masks[cand.best], moved)
                if not current.any():
                    reason = f"no object found on frame {nxt}"
                    break
                score = float(cand.scores[cand.best])
                overlap = iou(current, moved)
                ratio = current.sum() / max(1, prev.sum())
                contrast = object_contrast(frames.read(nxt), current) / start_contrast if start_contrast else 1.0
                unsure = params.unsure(score, overlap, contrast, ratio)
                frame = Frame.of(nxt, current, score, overlap, contrast, shift, unsure)
            if frame.unsure:
                unsure_run.append(nxt)
                if len(unsure_run) >= params.patience:
                    for u in unsure_run:
                        out.frames.pop(u, None)
                    reason = f"unsure from frame {unsure_run[0]}"
                    break
            else:
                unsure_run = []
            out.frames[nxt] = frame
            velocity = np.asarray(frame.shift, dtype=float)
            prev, k = current, nxt
            done += 1
            if progress is not None:
                progress(done, n)
        out.stopped[step] = reason
    return out


def motion(before: np.ndarray, after: np.ndarray, mask: np.ndarray, velocity: np.ndarray,
           params: TrackParams = TrackParams()) -> tuple[float, float]:
    """The (rows, cols) shift that takes the object of ``mask`` on ``before`` to ``after``.

    The object (its mask grown by two pixels, so its edge counts) is matched by normalised
    cross-correlation over the mask's pixels only, within ``params.search`` object sizes
    of where ``velocity`` predicts it. Matching the object's pixels alone matters: a patch
    that holds background would be pulled toward no motion by the static background. A
    mild prior prefers shifts near the prediction, so a similar neighbour does not win a tie.
    """
    a, b = grey(before), grey(after)
    grown = ndi.binary_dilation(mask, iterations=2)
    t0, u0, r1, c1 = bbox(grown)
    t1, u1 = r1 + 1, c1 + 1
    size = max(t1 - t0, u1 - u0)
    reach = int(np.ceil(params.search * size)) + params.search_px
    h, w = a.shape
    pr, pc = int(round(velocity[0])), int(round(velocity[1]))
    s0, s1 = max(t0 + pr - reach, 0), min(t1 + pr + reach, h)
    v0, v1 = max(u0 + pc - reach, 0), min(u1 + pc + reach, w)
    if s1 - s0 < t1 - t0 or v1 - v0 < u1 - u0:
        return float(velocity[0]), float(velocity[1])
    score = _masked_ncc(b[s0:s1, v0:v1], a[t0:t1, u0:u1], grown[t0:t1, u0:u1])
    if score is None:
        return float(velocity[0]), float(velocity[1])
    dr = np.arange(score.shape[0])[:, None] + s0 - t0
    dc = np.arange(score.shape[1])[None, :] + v0 - u0
    score = score - params.prior * ((dr - velocity[0]) ** 2 + (dc - velocity[1]) ** 2) / reach ** 2
    i, j = np.unravel_index(np.argmax(score), score.shape)
    return float(dr[i, 0]), float(dc[0, j])


def _masked_ncc(search: np.ndarray, template: np.ndarray, weight: np.ndarray) -> np.ndarray | None:
    """Normalised cross-correlation of ``template`` over its ``weight`` pixels at every
    placement inside ``search`` ('valid' placements); None for a flat template."""
    from scipy.signal import correlate

    w = weight.astype(np.float64)
    n = w.sum()
    t = (template - (template * w).sum() / n) * w
    norm = np.sqrt((t * t).sum())
    if n < 2 or norm == 0:
        return None
    x = search.astype(np.float64)
    num = correlate(x, t, mode="valid", method="fft")
    s1 = correlate(x, w, mode="valid", method="fft")
    s2 = correlate(x * x, w, mode="valid", method="fft")
    var = np.maximum(s2 - s1 * s1 / n, 0.0)
    return np.where(var > 1e-12 * max(1.0, float(var.max())), num / (norm * np.sqrt(var) + 1e-12), -1.0)


__all__ = ["ArrayFrames", "Frame", "Frames", "Track", "TrackParams", "motion", "track"]
