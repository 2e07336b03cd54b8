"""Segment everything in a 2D plane and return an instance label image.

Two ways to propose objects, then one way to choose among them:

- ``boxes`` (for box-trained models such as LiteMedSAM, and the default for them):
  box proposals from a classical blob detector and a distance-transform watershed;
  each box is decoded in the prompt service's zoomed window for it, so that small
  objects fill the model's input. The chosen objects are then refined once, each with a
  box around its own mask (:func:`~napari_sam.segmentation.refine_labels.refine_labels`),
  from the same cached windows.
- ``grid`` (SAM's own method, for point-capable models): a regular grid of point
  prompts, three candidates each, optionally repeated on overlapping crops.

Proposals keep their low-res logits, so :func:`select` (score, stability, NMS, area)
can be re-tuned cheaply without touching the encoder again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Hashable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy import ndimage as ndi

from ..errors import Cancelled
from .auto_params import AutoParams
from ..imaging import as_plane, to_intensity
from ..masks import bbox, stability_scores
from ..prompting.noise import denoise
from ..prompting.object_size import objects_are_bright
from ..prompting.service import LOOSE_BOX_THRESHOLD, Cache, PromptService, plane_digest, prompt_extent
from ..prompting.windows import Window
from ..predictor import Predictor
from ..values import Embedding
from .proposals import box_proposals
from .refine_labels import refine_labels

ProgressCallback = Callable[[int, int], None]


@dataclass
class Tile:
    """A square crop of the plane that was embedded on its own."""

    origin: tuple[int, int]
    embedding: Embedding

    @property
    def shape(self) -> tuple[int, int]:
        return self.embedding.original_size


@dataclass
class Proposals:
    """Candidate objects of one plane with everything :func:`select` needs."""

    shape: tuple[int, int]
    tiles: list[Tile]
    tile_index: np.ndarray  # (N,) which tile each candidate was decoded on
    logits: torch.Tensor  # (N, 256, 256) float16 low-res logits in that tile's model frame
    scores: np.ndarray  # (N,) predicted IoU
    method: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)


def segment_everything(
    predictor: Predictor,
    image: object,
    params: AutoParams = AutoParams(),
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    *,
    cache: Cache | None = None,
    signature: Hashable | None = None,
) -> np.ndarray:
    """Instance labels (H, W) int32 of everything found in one 2D plane, numbered in
    raster order.

    ``progress`` gets (steps done, steps in all): one step per embedded window, and a last
    one for choosing and refining the objects. The box method's windows go into ``cache``
    under ``signature`` (the plane's identity; default a hash of its bytes), the prompt
    service's keys: prompts on the plane afterwards need no encoder call.
    """
    plane = as_plane(image)
    if signature is None and params.resolve(predictor).method == "boxes":
        signature = plane_digest(plane)  # the windows' cache key; the grid method has none

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total + 1)

    proposals = run_with_progress(propose_steps(predictor, plane, params, cancel, cache=cache, signature=signature),
                                  report)
    labels = select(proposals, predictor, params)
    if proposals.method == "boxes" and params.refine:
        labels = refine_labels(predictor, plane, labels, cache=cache, signature=signature, cancel=cancel).labels
        labels = raster_numbered(labels)  # an object under surer neighbours may have gone
    if progress is not None:
        progress(len(proposals.tiles) + 1, len(proposals.tiles) + 1)
    return labels


def run_with_progress(steps: Generator[tuple[int, int], None, Proposals],
                      progress: ProgressCallback | None) -> Proposals:
    """Drive a step generator to its end, reporting each (done, total) to ``progress``."""
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)


def propose_steps(
    predictor: Predictor, image: object, params: AutoParams = AutoParams(),
    cancel: Callable[[], bool] | None = None, *, cache: Cache | None = None,
    signature: Hashable | None = None,
) -> Generator[tuple[int, int], None, Proposals]:
    """Compute proposals tile by tile, yielding (tiles done, tiles total). The box method's
    tiles are the prompt service's windows, kept in ``cache`` under ``signature`` (see
    :func:`segment_everything`)."""
    plane = as_plane(image)
    params = params.resolve(predictor).sized_for(plane)
    # One 8-bit intensity image for the whole plane: crops keep the plane's contrast.
    rgb8 = np.rint(to_intensity(plane, predictor.percentiles)).astype(np.uint8)
    if params.method == "boxes":
        service = predictor.prompts(cache)
        work = _box_work(service, plane, rgb8, params, plane_digest(plane) if signature is None else signature)
    else:
        work = _grid_work(predictor, rgb8, params)
    tiles: list[Tile] = []
    parts: list[tuple[torch.Tensor, np.ndarray]] = []
    for i, (origin, size, prompts) in enumerate(work.jobs):
        if cancel is not None and cancel():
            raise Cancelled("automatic segmentation was cancelled")
        tile = Tile(origin, work.embed(origin, size))
        logits, scores = work.decode(predictor, tile, prompts)
        # Keep what could pass any reasonable threshold; memory stays bounded.
        keep = scores >= min(params.pred_iou_thresh, 0.5)  # type: ignore[type-var]
        parts.append((logits[keep].half().cpu(), np.column_stack([np.full(keep.sum(), len(tiles)), scores[keep]])))
        tile.embedding = replace(tile.embedding, features=tile.embedding.features[:, :0])  # geometry only
        tiles.append(tile)
        yield i + 1, len(work.jobs)
    logits = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, 256, 256, dtype=torch.float16)
    table = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 2))
    return Proposals(plane.shape[:2], tiles, table[:, 0].astype(int), logits, table[:, 1], params.method, work.meta)


def segment_planes_steps(
    predictor: Predictor, volume: object, params: AutoParams = AutoParams(),
    cancel: Callable[[], bool] | None = None, min_link_iou: float = 0.25,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Segment each plane of a (Z, H, W) volume on its own, yielding (planes done, total),
    then link the per-plane objects into 3D objects by overlap; returns (Z, H, W) int32
    labels. For objects that are large in every plane; small blob-like ones (nuclei) are
    found better by :func:`napari_sam.segmentation.automatic_volume.segment_volume`."""
    vol = np.asarray(volume) if not hasattr(volume, "shape") else volume
    if len(vol.shape) != 3:
        raise ValueError(f"expected a (Z, H, W) volume, got shape {tuple(vol.shape)}")
    planes = []
    for z in range(vol.shape[0]):
        proposals = yield from _silent(propose_steps(predictor, np.asarray(vol[z]), params, cancel))
        planes.append(select(proposals, predictor, params))
        yield z + 1, vol.shape[0]
    return link_slices(np.stack(planes), min_link_iou)


def _silent(steps: Generator[tuple[int, int], None, Proposals]) -> Generator[tuple[int, int], None, Proposals]:
    """Run a step generator without passing its inner progress on."""
    return run_with_progress(steps, None)
    yield  # pragma: no cover - makes this a generator


def link_slices(labels: np.ndarray, min_iou: float = 0.25) -> np.ndarray:
    """Join 2D objects of consecutive planes that overlap with IoU >= min_iou (one to one,
    best pairs first) into 3D objects, numbered 1..N."""
    z_count = labels.shape[0]
    offsets = np.concatenate([[0], np.cumsum([labels[z].max() for z in range(z_count)])])
    parent = np.arange(offsets[-1] + 1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for z in range(z_count - 1):
        a, b = labels[z], labels[z + 1]
        for i, j in _matches(a, b, min_iou):
            parent[find(offsets[z + 1] + j)] = find(offsets[z] + i)
    roots = np.array([find(i) for i in range(len(parent))])
    present = np.concatenate([offsets[z] + np.unique(labels[z][labels[z] > 0]) for z in range(z_count)])
    # Number the 3D objects 1..N in order of first appearance.
    _, first = np.unique(roots[present], return_index=True)
    lookup = np.zeros(len(parent), np.int32)
    for new_id, root in enumerate(roots[present][np.sort(first)], start=1):
        lookup[roots == root] = new_id
    out = np.zeros_like(labels, dtype=np.int32)
    for z in range(z_count):
        fg = labels[z] > 0
        out[z][fg] = lookup[offsets[z] + labels[z][fg]]
    return out


def _matches(a: np.ndarray, b: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one pairs (label in a, label in b) with IoU >= min_iou, best first."""
    both = (a > 0) & (b > 0)
    if not both.any():
        return []
    pairs, inter = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    area_a = np.bincount(a.ravel())
    area_b = np.bincount(b.ravel())
    ious = inter / (area_a[pairs[0]] + area_b[pairs[1]] - inter)
    used_a, used_b, out = set(), set(), []
    for k in np.argsort(-ious):
        i, j = int(pairs[0, k]), int(pairs[1, k])
        if ious[k] < min_iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((i, j))
    return out


# --------------------------------------------------------------------------- box method


@dataclass
class _Work:
    jobs: list[tuple[tuple[int, int], tuple[int, int], np.ndarray]]  # (origin, size, prompts) per tile
    embed: Callable[[tuple[int, int], tuple[int, int]], Embedding]  # (origin, size) -> the tile's embedding
    decode: Callable[[Predictor, Tile, np.ndarray], tuple[torch.Tensor, np.ndarray]]
    meta: dict


def _box_work(service: PromptService, plane: np.ndarray, rgb8: np.ndarray, params: AutoParams,
              signature: Hashable) -> _Work:
    shape = plane.shape[:2]
    limits = service.plane_limits(plane, signature)
    noise = service.plane_noise(plane, signature)
    if noise is not None:  # photon-limited: the detectors see what the model sees
        rgb8 = np.rint(to_intensity(denoise(plane, noise), limits=limits)).astype(np.uint8)
    gray = rgb8.mean(axis=-1) / 255.0
    if not objects_are_bright(gray):
        gray = 1.0 - gray  # the detectors look for bright blobs: dark nuclei, stains
    objects = service.plane_diameter(plane, signature)
    boxes, diameter, seeds = box_proposals(gray, params.min_diameter, params.max_diameter, objects)
    # Each box is decoded in the window the prompt service answers it in: a user's box
    # there, or the refinement below, costs no encoder call.
    groups: dict[Window, list[np.ndarray]] = {}
    for box in boxes:
        groups.setdefault(service.prompt_window(prompt_extent(None, box), shape, objects), []).append(box)
    # Last rows first: the refinement goes through the objects from the top, and finds the
    # windows embedded last still cached when a large plane's windows overflow the cache.
    order = sorted(groups, key=lambda win: (win.r0, win.c0), reverse=True)
    jobs = [((win.r0, win.c0), win.shape, np.stack(groups[win])) for win in order]
    predictor = service.predictor
    multimask = not predictor.box_only  # box-trained models answer best with their single mask

    def embed(origin: tuple[int, int], size: tuple[int, int]) -> Embedding:
        return service.window_embedding(plane, Window(*origin, origin[0] + size[0], origin[1] + size[1]),
                                        signature, limits)

    def decode(pred: Predictor, tile: Tile, plane_boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        local = np.stack([service.window_box(b, tile.embedding, tile.origin) for b in plane_boxes])
        return decode_boxes(pred, tile.embedding, local, multimask)

    return _Work(jobs, embed, decode, {"boxes": boxes, "diameter": diameter, "seeds": seeds})


def decode_boxes(predictor: Predictor, embedding: Embedding, boxes: np.ndarray, multimask: bool,
                 batch: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """Decode many boxes against one embedding; keep each box's best candidate."""
    out_logits, out_scores = [], []
    for chunk in _chunks(boxes, batch):
        logits, scores = predictor.decode_batch(embedding, boxes=chunk, multimask=multimask)
        best = scores.argmax(1)
        idx = torch.arange(len(chunk))
        out_logits.append(logits[idx, best])
        out_scores.append(scores[idx, best].cpu().numpy())
    if not out_logits:
        return torch.zeros(0, 256, 256), np.zeros(0)
    return torch.cat(out_logits), np.concatenate(out_scores)


def _chunks(a: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for i in range(0, len(a), n):
        yield a[i : i + n]


# --------------------------------------------------------------------------- grid method


def point_grid(n: int) -> np.ndarray:
    """(n*n, 2) points in [0, 1]: the centres of an n x n grid, as (row, col)."""
    centres = (np.arange(n) + 0.5) / n
    rr, cc = np.meshgrid(centres, centres, indexing="ij")
    return np.column_stack([rr.ravel(), cc.ravel()])


def crop_boxes(shape: tuple[int, int], n_layers: int, overlap_ratio: float) -> list[tuple[int, int, int, int, int]]:
    """(row0, col0, height, width, layer) of the whole plane and of each crop layer's crops.

    Layer k cuts the plane into 2^k x 2^k crops; neighbours share ``overlap_ratio`` of
    the short side at layer 1, halving with each layer (the reference's crop layout).
    """
    h, w = shape
    crops = [(0, 0, h, w, 0)]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap_h = overlap_w = int(overlap_ratio * min(h, w) * 2 / n)
        ch = int(math.ceil((overlap_h * (n - 1) + h) / n))
        cw = int(math.ceil((overlap_w * (n - 1) + w) / n))
        for i in range(n):
            for j in range(n):
                r0, c0 = (ch - overlap_h) * i, (cw - overlap_w) * j
                crops.append((r0, c0, min(ch, h - r0), min(cw, w - c0), layer))
    return crops


def _grid_work(predictor: Predictor, rgb8: np.ndarray, params: AutoParams) -> _Work:
    jobs = []
    for r0, c0, ch, cw, layer in crop_boxes(rgb8.shape[:2], params.crop_n_layers, params.crop_overlap_ratio):
        n = max(params.points_per_side // (2**layer), 1)
        pts = point_grid(n) * np.array([ch, cw]) - 0.5
        jobs.append(((r0, c0), (ch, cw), pts.astype(np.float32)))

    def embed(origin: tuple[int, int], size: tuple[int, int]) -> Embedding:
        return predictor.embed(rgb8[origin[0]:origin[0] + size[0], origin[1]:origin[1] + size[1]])

    def decode(pred: Predictor, tile: Tile, pts: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        logits_all, scores_all = [], []
        for chunk in _chunks(pts, params.points_per_batch):
            logits, scores = pred.decode_batch(tile.embedding, points=chunk[:, None, :], multimask=True)
            logits_all.append(logits.flatten(0, 1))
            scores_all.append(scores.flatten().cpu().numpy())
        return torch.cat(logits_all), np.concatenate(scores_all)

    return _Work(jobs, embed, decode, {})


# --------------------------------------------------------------------------- selection

# A mask holding several object seeds (touching objects taken as one) ranks this much
# lower per extra seed, so that masks of the single objects, where proposed, come first.
# mSA of segment_everything on the bundled nuclei and their variants (native, 2x, RGB,
# inverted), with the seeded boxes: at 0 0.534, 0.527, 0.428, 0.497; at 0.1 0.564, 0.540,
# 0.484, 0.513; at 0.2 0.528, -, 0.473, 0.505. Low photon counts lose 0.008 at 0.1.
SEED_PENALTY = 0.1


def select(proposals: Proposals, predictor: Predictor, params: AutoParams = AutoParams()) -> np.ndarray:
    """Filter, de-duplicate and paint proposals into an int32 label image, numbered in
    raster order (cheap to rerun)."""
    h, w = proposals.shape
    labels = np.zeros((h, w), dtype=np.int32)
    if not len(proposals):
        return labels
    params = replace(params, method=proposals.method or params.method).resolve(predictor)
    # Detector boxes are loose: their masks take the service's loose-box cut (SAM's 0 for points).
    cut = LOOSE_BOX_THRESHOLD if proposals.method == "boxes" else 0.0
    logits = proposals.logits.float() - cut
    stability = stability_scores(logits, params.stability_score_offset)
    ok = (proposals.scores >= params.pred_iou_thresh) & (stability >= params.stability_score_thresh)
    seeds = np.zeros((h, w), dtype=bool)
    found = proposals.meta.get("seeds")
    if found is not None and len(found):
        seeds[tuple(np.asarray(found).T)] = True

    candidates = []
    max_area = params.max_area_fraction * h * w
    for i in np.flatnonzero(ok):
        tile = proposals.tiles[proposals.tile_index[i]]
        local = predictor.upscale(logits[i][None, None], tile.embedding)[0] > 0
        mask, bbox = _place(local.cpu().numpy(), tile.origin)
        area = int(mask.sum())
        if area < params.min_area or area > max_area:
            continue
        rank = float(proposals.scores[i] + stability[i]) - SEED_PENALTY * max(_seeds_inside(seeds, mask, bbox) - 1, 0)
        candidates.append((rank, mask, bbox))
    candidates.sort(key=lambda c: -c[0])  # stable: ties keep the proposals' order

    kept_masks: list[tuple[np.ndarray, tuple[int, int, int, int]]] = []
    for _, mask, bbox in candidates:
        if any(_mask_iou(mask, bbox, m, b) > params.nms_thresh for m, b in kept_masks):
            continue
        kept_masks.append((mask, bbox))
    next_id = 1
    for mask, (r0, c0, r1, c1) in kept_masks:
        view = labels[r0:r1, c0:c1]
        free = mask & (view == 0)
        # A proposal mostly covered by better ones is a duplicate or a fragment.
        if free.sum() < 0.5 * mask.sum() or free.sum() < params.min_area:
            continue
        view[free] = next_id
        next_id += 1
    return raster_numbered(labels)


def _seeds_inside(seeds: np.ndarray, mask: np.ndarray, bbox: tuple[int, int, int, int]) -> int:
    """How many object seeds lie inside ``mask`` (at ``bbox``), 2 px clear of its edge."""
    r0, c0, r1, c1 = bbox
    inside = seeds[r0:r1, c0:c1]
    if not inside.any():
        return 0
    return int(inside[ndi.binary_erosion(mask, iterations=2)].sum())


def raster_numbered(labels: np.ndarray) -> np.ndarray:
    """``labels`` renumbered 1..N in the raster order of each object's first pixel."""
    ids, first = np.unique(labels, return_index=True)
    lookup = np.zeros(int(ids.max()) + 1 if len(ids) else 1, dtype=labels.dtype)
    objects = ids != 0
    lookup[ids[objects][np.argsort(first[objects], kind="stable")]] = np.arange(1, objects.sum() + 1)
    return lookup[labels]


def _place(local: np.ndarray, origin: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Crop a tile-frame mask to its bounding box, returning it with the box in plane pixels."""
    found = bbox(local)
    if found is None:
        return np.zeros((0, 0), bool), (origin[0], origin[1], origin[0], origin[1])
    r0, c0, r1, c1 = found[0], found[1], found[2] + 1, found[3] + 1
    box = (origin[0] + r0, origin[1] + c0, origin[0] + r1, origin[1] + c1)
    return local[r0:r1, c0:c1], box


def _mask_iou(a: np.ndarray, ba: tuple, b: np.ndarray, bb: tuple) -> float:
    r0, c0 = max(ba[0], bb[0]), max(ba[1], bb[1])
    r1, c1 = min(ba[2], bb[2]), min(ba[3], bb[3])
    if r1 <= r0 or c1 <= c0:
        return 0.0
    sa = a[r0 - ba[0] : r1 - ba[0], c0 - ba[1] : c1 - ba[1]]
    sb = b[r0 - bb[0] : r1 - bb[0], c0 - bb[1] : c1 - bb[1]]
    inter = np.logical_and(sa, sb).sum()
    return float(inter / (a.sum() + b.sum() - inter))


__all__ = [
    "AutoParams", "Proposals", "link_slices", "propose_steps", "raster_numbered", "segment_everything",
    "segment_planes_steps", "select",
]
