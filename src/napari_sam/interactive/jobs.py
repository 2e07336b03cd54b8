"""The widget's long computations as background-job functions ``fn(progress, cancel)``:
carrying a candidate through the stack, segmenting everything on a plane or a stack, and
refining the objects of a labels plane.
They raise :class:`~napari_sam.errors.Cancelled` when ``cancel()`` turns true."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..segmentation.automatic import AutoParams, segment_everything
from ..segmentation.automatic_volume import segment_volume
from ..embeddings.engine import Engine, Index
from ..segmentation.memory_propagation import track_objects
from ..segmentation.propagation import propagate_piece, score_piece
from ..segmentation.refine_labels import RefinedLabels, refine_labels
from ..segmentation.tracking import Track, track
from ..values import Candidates
from .planes import PlaneView
from .prompts import PlanePrompts
from .stack import PlaneStack


# The ways of following an object that the widget offers: SAM 2's memory, and for SAM 1
# models propagation.CARRIES less "model" (SAM alone on every slice, with no carry to
# keep it on the object).
JOB_CARRIES = ("memory", "motion", "intensity")


def propagation_job(engine: Engine, stack: PlaneStack, z: int, mask: np.ndarray,
                    fixes: dict[int, PlanePrompts] | None = None,
                    carry: str = "intensity", spacing: tuple[float, float, float] | None = None,
                    ) -> Callable[..., Track]:
    """The work of carrying ``mask`` (plane pixels on slice ``z``) through ``stack``, as a
    :class:`~napari_sam._qt.workers.BackgroundJob` function returning a :class:`~napari_sam.segmentation.tracking.Track`
    (masks with a confidence per slice). ``fixes`` are the prompts the user drew on other
    slices: their best masks are taken as given there.

    ``carry``: ``"memory"`` (SAM 2.1 models only) carries the object with the model's
    memory of the slices already segmented; ``"motion"`` follows the object by its motion, each frame answered by SAM
    at zoom from the engine's tiles (time series); ``"intensity"`` carries the mask by the
    object's brightness and ends it by its profile (z stacks of fluorescent nuclei).
    ``spacing``: the voxel size along (stack, rows, cols), the layer's scale; a volume
    propagated along a fine axis from planes that hold a coarse one is followed along the
    coarse axis (:mod:`napari_sam.segmentation.crossing`).
    """
    if carry not in JOB_CARRIES:
        raise ValueError(f"carry must be one of {JOB_CARRIES}, got {carry!r}")
    if carry == "memory":
        return _memory_job(engine, stack, z, {1: mask}, fixes, single=True)

    frames = _EngineFrames(engine, stack)

    def run(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> Track:
        corrections = {k: _best_mask(engine, stack, k, p) for k, p in (fixes or {}).items()}
        if carry == "motion":
            return track(frames, z, mask, corrections=corrections,
                         use_points=not engine.predictor.box_only, progress=progress, cancel=cancel)
        piece = propagate_piece(engine.predictor, stack, z, mask=mask, corrections=corrections, progress=progress,
                                cancel=cancel, embed=lambda k: engine.embedding(stack.source, stack.at(k)),
                                spacing=spacing)
        return score_piece(frames.read, len(frames), z, piece, stack.shape[1:])

    return run


def propagate_all_job(engine: Engine, stack: PlaneStack, z: int, plane_labels: np.ndarray,
                      carry: str = "intensity", spacing: tuple[float, float, float] | None = None,
                      ) -> Callable[..., dict[int, Track]]:
    """The work of carrying every object of ``plane_labels`` (slice ``z``) through
    ``stack``: a :class:`~napari_sam._qt.workers.BackgroundJob` function returning object id -> its
    :class:`~napari_sam.segmentation.tracking.Track` (each frame a crop: memory follows the objects)."""
    ids = [int(k) for k in np.unique(plane_labels) if k > 0]
    if carry == "memory":  # all objects in one pass: each plane's features are read once
        return _memory_job(engine, stack, z, {k: plane_labels == k for k in ids}, None, single=False)

    def run(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> dict[int, Track]:
        out = {}
        for done, k in enumerate(ids):
            progress(done, len(ids))
            one = propagation_job(engine, stack, z, plane_labels == k, None, carry, spacing)
            out[k] = one(lambda *_: None, cancel)
        progress(len(ids), len(ids))
        return out

    return run


def _memory_job(engine: Engine, stack: PlaneStack, z: int, masks: dict[int, np.ndarray],
                fixes: dict[int, PlanePrompts] | None, single: bool) -> Callable[..., Any]:
    """SAM 2.1's memory tracking of ``masks`` through ``stack``, embeddings from the engine."""
    predictor = engine.predictor
    if not getattr(predictor, "is_sam2", False):
        raise ValueError(f"following by memory needs a SAM 2.1 model; {predictor.model_name} has none")
    corrections = {k: (p.points if len(p.points) else None, p.labels if len(p.points) else None, p.box)
                   for k, p in (fixes or {}).items()}

    def run(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> Any:
        tracks = track_objects(predictor.model, lambda k: engine.embedding(stack.source, stack.at(k)),
                               stack.shape[0], z, masks, corrections, progress=progress, cancel=cancel)
        return tracks[1] if single else tracks

    return run


def label_planes(tracks: dict[int, Track]) -> Iterator[tuple[int, np.ndarray]]:
    """(slice, (H, W) labels) for every slice the tracks reach, one plane at a time; where
    objects claim the same pixel the one listed first keeps it."""
    spans = [t.span for t in tracks.values() if t.frames]
    if not spans:
        return
    shape = next(iter(tracks.values())).plane_shape
    for k in range(min(s[0] for s in spans), max(s[1] for s in spans) + 1):
        plane = np.zeros(shape, dtype=np.uint32)
        for obj, t in tracks.items():
            if k in t.frames:
                plane[t.mask(k) & (plane == 0)] = obj
        yield k, plane


class _EngineFrames:
    """The planes of a stack as tracking's frames, prompts answered by the engine at zoom
    (from the tiles the widget has embedded, and into its cache)."""

    def __init__(self, engine: Engine, stack: PlaneStack) -> None:
        self.engine, self.stack = engine, stack

    def __len__(self) -> int:
        return self.stack.shape[0]

    def read(self, k: int) -> np.ndarray:
        return self.engine.read_plane(self.stack.source, self.stack.at(k))

    def segment(self, k: int, box: np.ndarray, points: np.ndarray | None) -> Candidates:
        labels = None if points is None else np.ones(len(points), dtype=np.int32)
        return self.engine.segment(self.stack.source, self.stack.at(k), points, labels, box)


def _best_mask(engine: Engine, stack: PlaneStack, k: int, prompts: PlanePrompts) -> np.ndarray:
    """The mask the widget shows first for ``prompts`` on slice ``k``: the same prompt service."""
    points = prompts.points if len(prompts.points) else None
    cand = engine.segment(stack.source, stack.at(k), points, prompts.labels if points is not None else None,
                          prompts.box)
    return cand.masks[cand.best]


def everything_job(engine: Engine, view: PlaneView, index: Index, whole_stack: bool,
                   params: AutoParams) -> Callable[..., np.ndarray]:
    """A :class:`~napari_sam._qt.workers.BackgroundJob` function returning the plane's (H, W) labels, or
    the (Z, H, W) labels of the stack along the axis next to the plane."""
    predictor = engine.predictor

    def run(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> np.ndarray:
        if whole_stack:
            volume = PlaneStack(view.source, index)[:, :, :]
            return segment_volume(predictor, volume, params, progress, cancel)
        # The plane's windows go into the engine's cache: prompts there afterwards are decoder calls.
        plane = engine.read_plane(view.source, index)
        engine.plane_limits(view.source, index, plane, predictor.prompts(engine.cache))  # the stack's treatment
        return segment_everything(predictor, plane, params, progress, cancel,
                                  cache=engine.cache, signature=engine.key(view.source, index))

    return run


def refine_job(engine: Engine, view: PlaneView, index: Index, plane_labels: np.ndarray
               ) -> Callable[..., RefinedLabels]:
    """A :class:`~napari_sam._qt.workers.BackgroundJob` function re-segmenting each object of
    ``plane_labels`` (plane ``index``) with :func:`~napari_sam.segmentation.refine_labels.refine_labels`,
    its windows shared with the prompts' tiles in the engine's cache."""

    def run(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> RefinedLabels:
        plane = engine.read_plane(view.source, index)
        engine.plane_limits(view.source, index, plane, engine.predictor.prompts(engine.cache))  # the stack's treatment
        return refine_labels(engine.predictor, plane, plane_labels, cache=engine.cache,
                             signature=engine.key(view.source, index), progress=progress, cancel=cancel)

    return run
