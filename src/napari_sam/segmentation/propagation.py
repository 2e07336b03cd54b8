"""Carry one object through a stack: segment it on one slice, then slice by slice up and
down (z) or forward and back (t), each slice segmented from the mask of the one before.

SAM keeps finding *something* in every slice, so the hard part is knowing where the object
ends. Its extent comes from its intensity profile: the mean of the denoised stack inside
the start mask's footprint, slice by slice. Going out from the start slice, the object
ends where the profile falls below a level between the local background and the object's
brightness, or where, having dipped, it rises again: a neighbour stacked above or below
(the dip itself is left out).

Within that extent each slice is segmented from the previous slice's mask, in one of two
ways (:attr:`PropagationParams.carry`):

- ``"intensity"`` (the default): the previous mask, grown by a pixel or two, cut to where
  the denoised slice is brighter than the object's level, keeping the part connected to
  the previous mask. On noisy fluorescence nuclei this follows the object better than
  prompting SAM on every slice, and needs no embedding beyond the start slice's.
- ``"model"``: SAM on each slice (its embedding from ``embed``), prompted with a box
  around the previous mask (plus an interior point for point-capable models), kept to the
  object's bright part.
- ``"motion"``: for movies. The object is followed as it moves, each frame answered by SAM
  at zoom, and it ends where the model and the image say it is gone
  (:func:`napari_sam.segmentation.tracking.track`; its extent does not come from the profile).

The start slice is segmented by SAM on the denoised slice, zoomed in on the prompt
(:meth:`Predictor.segment`), unless a start mask or a correction is given. Objects darker
than their surroundings are followed the same way, with the contrast reversed.

No napari here: the widget and scripts call :func:`propagate`; only a column of the stack
around the object is read, so lazy stacks stay lazy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .column import ObjectColumn, Piece
from .crossing import MovedAxis, coarse_plane_axis, crossing_prompt, unmove
from ..errors import Cancelled
from ..masks import bbox, box_around, centre, interior_point, object_contrast
from ..metrics import iou
from ..predictor import Predictor
from ..values import Embedding
from ..prompting.service import mask_threshold
from .memory_propagation import track_objects
from .tracking import ArrayFrames, Frame, Track, TrackParams, track

CARRIES = ("intensity", "model", "motion")
SAM2_PLANES_KEPT = 3  # embeddings kept while a SAM 2 model tracks through a stack
CROSS_AGREE = 0.5  # how well an object followed along another axis must match the start mask


@dataclass(frozen=True)
class PropagationParams:
    """How slices are segmented and where the object ends; the defaults are tuned on a
    real nucleus volume (objects ~7 slices deep, 15 px wide, noisy and crowded)."""

    carry: str = "intensity"  # "intensity", "model" or "motion": see the module docstring
    denoise_sigma: float = 0.7  # Gaussian sigma (pixels, every axis) of the denoised stack
    profile_sigma: float = 1.5  # in-plane sigma of the profile; none along the stack, where it would blur the dips
    end_level: float = 0.6  # the object ends below this point between background (0) and its brightness (1)
    valley: float = 0.15  # ... or where its profile rises by this part of its contrast after dipping as much
    level: float = 0.6  # in-plane: pixels above this point between background and object belong to it
    grow: int = 1  # pixels a mask may grow by from one slice to the next
    box_margin: float = 1.5  # pixels added around a box prompt, and around the previous mask (model carry)
    mask_threshold: float | None = None  # logit cut; None: the prompt service's (prompting.mask_threshold)
    ring: int = 4  # width in pixels of the ring around the start mask that measures the background


def propagate_piece(
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
    spacing: Sequence[float] | None = None,
) -> Piece:
    """Segment the object prompted on slice ``z`` of a (Z, H, W) stack through the stack.

    Only the object's bounding column is returned, so many objects of a large stack fit in
    memory. Prompt with ``points``/``labels`` and/or ``box`` (plane pixels, as for
    :meth:`Predictor.predict`), or pass the start ``mask`` (e.g. the chosen candidate).
    ``corrections`` maps slice -> mask drawn or fixed by the user: propagation takes it
    as that slice's answer and carries on from it (an empty one ends the object there).
    ``embed(k)`` returns slice k's embedding, for ``params.carry == "model"`` (default:
    embed on demand, kept for this call). ``spacing`` is the voxel size along (stack,
    rows, cols), e.g. the napari layer's ``scale``: where a plane axis is sampled much more
    coarsely than the stack axis (z, seen in z x y or z x x planes), the object is followed
    along that axis instead, through the planes it is sharp in (:mod:`napari_sam.segmentation.crossing`).
    Returns the object as a :class:`Piece`.
    """
    shape = tuple(getattr(volume, "shape", np.shape(volume)))
    if len(shape) != 3:
        raise ValueError(f"propagation needs a (Z, H, W) stack, got shape {shape}")
    n = shape[0]
    if not 0 <= z < n:
        raise IndexError(f"slice {z} is outside the stack of {n} slices")
    if mask is None and points is None and box is None:
        raise ValueError("give a prompt (points and/or a box) or a start mask on slice z")
    if params.carry not in CARRIES:
        raise ValueError(f"carry must be one of {CARRIES}, got {params.carry!r}")
    crossing = coarse_plane_axis(spacing)  # time series (carry="motion") are never crossed
    corrections = {k: np.asarray(v, dtype=bool) for k, v in (corrections or {}).items()}
    for k, fix in corrections.items():
        if fix.shape != shape[1:]:
            raise ValueError(f"the correction on slice {k} has shape {fix.shape}, the slices {shape[1:]}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape[1:]:
            raise ValueError(f"the start mask has shape {mask.shape}, the slices {shape[1:]}")

    if params.carry == "motion":
        return _motion_piece(predictor, volume, z, points, labels, box, mask, corrections, progress, cancel)
    window = _extent_of(shape[1:], mask, points, box, corrections.get(z))
    column = None
    if z in corrections:
        start = corrections[z]
    elif mask is not None:
        start = mask
    else:
        column = ObjectColumn(volume, window, params)
        start = _start_mask(predictor, column, z, points, labels, box, params)
    if crossing is not None and start.any():
        across = _across(predictor, volume, z, start, crossing, spacing, params, corrections, progress, cancel)
        if across is not None:
            return across
    column = column or ObjectColumn(volume, window, params)
    local = column.crop(start)  # the window holds every start mask (see _extent_of)
    found = {z: local}
    if progress is not None:
        progress(1, n)
    if not start.any():
        return column.piece(found)

    look = column.look(z, local)
    first, last = column.extent(z, local, look)
    threshold = mask_threshold(predictor.box_only) if params.mask_threshold is None else params.mask_threshold
    embed = embed or _embedder(predictor, volume)
    done = 1
    for step, end in ((-1, first), (1, last)):
        prev, k = local, z
        while 0 <= k + step < n:
            if cancel is not None and cancel():
                raise Cancelled("propagation was cancelled")
            k += step
            if k in corrections:
                current = column.crop(corrections[k])
                if not current.any():
                    break
            elif (k - end) * step > 0:
                break
            elif params.carry == "intensity":
                current = column.grow(k, prev, look)
            else:
                current = column.keep_bright(k, prev, look, column.crop(_mask_from_prompts(
                    predictor, embed(k), threshold, box=box_around(column.paste(prev), pixels=params.box_margin),
                    points=None if predictor.box_only else interior_point(column.paste(prev))[None])))
            if not current.any():
                break
            found[k] = current
            prev = current
            done += 1
            if progress is not None:
                progress(done, n)
    if progress is not None:
        progress(n, n)
    return column.piece(found)


def propagate(predictor: Predictor, volume: object, z: int, points: object = None, labels: object = None,
              box: object = None, mask: np.ndarray | None = None, params: PropagationParams = PropagationParams(),
              corrections: Mapping[int, np.ndarray] | None = None, embed: Callable[[int], Embedding] | None = None,
              progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
              spacing: Sequence[float] | None = None) -> np.ndarray:
    """Segment the object prompted on slice ``z`` of a (Z, H, W) stack through the stack;
    returns a (Z, H, W) bool array. See :func:`propagate_piece` for the arguments.

    With a SAM 2.1 model the object is carried by the model's memory instead
    (:func:`~napari_sam.segmentation.memory_propagation.track_objects`): ``params`` and
    ``spacing`` do not apply, and it ends where the model no longer sees the object.
    """
    if predictor.is_sam2:
        shape = _stack_shape(volume, z)
        start = mask if mask is not None else (_points_or_none(points), labels, box)
        if mask is None and points is None and box is None:
            raise ValueError("give a prompt (points and/or a box) or a start mask on slice z")
        tracks = track_objects(predictor.model, embed or _embedder(predictor, volume, keep=SAM2_PLANES_KEPT),
                               shape[0], z, {1: start}, {k: np.asarray(m, bool) for k, m in (corrections or {}).items()},
                               progress=progress, cancel=cancel)
        return tracks[1].paste(shape[0])
    piece = propagate_piece(predictor, volume, z, points, labels, box, mask, params, corrections, embed,
                            progress, cancel, spacing)
    return piece.paste(tuple(getattr(volume, "shape", np.shape(volume))))  # type: ignore[arg-type]


def _extent_of(plane_shape: tuple[int, int], mask: np.ndarray | None, points: object, box: object,
               fix: np.ndarray | None) -> tuple[slice, slice]:
    """An in-plane window around the prompt, wide enough for the object and its background."""
    h, w = plane_shape
    rows: list[float] = []
    cols: list[float] = []
    for m in (mask, fix):
        if m is not None and (found := bbox(m)) is not None:
            rows += [found[0], found[2]]
            cols += [found[1], found[3]]
    if box is not None and np.size(box) == 4:
        b = np.asarray(box, dtype=np.float32).reshape(-1)
        rows += [b[0], b[2]]
        cols += [b[1], b[3]]
    if points is not None and np.size(points):
        p = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        rows += list(p[:, 0])
        cols += list(p[:, 1])
    if not rows:
        return slice(0, h), slice(0, w)
    size = max(max(rows) - min(rows), max(cols) - min(cols), 10.0)
    pad = int(np.ceil(size)) + 8
    r0, r1 = max(int(min(rows)) - pad, 0), min(int(np.ceil(max(rows))) + pad + 1, h)
    c0, c1 = max(int(min(cols)) - pad, 0), min(int(np.ceil(max(cols))) + pad + 1, w)
    return slice(r0, r1), slice(c0, c1)


def _start_mask(predictor: Predictor, column: ObjectColumn, z: int, points: object, labels: object, box: object,
                params: PropagationParams) -> np.ndarray:
    """SAM's mask for the prompts on the denoised start slice, zoomed in (plane pixels)."""
    r0, c0 = column.window[0].start, column.window[1].start
    offset = np.array([r0, c0], dtype=np.float32)
    local_box = None
    if box is not None:
        local_box = np.asarray(box, dtype=np.float32).reshape(-1) - np.tile(offset, 2)
        if predictor.box_only:
            # Box-trained models learnt from loose boxes: a tight one gives too small a mask.
            local_box = local_box + np.array([-1, -1, 1, 1], np.float32) * params.box_margin
        h, w = column.denoised.shape[1:]
        local_box = np.clip(local_box, 0, [h - 1, w - 1, h - 1, w - 1])
    local_points = None if points is None else np.asarray(points, dtype=np.float32).reshape(-1, 2) - offset
    cand = predictor.segment(column.denoised[z], points=local_points, labels=labels, box=local_box, multimask=True)
    return column.paste(cand.masks[cand.best])


def _across(predictor: Predictor, volume: object, z: int, start: np.ndarray, b: int, spacing: Sequence[float],
            params: PropagationParams, corrections: dict[int, np.ndarray],
            progress: Callable[[int, int], None] | None, cancel: Callable[[], bool] | None) -> Piece | None:
    """The object of ``start`` (slice ``z``) followed along plane axis ``b`` instead of the
    stack axis; None when that way does not find it. The start slice and the user's
    corrections keep their masks as given (an empty correction ends the object there).

    The object found that way must agree with ``start`` on slice ``z`` (IoU at least
    ``CROSS_AGREE``); failing that, the crossings through the neighbouring rows of the start
    mask are tried and the most agreeing kept; under half that, the stack axis is followed
    after all. A crossing that lands on a neighbour or on background disagrees with the
    start mask: on the real volume the 3D IoUs under 0.25 were those that agreed under 0.25."""
    best: tuple[float, Piece] | None = None
    k0, box = crossing_prompt(start, z, b, spacing)
    for k in (k0, k0 - 1, k0 + 1):
        if not 0 <= k < start.shape[b - 1] or not (start[k] if b == 1 else start[:, k]).any():
            continue
        if k != k0:
            _, box = crossing_prompt(start, z, b, spacing, at=k)
        moved = propagate_piece(predictor, MovedAxis(volume, b), k, box=box, params=params, progress=progress,
                                cancel=cancel)
        z0, r0, c0 = (moved.r0, moved.z0, moved.c0) if b == 1 else (moved.r0, moved.c0, moved.z0)
        piece = Piece(z0, r0, c0, unmove(moved.mask, b))
        agree = iou(piece.plane(z, start.shape), start)
        if best is None or agree > best[0]:
            best = (agree, piece)
        if agree >= CROSS_AGREE:
            break
    if best is None or best[0] < CROSS_AGREE / 2:
        return None
    planes = {**corrections, z: start}
    ends = [k for k, m in corrections.items() if not m.any()]
    below = max([k for k in ends if k < z], default=None)
    above = min([k for k in ends if k > z], default=None)
    return _overlay(best[1], planes, below, above)


def _overlay(piece: Piece, planes: Mapping[int, np.ndarray], below: int | None, above: int | None) -> Piece:
    """``piece`` with whole slices set to the given (H, W) masks, grown to hold them, and
    cut off at or beyond slice ``below`` and ``above``."""
    dz, dh, dw = piece.mask.shape
    boxes = [(piece.z0, piece.z0 + dz, piece.r0, piece.r0 + dh, piece.c0, piece.c0 + dw)]
    for k, m in planes.items():
        if (found := bbox(m)) is not None:
            boxes.append((k, k + 1, found[0], found[2] + 1, found[1], found[3] + 1))
    z0, r0, c0 = (min(b[i] for b in boxes) for i in (0, 2, 4))
    z1, r1, c1 = (max(b[i] for b in boxes) for i in (1, 3, 5))
    out = np.zeros((z1 - z0, r1 - r0, c1 - c0), dtype=bool)
    out[piece.z0 - z0:piece.z0 - z0 + dz, piece.r0 - r0:piece.r0 - r0 + dh, piece.c0 - c0:piece.c0 - c0 + dw] = piece.mask
    for k, m in planes.items():
        out[k - z0] = m[r0:r1, c0:c1]
    if below is not None:
        out[:max(0, below + 1 - z0)] = False
    if above is not None:
        out[max(0, above - z0):] = False
    return Piece(z0, r0, c0, out)


def score_piece(read: Callable[[int], np.ndarray], n: int, start: int, piece: Piece,
                plane_shape: tuple[int, int], params: TrackParams = TrackParams()) -> Track:
    """A :class:`Track` of an object found another way (the intensity carry through z),
    with the same per-frame confidence and unsure flags as :func:`track` gives, less the
    model's score: each mask's IoU with its neighbour toward ``start``, its area change and
    its contrast relative to the start frame's. ``read(k)`` returns frame k's pixels, of ``n``.
    Works on the piece's window, so memory follows the object's size."""
    window = piece.where[1:]
    masks = {piece.z0 + i: m for i, m in enumerate(piece.mask) if m.any()}
    if start not in masks:
        raise ValueError(f"the object holds nothing on the start frame {start}")
    out = Track(plane_shape)

    def frame(k: int, mask: np.ndarray, *rest: Any) -> Frame:
        f = Frame.of(k, mask, *rest)
        return replace(f, r0=f.r0 + window[0].start, c0=f.c0 + window[1].start)

    start_contrast = object_contrast(read(start)[window], masks[start])
    out.frames[start] = frame(start, masks[start], 1.0, 1.0, 1.0, (0.0, 0.0), False)
    for step in (-1, 1):
        prev = masks[start]
        found = sorted((k for k in masks if (k - start) * step > 0), key=lambda k: k * step)
        for k in found:  # an object followed along another axis may skip a slice
            current = masks[k]
            overlap = iou(current, prev)
            ratio = current.sum() / max(1, prev.sum())
            contrast = object_contrast(read(k)[window], current) / start_contrast if start_contrast else 1.0
            unsure = params.unsure(1.0, overlap, contrast, ratio)  # no model score here
            out.frames[k] = frame(k, current, 1.0, overlap, contrast, tuple(centre(current) - centre(prev)), unsure)
            prev = current
        last = found[-1] if found else start
        out.stopped[step] = "end of the stack" if last + step in (-1, n) else "where its intensity profile ends"
    return out


def _motion_piece(predictor: Predictor, volume: object, z: int, points: object, labels: object, box: object,
                  mask: np.ndarray | None, corrections: dict[int, np.ndarray],
                  progress: Callable[[int, int], None] | None, cancel: Callable[[], bool] | None) -> Piece:
    """The object followed by its motion (``carry="motion"``), as one piece over the window
    all its frames share (for long movies of a moving object, :func:`~napari_sam.segmentation.tracking.track`
    keeps each frame's crop instead)."""
    service = predictor.prompts()
    frames = ArrayFrames(service, volume)
    if z in corrections:
        start = corrections[z]
    elif mask is not None:
        start = mask
    else:
        cand = service.segment(frames.read(z), points=points, labels=labels, box=box)
        start = cand.masks[cand.best]
    found = track(frames, z, start, corrections=corrections, use_points=not predictor.box_only,
                  progress=progress, cancel=cancel)
    if not found.frames:
        return Piece(z, 0, 0, np.zeros((1, 0, 0), dtype=bool))
    first, last = found.span
    r0 = min(f.r0 for f in found.frames.values())
    c0 = min(f.c0 for f in found.frames.values())
    r1 = max(f.r0 + f.mask.shape[0] for f in found.frames.values())
    c1 = max(f.c0 + f.mask.shape[1] for f in found.frames.values())
    out = np.zeros((last - first + 1, r1 - r0, c1 - c0), dtype=bool)
    for k, f in found.frames.items():
        out[k - first, f.r0 - r0:f.r0 - r0 + f.mask.shape[0], f.c0 - c0:f.c0 - c0 + f.mask.shape[1]] = f.mask
    return Piece(first, r0, c0, out)


def propagate_labels(
    predictor: Predictor,
    volume: object,
    z: int,
    labels: np.ndarray,
    params: PropagationParams = PropagationParams(),
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    spacing: Sequence[float] | None = None,
    embed: Callable[[int], Embedding] | None = None,
) -> np.ndarray:
    """Carry every object of ``labels`` (an (H, W) label image of slice ``z``) through the
    stack; returns (Z, H, W) labels with each object under its own id. ``embed(k)``: slice
    k's embedding, where the caller has them (default: embed on demand).

    With a SAM 2.1 model all objects are carried at once by the model's memory.

    Objects are followed one at a time, each as its own :func:`propagate_piece` (memory
    follows the objects' size, plus the output). Where two objects claim a pixel of another
    slice, the one that is larger on slice ``z`` keeps it. ``spacing``: as for
    :func:`propagate_piece`.
    """
    labels = np.asarray(labels)
    shape = tuple(getattr(volume, "shape", np.shape(volume)))
    if labels.shape != shape[1:]:
        raise ValueError(f"the labels have shape {labels.shape}, the slices {shape[1:]}")
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    out = np.zeros(shape, dtype=np.min_scalar_type(int(ids.max())) if len(ids) else np.uint8)
    if predictor.is_sam2:  # all objects at once, each slice's features read once
        order = [int(k) for k in ids[np.argsort(-areas, kind="stable")]]
        tracks = track_objects(predictor.model, embed or _embedder(predictor, volume, keep=SAM2_PLANES_KEPT), shape[0], z,
                               {k: labels == k for k in order}, progress=progress, cancel=cancel)
        for k in order:
            out[(tracks[k].paste(shape[0])) & (out == 0)] = k
        return out
    for done, k in enumerate(ids[np.argsort(-areas, kind="stable")]):
        if progress is not None:
            progress(done, len(ids))
        piece = propagate_piece(predictor, volume, z, mask=labels == k, params=params, embed=embed, cancel=cancel,
                                spacing=spacing)
        region = out[piece.where]
        region[piece.mask & (region == 0)] = k
    if progress is not None:
        progress(len(ids), len(ids))
    return out


def _embedder(predictor: Predictor, volume: object, keep: int | None = None) -> Callable[[int], Embedding]:
    """Embed slices on demand, each once; with ``keep``, only the last ``keep`` slices
    asked for are kept (memory tracking reads a slice a few times, then moves on)."""
    cache: OrderedDict[int, Embedding] = OrderedDict()

    def embed(k: int) -> Embedding:
        if k not in cache:
            cache[k] = predictor.embed(np.asarray(volume[k]))
            if keep is not None and len(cache) > keep:
                cache.popitem(last=False)
        cache.move_to_end(k)
        return cache[k]

    return embed


def _stack_shape(volume: object, z: int) -> tuple[int, ...]:
    shape = tuple(getattr(volume, "shape", np.shape(volume)))
    if len(shape) != 3:
        raise ValueError(f"propagation needs a (Z, H, W) stack, got shape {shape}")
    if not 0 <= z < shape[0]:
        raise IndexError(f"slice {z} is outside the stack of {shape[0]} slices")
    return shape


def _points_or_none(points: object) -> np.ndarray | None:
    return None if points is None else np.asarray(points, np.float32).reshape(-1, 2)


def _mask_from_prompts(predictor: Predictor, embedding: Embedding, threshold: float, box: object = None,
                       points: object = None, labels: object = None) -> np.ndarray:
    """The best mask for the prompts, cut at ``threshold`` instead of SAM's 0."""
    single = predictor.box_only or (points is not None and box is not None)
    cand = predictor.predict(embedding, points=points, labels=labels, box=box, multimask=not single)
    logits = torch.as_tensor(cand.logits[cand.best][None, None])
    return (predictor.upscale(logits, embedding)[0] > threshold).cpu().numpy()


__all__ = ["CARRIES", "Piece", "PropagationParams", "propagate", "propagate_labels", "propagate_piece", "score_piece"]
