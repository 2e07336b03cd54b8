"""SAM 2.1 tracking with memory: objects prompted on some planes of a stack are carried
through the others (z or t), forward and backward, each plane's mask conditioned on the
memories of the prompted planes and of the planes just before it.

The bookkeeping follows SAM 2's video predictor, so that results match the reference:
- a prompt on a plane not yet tracked makes it a *prompted* (conditioning) plane; its memory
  is encoded from its binarised mask when propagation starts;
- every other plane attends to all prompted planes' memories and to those of the 6 planes
  before it (in the direction of travel), plus the object pointers of the prompted planes
  and of the 15 planes before it;
- each object is tracked on its own;
- memories are kept in bfloat16.

Memory stays bounded: once a tracked plane is further than :data:`MAX_POINTERS` planes
from both the plane being tracked and every prompted plane, its memory is dropped.
Features come from a callable (the engine's cache or store), one plane at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Cancelled
from ..metrics import iou as mask_iou
from ..model.fast import decoder_autocast, memory_autocast
from ..model.sam2 import MAX_POINTERS, MEMORY_FRAMES, FrameFeatures, HeadOutput, Sam2, fill_small_holes
from ..values import Embedding
from .tracking import Frame, Track, TrackParams

HOLE_AREA = 8  # low-res pixels: background islands this small inside a mask are filled


@dataclass
class PlaneOutput:
    """One object's result on one plane: low-res logits (1, 1, 256, 256), object pointer
    (1, 256), object score (1, 1) (> 0: the object is there), the mask's predicted IoU,
    and the plane's memory (1, 64, 64, 64), bfloat16, once encoded."""

    mask: torch.Tensor
    pointer: torch.Tensor
    object_score: torch.Tensor
    iou: float = 1.0
    memory: torch.Tensor | None = None

    @property
    def present(self) -> bool:
        return bool(self.object_score.item() > 0)


@dataclass
class ObjectTrack:
    """What is known of one object: its prompted planes and tracked planes."""

    prompted: dict[int, PlaneOutput] = field(default_factory=dict)
    tracked: dict[int, PlaneOutput] = field(default_factory=dict)
    pending: dict[int, tuple[bool, PlaneOutput]] = field(default_factory=dict)  # plane -> (prompted?, output)
    direction: dict[int, bool] = field(default_factory=dict)  # plane -> tracked in reverse?


class MemoryTracker:
    """Tracks objects through ``num_planes`` planes with a SAM 2.1 model.

    ``features(i)`` gives plane ``i``'s :class:`~napari_sam.model.sam2.FrameFeatures`.
    Prompts are in model-input pixels (x, y on the 1024 grid). With
    ``corrections_condition`` a prompt on an already tracked plane makes it a prompted
    plane too (what a user correcting a plane expects); without, it is kept as an ordinary
    memory, as SAM 2's video predictor does by default.
    """

    def __init__(self, model: Sam2, features: Callable[[int], FrameFeatures], num_planes: int, *,
                 fill_hole_area: int = HOLE_AREA, corrections_condition: bool = True) -> None:
        if num_planes < 1:
            raise ValueError("need at least one plane to track through")
        self.model = model
        self.features = features
        self.num_planes = num_planes
        self.fill_hole_area = fill_hole_area
        self.corrections_condition = corrections_condition
        self.objects: dict[int, ObjectTrack] = {}
        self._memory_pos: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.model.no_mem_embed.device

    # ------------------------------------------------------------------ prompts

    def prompt(self, plane: int, obj: int, points: np.ndarray | None = None, labels: np.ndarray | None = None,
               box: np.ndarray | None = None) -> torch.Tensor:
        """Prompt object ``obj`` on ``plane`` with clicks ``points`` (N, 2) as (x, y) and
        ``labels`` (N,) 1/0, and/or a ``box`` (x0, y0, x1, y1); replaces its earlier
        prompts there. Returns the plane's low-res logits (1, 1, 256, 256)."""
        self._check_plane(plane)
        xy, lab = [], []
        if box is not None:
            xy.append(torch.as_tensor(np.asarray(box, np.float32).reshape(2, 2)))
            lab.append(torch.tensor([2, 3]))
        if points is not None and len(points):
            pts = torch.as_tensor(np.asarray(points, np.float32).reshape(-1, 2))
            xy.append(pts)
            lab.append(torch.ones(len(pts), dtype=torch.long) if labels is None
                       else torch.as_tensor(np.asarray(labels)).long().reshape(-1))
        if not xy:
            raise ValueError("no prompt given: pass points or a box")
        prompt = (torch.cat(xy)[None].to(self.device), torch.cat(lab)[None].to(self.device))
        track = self.objects.setdefault(obj, ObjectTrack())
        first = plane not in track.direction
        reverse = False if first else track.direction[plane]
        earlier = track.pending.get(plane, (None, None))[1] or track.prompted.get(plane) or track.tracked.get(plane)
        previous = None if earlier is None else earlier.mask.clamp(-32.0, 32.0)
        with torch.inference_mode():
            out, _ = self._step(track, plane, first, prompt, previous, reverse, encode_memory=False)
        track.pending[plane] = (first or self.corrections_condition, out)
        return out.mask

    def prompt_mask(self, plane: int, obj: int, mask: np.ndarray) -> torch.Tensor:
        """Give object ``obj``'s mask on ``plane`` (a (H, W) bool array at any size: it is
        resized to the model's input) as that plane's answer. Returns the plane's low-res
        logits (1, 1, 256, 256)."""
        self._check_plane(plane)
        m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None].to(self.device)
        size = (self.model.img_size,) * 2
        if tuple(m.shape[-2:]) != size:
            m = (F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=True) >= 0.5).float()
        track = self.objects.setdefault(obj, ObjectTrack())
        first = plane not in track.direction
        with torch.inference_mode():
            features, high_res = self._frame(plane)
            with decoder_autocast(self.model):
                head = _float(self.model.mask_as_output(features, high_res, m))
        out = PlaneOutput(fill_small_holes(head.best, self.fill_hole_area), head.pointer, head.object_score)
        track.pending[plane] = (first or self.corrections_condition, out)
        return out.mask

    # ------------------------------------------------------------------ propagation

    def propagate(self, start: int | None = None, reverse: bool = False, max_planes: int | None = None,
                  objects: Collection[int] | None = None) -> Iterator[tuple[int, dict[int, PlaneOutput]]]:
        """Track every object from ``start`` (default: the first prompted plane) towards
        the end of the stack, or towards plane 0 with ``reverse``. Yields (plane, {object:
        its :class:`PlaneOutput`}), the prompted planes included. ``objects`` limits the
        objects tracked; it is read at every plane, so a caller may drop the ones it stops."""
        with torch.inference_mode():
            self._settle_prompts()
        if not self.objects:
            raise ValueError("no object has been prompted yet")
        if start is None:
            start = min(p for t in self.objects.values() for p in t.prompted)
        self._check_plane(start)
        span = self.num_planes if max_planes is None else max_planes
        if reverse:
            order = range(start, max(start - span, 0) - 1, -1) if start > 0 else range(0)
        else:
            order = range(start, min(start + span, self.num_planes - 1) + 1)
        for plane in order:
            masks = {}
            with torch.inference_mode():
                for obj, track in self.objects.items():
                    if objects is not None and obj not in objects:
                        continue
                    if plane in track.prompted:
                        out = track.prompted[plane]
                    else:
                        out, _ = self._step(track, plane, False, None, None, reverse, encode_memory=True)
                        track.tracked[plane] = out
                    track.direction[plane] = reverse
                    masks[obj] = out
                    self._forget(track, plane)
            yield plane, masks

    # ------------------------------------------------------------------ one step

    def _step(self, track: ObjectTrack, plane: int, first: bool, prompt: tuple[torch.Tensor, torch.Tensor] | None,
              mask_input: torch.Tensor | None, reverse: bool, encode_memory: bool) -> tuple[PlaneOutput, torch.Tensor]:
        model = self.model
        features, high_res = self._frame(plane)
        n_points = 0 if prompt is None else prompt[1].shape[1]
        multimask = n_points <= 1  # one click (or none, when tracking) is ambiguous
        with memory_autocast(model):  # bf16 matrix products on the fast path
            if first:
                embedding = model.without_memory(features)
            else:
                memory, memory_pos, n_ptr = self._memory(track, plane, reverse)
                embedding = model.with_memory(features, memory, memory_pos, n_ptr).float()
            head = _float(model.heads(embedding, high_res, points=prompt, mask_input=mask_input, multimask=multimask))
        full = F.interpolate(head.best, size=(model.img_size, model.img_size), mode="bilinear", align_corners=False)
        rows = torch.arange(head.iou.shape[0])
        iou = float(head.iou[rows, head.iou.argmax(1)].item()) if multimask else float(head.iou[0, 0].item())
        out = PlaneOutput(fill_small_holes(head.best, self.fill_hole_area), head.pointer, head.object_score, iou)
        if encode_memory:
            out.memory = self._encode(features, full, head.object_score, binarize=prompt is not None)
        return out, full

    def _frame(self, plane: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Plane ``plane``'s features and high-resolution maps, float32 on the model's device."""
        frame = self.features(plane)
        return (frame.features.to(self.device, torch.float32),
                tuple(h.to(self.device, torch.float32) for h in frame.high_res))

    def _encode(self, features: torch.Tensor, mask_logits: torch.Tensor, object_score: torch.Tensor,
                binarize: bool) -> torch.Tensor:
        with memory_autocast(self.model):
            memory, pos = self.model.encode_memory(features, mask_logits, object_score, binarize)
        if self._memory_pos is None:
            self._memory_pos = pos[:1].float().clone()
        return memory.to(torch.bfloat16)

    def _settle_prompts(self) -> None:
        """Encode the memories of newly prompted planes and file them (before tracking)."""
        for track in self.objects.values():
            for plane, (as_prompted, out) in sorted(track.pending.items(), key=lambda kv: kv[1][0]):
                if out.memory is None:
                    features = self._frame(plane)[0]
                    full = F.interpolate(out.mask, size=(self.model.img_size,) * 2, mode="bilinear",
                                         align_corners=False)
                    out.memory = self._encode(features, full, out.object_score, binarize=True)
                (track.prompted if as_prompted else track.tracked)[plane] = out
            track.pending.clear()
            for plane in track.prompted:
                track.tracked.pop(plane, None)

    def _memory(self, track: ObjectTrack, plane: int, reverse: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The memory tokens for tracking ``track`` on ``plane``."""
        if not track.prompted:
            raise ValueError("this object has no prompted plane to track from")
        step = 1 if reverse else -1  # towards the planes already seen
        pos = self._memory_pos
        memories = [(0, out.memory, pos) for out in track.prompted.values()]
        for back in range(MEMORY_FRAMES - 1, 0, -1):  # oldest first, as slots 6 .. 1
            out = track.tracked.get(plane + step * back)
            if out is not None and out.memory is not None:
                memories.append((back, out.memory, pos))
        n_pointers = min(self.num_planes, MAX_POINTERS)
        sign = -1 if reverse else 1
        pointers = [((plane - p) * sign, out.pointer) for p, out in track.prompted.items()
                    if (p >= plane if reverse else p <= plane)]
        for back in range(1, n_pointers):
            p = plane + step * back
            if p < 0 or p >= self.num_planes:
                break
            out = track.tracked.get(p)
            if out is not None:
                pointers.append((back, out.pointer))
        return self.model.memory_tokens(memories, pointers, n_pointers - 1)

    def _forget(self, track: ObjectTrack, plane: int) -> None:
        """Drop tracked planes that no later step can attend to (bounded memory)."""
        keep = [plane, *track.prompted]
        for p in [p for p in track.tracked if min(abs(p - k) for k in keep) >= MAX_POINTERS]:
            del track.tracked[p]

    def _check_plane(self, plane: int) -> None:
        if not 0 <= plane < self.num_planes:
            raise ValueError(f"plane {plane} is outside the stack of {self.num_planes} planes")


Prompt = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]  # points (row, col), labels, box


def track_objects(model: Sam2, embed: Callable[[int], Embedding], n: int, z: int,
                  starts: Mapping[int, np.ndarray | Prompt], corrections: Mapping[int, np.ndarray | Prompt] | None = None,
                  *, fill_hole_area: int = HOLE_AREA, progress: Callable[[int, int], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> dict[int, Track]:
    """Carry each object of ``starts`` through the ``n`` planes of a stack with SAM 2.1's
    memory, forward and then backward from plane ``z``.

    ``starts``: object id -> its (H, W) bool mask on plane ``z``, or its prompts there as
    (points (N, 2) as (row, col), labels, box as (r0, c0, r1, c1)), in plane pixels.
    ``corrections``: plane -> a mask or prompts the user gave on another plane, for the
    first object. ``embed(k)`` gives plane ``k``'s embedding (the engine's cache or store,
    so nothing is encoded twice). An object ends where the model's object score says it is
    gone. Returns id -> its :class:`~napari_sam.segmentation.tracking.Track`.
    """
    if not starts:
        return {}
    shape = tuple(embed(z).original_size)
    to_model = np.array([model.img_size / shape[1], model.img_size / shape[0]], dtype=np.float32)  # x, y

    def features(k: int) -> FrameFeatures:
        e = embed(k)
        if e.high_res is None:
            raise ValueError("memory tracking needs SAM 2 embeddings (with high-resolution maps)")
        return FrameFeatures(e.features, e.high_res)

    tracker = MemoryTracker(model, features, n, fill_hole_area=fill_hole_area)

    def give(plane: int, obj: int, what: np.ndarray | Prompt) -> None:
        if isinstance(what, np.ndarray):
            if what.shape != shape:
                raise ValueError(f"a mask of shape {what.shape} does not fit planes of shape {shape}")
            tracker.prompt_mask(plane, obj, what)
            return
        points, labels, box = what
        xy = None if points is None or not len(points) else np.asarray(points, np.float32)[:, ::-1] * to_model
        xyxy = None if box is None else np.asarray(box, np.float32)[[1, 0, 3, 2]] * np.tile(to_model, 2)
        tracker.prompt(plane, obj, xy, labels, xyxy)

    for obj, start in starts.items():
        give(z, obj, start)
    first = next(iter(starts))
    for k, fix in (corrections or {}).items():
        give(k, first, fix)

    tracks = {obj: Track(shape) for obj in starts}
    params = TrackParams()
    done, total = 0, max(n - 1, 1)
    for step, reverse in ((1, False), (-1, True)):
        active = set(starts)
        previous: dict[int, np.ndarray] = {}
        for plane, outs in tracker.propagate(start=z, reverse=reverse, objects=active):
            if cancel is not None and cancel():
                raise Cancelled("tracking cancelled")
            for obj, out in outs.items():
                mask = _plane_mask(out.mask, shape)
                if not out.present or not mask.any():
                    active.discard(obj)
                    tracks[obj].stopped[step] = f"the model sees no object on plane {plane}"
                    continue
                before = previous.get(obj, mask)
                overlap = mask_iou(mask, before)
                ratio = mask.sum() / max(1, before.sum())
                unsure = plane != z and params.unsure(out.iou, overlap, 1.0, ratio)
                tracks[obj].frames[plane] = Frame.of(plane, mask, out.iou, overlap, 1.0, (0.0, 0.0), unsure)
                previous[obj] = mask
            if plane != z:
                done += 1
                if progress is not None:
                    progress(min(done, total), total)
            if not active:
                break
        for obj in active:
            tracks[obj].stopped.setdefault(step, "end of the stack")
    if progress is not None:
        progress(total, total)
    return tracks


def _float(head: HeadOutput) -> HeadOutput:
    """The decoder's answer in float32 (autocast leaves some of it in bfloat16)."""
    return HeadOutput(*(t.float() for t in (head.masks, head.iou, head.best, head.pointer, head.object_score)))


def _plane_mask(logits: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Low-res logits (1, 1, 256, 256) of a stretched plane -> its (H, W) bool mask."""
    full = F.interpolate(logits.float(), size=shape, mode="bilinear", align_corners=False)
    return (full[0, 0] > 0).cpu().numpy()


__all__ = ["MemoryTracker", "PlaneOutput", "track_objects"]
