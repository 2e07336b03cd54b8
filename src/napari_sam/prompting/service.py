"""The prompt service: the prompts of one plane -> candidate masks, answered at zoom.

A small object in a big plane covers a few model pixels when the whole plane is embedded.
Each prompt is answered from a window around it (see :mod:`.windows`): the smallest grid
window that holds the prompt with some context, so the object fills a good fraction of
the model input and nearby prompts share that window's embedding. The mask is pasted back
at full resolution, so large planes are served the same way, window by window.

This is the one place that holds the mask threshold, the box-only model's three cuts and
the click -> box policy; the widget, :meth:`~napari_sam.Predictor.segment` and the start
slice of propagation all answer prompts through :class:`PromptService`. No napari here.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from ..cache import EmbeddingCache
from ..imaging import as_plane, intensity_limits
from ..masks import edge_map, on_strongest_edges
from .noise import NoiseModel, denoise_sample, denoise_window, fit_noise
from .object_size import estimate_diameter
from ..values import Candidates, Embedding, check_box, check_points
from .windows import Window, level_for_diameter, level_windows, plan_window

if TYPE_CHECKING:
    from ..predictor import Predictor

Key = tuple[Hashable, ...]

# For box-only models the candidates cut the one mask at the threshold and this far above
# and below it: a tighter and a looser outline of the same object. The one on the strongest
# image edges is offered first (see _edge_first).
BOX_ONLY_CUT_STEP = 1.5
# The click -> box policy (click_box.py) is tuned on nuclei of about this diameter.
CLICK_DIAMETER = 24.0
# A click's box reaches at most this many object diameters from the click: a region the
# threshold grew beyond that holds a neighbour too. On 30 nuclei per variant, mean IoU of
# the clicks went from 0.64-0.72 to 0.68-0.77 (0.7 to 1.0 all help; 0.7 helped most).
CLICK_REACH = 0.75
# LiteMedSAM was trained on loose, jittered boxes and draws a tight box's mask too small;
# how loose a user's box is shifts the best cut (a tight box wants -1.5, a 2-3 px margin
# 0). On 30 real nuclei x 6 variants (magnified, low-photon, inverted, RGB) x margins of
# 0-3 px, mean box IoU: 0.808 at 0, 0.814 at -0.5, 0.815 at -1, 0.810 at -1.5; clicks
# 0.767 / 0.775 / 0.779 / 0.775. Adaptive cuts (mask stability, logit gradient, the
# mask's gap to the box) did no better than -1.
BOX_ONLY_THRESHOLD = -1.0
# Boxes known to be loose (automatic detector boxes, boxes grown around given labels) are
# cut at 0: there the tight-box correction above makes masks too large. Automatic boxes on
# the inverted variant: mSA 0.41 at 0, 0.36 at -1. Boxes around 125 nuclei whose labels
# were corrupted by up to 3 px, then grown: mean IoU 0.80 at 0 against 0.79 at -1 (native
# and 2x), though 0.71 against 0.74 at low photon counts.
LOOSE_BOX_THRESHOLD = 0.0


def mask_threshold(box_only: bool) -> float:
    """The logit above which a pixel is in the mask."""
    return BOX_ONLY_THRESHOLD if box_only else 0.0


class Cache(Protocol):
    """What :class:`PromptService` needs from an embedding cache (:class:`~napari_sam.cache.EmbeddingCache` fits)."""

    def get(self, key: Key) -> Embedding | None: ...

    def put(self, key: Key, embedding: Embedding) -> None: ...


@dataclass(frozen=True)
class PromptSettings:
    """How windows are chosen and masks drawn.

    ``tile``: side of the smallest window in plane pixels; None is half the model's input
    side, so that a small object is seen at 2x. ``context``: a window must hold the
    prompt's extent this many times. ``escalate``: for prompts without a box, how many
    times to move up a level when the mask runs into an inner window edge.
    ``mask_threshold``: logit above which a pixel is in the mask; None is
    :func:`mask_threshold` of the model. ``denoise``: show photon-limited planes to the
    model denoised (see :mod:`.noise`).

    Measured with LiteMedSAM on 125 real 5-40 px nuclei with ground-truth boxes (mean IoU):
    2x zoom 0.84 against 0.76-0.80 at 1.5x and 4x and 0.60-0.69 at 1x.
    """

    tile: int | None = None
    context: float = 1.5
    escalate: int = 2
    mask_threshold: float | None = None
    denoise: bool = True


class PromptService:
    """Answers prompts in full-plane coordinates from cached window embeddings.

    Thread-safe: the widget decodes on one worker while another embeds windows.
    ``encoder_calls`` counts the window embeddings computed (cache misses).
    """

    def __init__(self, predictor: Predictor, cache: Cache | None = None,
                 settings: PromptSettings = PromptSettings()) -> None:
        self.predictor = predictor
        self.cache: Cache = cache if cache is not None else EmbeddingCache()
        self.settings = settings
        self._lock = threading.Lock()
        # Per signature: the intensity limits, and the noise model of a plane that is shown
        # to the model denoised (else None). Measured together, so a known key is whole.
        self._limits: OrderedDict[Hashable, tuple[tuple[float, float], NoiseModel | None]] = OrderedDict()
        self._diameters: OrderedDict[Hashable, float] = OrderedDict()
        self.encoder_calls = 0

    @property
    def tile(self) -> int:
        """Side of the smallest window, in plane pixels."""
        return self.settings.tile or max(2, self.predictor.model.img_size // 2)

    @property
    def threshold(self) -> float:
        t = self.settings.mask_threshold
        return t if t is not None else mask_threshold(self.predictor.box_only)

    # ----------------------------------------------------------------- prompts

    def segment(
        self,
        image: object,
        points: object = None,
        labels: object = None,
        box: object = None,
        multimask: bool = True,
        signature: Hashable | None = None,
        limits: tuple[float, float] | None = None,
        diameter: float | None = None,
        mask_input: np.ndarray | None = None,
        mask_window: tuple[int, int, int, int] | None = None,
        threshold: float | None = None,
    ) -> Candidates:
        """Masks (K, H, W) over the whole plane for one prompt, from a zoomed window.

        ``signature`` identifies the plane's content for the cache (default: a hash of its
        bytes); ``limits`` are its intensity limits and ``diameter`` its typical object
        size in pixels (both measured once per signature when not given). ``mask_input``
        is a previous candidate's low-res logits over ``mask_window`` (its ``window``): it
        refines only when the prompt is answered in that same window. ``threshold`` is the
        logit cut of the masks (default :attr:`threshold`; :data:`LOOSE_BOX_THRESHOLD` for
        boxes known to be loose). The candidates' ``logits`` and ``window`` refer to the
        window they came from.
        """
        plane = as_plane(image)
        shape = plane.shape[:2]
        pts = check_points(points, labels, shape)
        bx = check_box(box, shape)
        if pts is None and bx is None:
            raise ValueError("no prompt given: pass points or a box")
        signature = plane_digest(plane) if signature is None else signature
        if diameter is None:
            diameter = self.plane_diameter(plane, signature)
        if self.predictor.box_only and bx is None:
            # Box-trained: the clicks become the box around the object under them, searched
            # at the objects' size, so the window fits the object at any magnification.
            bx = clicks_to_box(plane, pts, diameter)
            if bx is None:
                return no_object(shape)
        limits = self.plane_limits(plane, signature) if limits is None else limits
        extent = prompt_extent(pts, bx)
        win = None
        if mask_input is not None:
            win = Window(*(mask_window or (0, 0, *shape)))
            if not win.contains(extent):
                win, mask_input = None, None  # the refined prompt needs another window
        if win is None:
            # Objects are seen at the zoom that suits their size, however tight the box: on
            # 40 real nuclei, 0 and 3 px margins, mean box IoU at 2x 0.787 in the smallest
            # window that holds the box, 0.835 at the diameter's level (3x 0.825, 0.845).
            win = self.prompt_window(extent, shape, diameter)
        cand = self._segment_in(plane, win, pts, bx, multimask, signature, limits, mask_input, threshold)
        # A box bounds its object; points alone may sit on one larger than the window.
        for _ in range(self.settings.escalate if bx is None else 0):
            grown = self._grow(win, cand.masks[cand.best], shape)
            if grown is None:
                break
            win = grown
            cand = self._segment_in(plane, win, pts, bx, multimask, signature, limits, None, threshold)
        if self.predictor.box_only and len(cand) > 1:
            cand = _edge_first(cand, edge_map(plane, diameter, win.bounds))
        return _paste(cand, win, shape)

    def decode(self, embedding: Embedding, points: tuple[np.ndarray, np.ndarray] | None,
               box: np.ndarray | None, mask_input: np.ndarray | None, multimask: bool,
               threshold: float | None = None) -> Candidates:
        """Validated prompts in the embedding's pixels -> candidates at its size.

        Box-trained models' three multimask outputs are untrained (near-flat logits, scores
        ~0.2): for them the one mask is cut at three levels, the threshold, then tighter
        and looser, all with its one predicted IoU; their points only disturb the box.
        ``threshold``: the logit cut (default :attr:`threshold`).
        """
        p = self.predictor
        t = self.threshold if threshold is None else threshold
        if p.box_only and box is not None:
            points = None
        if p.box_only and multimask:
            logits, scores = p.decode(embedding, points, box, mask_input, False)
            return self._cut(embedding, logits.expand(-1, 3, -1, -1), scores.expand(-1, 3),
                             (t, t + BOX_ONLY_CUT_STEP, t - BOX_ONLY_CUT_STEP))
        logits, scores = p.decode(embedding, points, box, mask_input, multimask)
        return self._cut(embedding, logits, scores, (t,) * logits.shape[1])

    # ----------------------------------------------------------------- windows

    def level_for(self, diameter: float | None, shape: tuple[int, int]) -> int:
        """The window level that fits objects of ``diameter`` pixels (level 0 when unknown)."""
        return 0 if diameter is None else level_for_diameter(diameter, shape, self.tile, self.settings.context)

    def window_for(self, extent: np.ndarray, shape: tuple[int, int], min_level: int = 0) -> Window:
        """The window that answers a prompt of ``extent`` (a continuous box, see
        :func:`prompt_extent`; a box prompt's window is the one of level 0 or above)."""
        return plan_window(extent, shape, self.tile, self.settings.context, min_level)[0]

    def prompt_window(self, extent: np.ndarray, shape: tuple[int, int], diameter: float | None) -> Window:
        """The window a prompt of ``extent`` is answered in on a plane whose objects are
        ``diameter`` pixels across: the smallest that holds it at the level for that size."""
        return self.window_for(extent, shape, self.level_for(diameter, shape))

    def window_box(self, box: np.ndarray, embedding: Embedding, origin: tuple[int, int]) -> np.ndarray:
        """A box (inclusive plane pixels) in the coordinates of the window at ``origin``
        whose ``embedding`` is given: the box prompt the decoder gets there."""
        offset = np.tile(np.asarray(origin, dtype=np.float32), 2)
        # Inclusive pixel boxes: reach the far edge of the last pixel once zoomed in.
        edge = max(0.0, 1.0 - 1.0 / embedding.scale[0])
        return np.clip(box - offset + np.array([0, 0, edge, edge], dtype=np.float32),
                       0, np.tile(np.array(embedding.original_size, dtype=np.float32), 2))

    def tiles(self, shape: tuple[int, int], diameter: float) -> list[Window]:
        """The windows that answer prompts on objects of ``diameter`` pixels: every grid
        window of their level. Embedded ahead, they make each such prompt a decoder call."""
        return level_windows(shape, self.tile, self.level_for(diameter, shape))

    def window_key(self, win: Window, signature: Hashable, limits: tuple[float, float]) -> Key:
        p = self.predictor
        key = (p.model_name, "window", signature, tuple(p.percentiles), limits, *win.bounds)
        return (*key, "denoised") if self.denoises(signature) else key

    def window_embedding(self, plane: np.ndarray, win: Window, signature: Hashable,
                         limits: tuple[float, float]) -> Embedding:
        """The embedding of ``plane[win]``, from the cache or computed (and cached) now."""
        key = self.window_key(win, signature, limits)
        emb = self.cache.get(key)
        if emb is None:
            emb = self.embed_window(plane, win, signature, limits)
            # Caches keep float16: use the same values now, so a repeated prompt repeats its mask.
            emb = replace(emb, features=emb.features.half().float())
            with self._lock:
                self.encoder_calls += 1
            self.cache.put(key, emb)
        return emb

    def embed_window(self, plane: np.ndarray, win: Window, signature: Hashable,
                     limits: tuple[float, float]) -> Embedding:
        """The embedding of ``plane[win]`` as the model is shown it (:meth:`model_crop`),
        computed now: what :meth:`window_embedding` caches, and embedding stores keep."""
        return self.predictor.embed(self.model_crop(plane, win, signature), limits=limits)

    def model_crop(self, plane: np.ndarray, win: Window, signature: Hashable) -> np.ndarray:
        """``plane[win]``, denoised when the plane is photon-limited."""
        noise = self.plane_noise(plane, signature)
        if noise is None:
            return plane[win.r0:win.r1, win.c0:win.c1]
        return denoise_window(plane, win.bounds, noise)

    # ----------------------------------------------------------------- per-plane measures

    def plane_limits(self, plane: np.ndarray, signature: Hashable, denoise: bool | None = None) -> tuple[float, float]:
        """The plane's intensity limits, measured once per signature (on a denoised copy
        when it is shown to the model denoised). ``denoise`` decides that for a plane not
        measured yet: None by its own noise (photon-limited or not), True or False as the
        caller decided for a whole stack."""
        return self._measured(plane, signature, denoise)[0]

    def plane_noise(self, plane: np.ndarray, signature: Hashable) -> NoiseModel | None:
        """The plane's noise model when it is photon-limited and so shown to the model
        denoised, else None; decided once per signature, with the limits."""
        return self._measured(plane, signature)[1]

    def denoises(self, signature: Hashable) -> bool:
        """Whether the plane of ``signature`` is known to be shown to the model denoised."""
        with self._lock:
            known = self._limits.get(signature)
        return known is not None and known[1] is not None

    def _measured(self, plane: np.ndarray, signature: Hashable,
                  denoise: bool | None = None) -> tuple[tuple[float, float], NoiseModel | None]:
        def measure() -> tuple[tuple[float, float], NoiseModel | None]:
            noise = fit_noise(plane) if self.settings.denoise and denoise is not False else None
            if noise is not None and (noise.limited or denoise):
                return intensity_limits(denoise_sample(plane, noise), self.predictor.percentiles), noise
            return intensity_limits(plane, self.predictor.percentiles), None

        return self._remember(self._limits, signature, measure)

    def plane_diameter(self, plane: np.ndarray, signature: Hashable) -> float:
        """The plane's typical object diameter (:func:`~napari_sam.prompting.object_size.estimate_diameter`), once per signature."""
        return self._remember(self._diameters, signature, lambda: estimate_diameter(plane))

    def known_diameter(self, signature: Hashable) -> float | None:
        """The diameter measured for ``signature``, without measuring."""
        with self._lock:
            return self._diameters.get(signature)

    def known_limits(self, signature: Hashable) -> tuple[float, float] | None:
        """The intensity limits measured for ``signature``, without measuring."""
        with self._lock:
            known = self._limits.get(signature)
        return None if known is None else known[0]

    def _remember(self, store: OrderedDict, signature: Hashable, compute):  # type: ignore[no-untyped-def]
        with self._lock:
            if signature in store:
                store.move_to_end(signature)
                return store[signature]
        value = compute()
        with self._lock:
            store[signature] = value
            while len(store) > 64:
                store.popitem(last=False)
        return value

    # ----------------------------------------------------------------- internals

    def _segment_in(self, plane: np.ndarray, win: Window, pts: tuple[np.ndarray, np.ndarray] | None,
                    bx: np.ndarray | None, multimask: bool, signature: Hashable,
                    limits: tuple[float, float], mask_input: np.ndarray | None,
                    threshold: float | None = None) -> Candidates:
        emb = self.window_embedding(plane, win, signature, limits)
        offset = np.array([win.r0, win.c0], dtype=np.float32)
        local_pts = None if pts is None else (pts[0] - offset, pts[1])
        local_box = None if bx is None else self.window_box(bx, emb, (win.r0, win.c0))
        return self.decode(emb, local_pts, local_box, mask_input, multimask, threshold)

    def _cut(self, emb: Embedding, logits: torch.Tensor, scores: torch.Tensor,
             cuts: tuple[float, ...]) -> Candidates:
        up = self.predictor.upscale(logits, emb)
        levels = torch.tensor(cuts, dtype=up.dtype, device=up.device)
        masks = (up > levels[:, None, None]).cpu().numpy()
        return Candidates(masks, scores[0].float().cpu().numpy(), logits[0].float().cpu().numpy())

    def _grow(self, win: Window, mask: np.ndarray, shape: tuple[int, int]) -> Window | None:
        """A larger window when ``mask`` runs into an edge of ``win`` inside the plane."""
        if not mask.any() or win.shape == shape:
            return None
        touches = (mask[0].any() and win.r0 > 0) or (mask[-1].any() and win.r1 < shape[0]) or \
                  (mask[:, 0].any() and win.c0 > 0) or (mask[:, -1].any() and win.c1 < shape[1])
        if not touches:
            return None
        rows, cols = np.nonzero(mask)
        extent = np.array([rows.min() + win.r0, cols.min() + win.c0, rows.max() + win.r0 + 1,
                           cols.max() + win.c0 + 1], dtype=np.float32)
        side = max(win.shape)
        # The mask was cut by the window: widen the extent until a larger window is chosen.
        while True:
            bigger, _ = plan_window(extent, shape, self.tile, self.settings.context)
            if max(bigger.shape) > side or bigger.shape == shape:
                return bigger
            extent = np.concatenate([extent[:2] - side / 4, extent[2:] + side / 4])


def stack_denoises(service: PromptService, first_plane: np.ndarray) -> bool:
    """Whether every plane of a stack is shown to the model denoised: so its first plane
    says (photon-limited or not), so that planes near the threshold (the bundled nucleus
    volume's measure 3.4-4.6 sigmas) do not switch treatment from one to the next."""
    noise = fit_noise(first_plane) if service.settings.denoise else None
    return noise is not None and noise.limited


def plane_digest(plane: np.ndarray) -> str:
    """A hash of a plane's shape, dtype and bytes (about 1 ms per MB)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((plane.shape, str(plane.dtype))).encode())
    h.update(np.ascontiguousarray(plane).view(np.uint8).data)
    return h.hexdigest()


def click_search_half(diameter: float | None, shape: tuple[int, int]) -> int:
    """Half-side of the window searched around a click for its object: 1.25 diameters
    (at least 12 pixels), or the plane-based default when the size is unknown."""
    from .click_box import default_half_size

    return default_half_size(shape) if diameter is None else max(12, int(round(1.25 * diameter)))


def clicks_to_box(plane: np.ndarray, points: tuple[np.ndarray, np.ndarray],
                  diameter: float | None = None) -> np.ndarray | None:
    """The box (inclusive pixels) around the objects under the positive clicks, or None
    when every click is on background. Negative clicks cannot steer a box-only model."""
    boxes = [click_box(plane, (float(r), float(c)), diameter) for (r, c), positive in zip(*points) if positive == 1]
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    b = np.array(boxes, dtype=np.float32)
    return np.concatenate([b[:, :2].min(0), b[:, 2:].max(0)])


def click_box(plane: np.ndarray, point: tuple[float, float], diameter: float | None = None,
              ) -> tuple[float, float, float, float] | None:
    """The box around the object under one click (see :func:`~napari_sam.prompting.click_box.box_from_click`),
    found at any magnification: objects larger than :data:`CLICK_DIAMETER` are looked for
    on a block-averaged copy of the neighbourhood where they have about that size. With the
    objects' ``diameter`` known, the box reaches at most :data:`CLICK_REACH` diameters from
    the click."""
    from skimage.transform import downscale_local_mean

    from .click_box import box_from_click

    shape = plane.shape[:2]
    half = click_search_half(diameter, shape)
    k = 1 if diameter is None else max(1, int(round(diameter / CLICK_DIAMETER)))
    if k == 1:
        box = box_from_click(plane, point, half, diameter=diameter)
    else:
        r, c = point
        reach = 5 * half  # box_from_click looks 4 search half-sides around the click
        r0, c0 = max(0, int(r) - reach), max(0, int(c) - reach)
        crop = np.asarray(plane[r0:int(r) + reach + 1, c0:int(c) + reach + 1], dtype=np.float32)
        if crop.ndim == 3:
            crop = crop.mean(axis=-1)
        small = downscale_local_mean(crop, (k, k))
        box = box_from_click(small, ((r - r0) / k, (c - c0) / k), max(12, half // k), diameter=diameter / k)
        if box is not None:
            box = (box[0] * k + r0, box[1] * k + c0, box[2] * k + k - 1 + r0, box[3] * k + k - 1 + c0)
    if box is None:
        return None
    h, w = shape
    lo, hi = np.array([0.0, 0.0]), np.array([h - 1.0, w - 1.0])
    if diameter is not None:
        reach = CLICK_REACH * diameter
        lo, hi = np.maximum(lo, np.array(point) - reach), np.minimum(hi, np.array(point) + reach)
    b = np.array(box, dtype=np.float64)
    r0, c0 = np.maximum(b[:2], lo)
    r1, c1 = np.minimum(b[2:], hi)
    return float(r0), float(c0), float(r1), float(c1)


def no_object(shape: tuple[int, int], k: int = 3) -> Candidates:
    """Candidates that offer nothing: empty masks scored 0 (a click on background)."""
    return Candidates(np.zeros((k, *shape), dtype=bool), np.zeros(k, dtype=np.float32),
                      np.full((k, 256, 256), -20.0, dtype=np.float32))


def prompt_extent(points: tuple[np.ndarray, np.ndarray] | None, box: np.ndarray | None) -> np.ndarray:
    """The continuous box (r0, c0, r1, c1) covering the box and the positive points."""
    parts = []
    if box is not None:
        parts.append(np.array([box[0], box[1], box[2] + 1, box[3] + 1], dtype=np.float32))
    if points is not None:
        pos = points[0][points[1] == 1]
        pos = pos if len(pos) else points[0]
        parts.append(np.concatenate([pos.min(0), pos.max(0) + 1]).astype(np.float32))
    stacked = np.stack(parts)
    return np.concatenate([stacked[:, :2].min(0), stacked[:, 2:].max(0)])


def _edge_first(cand: Candidates, gradient: np.ndarray) -> Candidates:
    """A box-only model's cuts of its one mask (one predicted IoU for all), the one on the
    strongest image edges first: the default candidate. On 40 real nuclei per variant, box
    margins of 0 and 3 px, mean IoU against the threshold cut first: native 0.823 -> 0.838,
    low photon 0.732 -> 0.743, RGB 0.789 -> 0.816, inverted 0.830 -> 0.847, 2x 0.835 ->
    0.842, 3x 0.845 -> 0.843."""
    first = on_strongest_edges(gradient, cand.masks)
    if first == 0:
        return cand
    order = [first, *(k for k in range(len(cand)) if k != first)]
    return replace(cand, masks=cand.masks[order], scores=cand.scores[order], logits=cand.logits[order])


def _paste(cand: Candidates, win: Window, shape: tuple[int, int]) -> Candidates:
    if win.shape == shape:
        return replace(cand, window=win.bounds)
    masks = np.zeros((len(cand.scores), *shape), dtype=bool)
    masks[:, win.r0:win.r1, win.c0:win.c1] = cand.masks
    return replace(cand, masks=masks, window=win.bounds)
