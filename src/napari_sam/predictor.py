"""The prompt-level API: embed a 2D plane once, then answer point/box/mask prompts with
three candidate masks and their predicted IoU. No napari here."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .model.architectures import architecture
from .errors import friendly_oom
from .imaging import DEFAULT_PERCENTILES, as_plane, model_input
from .model.sam import Sam
from .model.fast import decoder_autocast, encoder_input
from .model.transformer import PreparedImage
from .prompting.service import Cache, PromptService
from .values import Candidates, Embedding, check_box, check_mask_input, check_points

class Predictor:
    """Embeds planes with a loaded SAM and decodes prompts against the embeddings.

    Coordinates are numpy/napari order: points (row, col); boxes
    (min_row, min_col, max_row, max_col), in pixels of the plane.
    """

    def __init__(self, model: Sam, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> None:
        self.model = model.eval()
        self.percentiles = percentiles
        spec = getattr(model, "spec", None) or architecture(model.arch)  # a bare Sam: its architecture's
        self.normalisation = spec.normalisation
        self.model_name = spec.name
        self.box_only = bool(spec.box_only)
        self.fit = architecture(model.arch).fit
        self.is_sam2 = architecture(model.arch).tracks_with_memory
        self._service: PromptService | None = None
        self._prepared: tuple[object, PreparedImage] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def embed(self, image: object, limits: tuple[float, float] | None = None) -> Embedding:
        """Compute the image embedding of one 2D plane, (H, W) or (H, W, C), any numeric dtype.

        ``limits``: intensity limits to stretch with instead of the plane's percentiles
        (see :func:`~napari_sam.imaging.intensity_limits`), e.g. those of a whole plane for a crop.
        """
        plane = as_plane(image)
        x, input_size = model_input(plane, self.model.img_size, self.normalisation, self.percentiles, limits,
                                    self.fit)
        high_res = None
        with friendly_oom("embedding a plane", self.model_name, self.device), torch.inference_mode():
            x = encoder_input(self.model, x)
            if self.is_sam2:
                frame = self.model.encode(x)
                features, high_res = frame.features.float(), tuple(h.float() for h in frame.high_res)
            else:
                features = self.model.image_encoder(x).float()
        return Embedding(features, tuple(plane.shape[:2]), input_size, self.model.img_size, self.model_name,
                         high_res=high_res)

    def segment(self, image: object, points: object = None, labels: object = None, box: object = None,
                multimask: bool = True, *, cache: Cache | None = None, **options: Any) -> Candidates:
        """Answer one prompt on a whole plane, working on a zoomed window around it.

        Small objects are segmented at a higher zoom than :meth:`embed` of the whole plane
        allows, and large planes are served window by window; the masks are (K, H, W) at
        the plane's size. Window embeddings are kept in ``cache`` (anything with
        ``get(key)``/``put(key, embedding)``), by default a small LRU of this predictor.
        ``options`` are those of :meth:`PromptService.segment <napari_sam.prompting.service.PromptService.segment>`,
        for instance ``diameter``: the objects' typical size in pixels, measured from the
        image when not given, which sets the zoom for clicks. Box-only models (LiteMedSAM)
        get the box around the object under the clicks (:mod:`napari_sam.prompting.click_box`); a click on
        background gives empty candidates scored 0. See :mod:`napari_sam.prompting`.
        """
        return self.prompts(cache).segment(image, points, labels, box, multimask, **options)

    def prompts(self, cache: Cache | None = None) -> PromptService:
        """The prompt service of this predictor, over ``cache`` (default: its own LRU)."""
        if self._service is None or (cache is not None and cache is not self._service.cache):
            self._service = PromptService(self, cache)
        return self._service

    def predict(self, embedding: Embedding, points: object = None, labels: object = None, box: object = None,
                mask_input: object = None, multimask: bool = True) -> Candidates:
        """Decode prompts into candidates: 3 masks with ``multimask``, else 1.

        For box-only models (LiteMedSAM) the three are the single mask cut at the
        threshold, then tighter and looser, all with its one predicted IoU (see
        :meth:`~napari_sam.prompting.service.PromptService.decode`).

        ``labels`` are 1 (object) or 0 (background) per point, all 1 when omitted.
        ``mask_input`` is a previous candidate's low-res logits, (256, 256).
        """
        pts = check_points(points, labels, embedding.original_size)
        bx = check_box(box, embedding.original_size)
        mask = check_mask_input(mask_input)
        if pts is None and bx is None and mask is None:
            raise ValueError("no prompt given: pass points, a box or a mask_input")
        return self.prompts().decode(embedding, pts, bx, mask, multimask)

    def decode(
        self,
        embedding: Embedding,
        points: tuple[np.ndarray, np.ndarray] | None,
        box: np.ndarray | None,
        mask_input: np.ndarray | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated prompts in plane pixels -> low-res logits (1, K, 256, 256) and scores (1, K)."""
        return self.decode_batch(
            embedding,
            points=None if points is None else points[0][None],
            labels=None if points is None else points[1][None],
            boxes=None if box is None else box[None],
            mask_input=None if mask_input is None else mask_input[None],
            multimask=multimask,
        )

    def decode_batch(
        self,
        embedding: Embedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompts at once against one embedding (no validation: callers check).

        points (B, N, 2) as (row, col) with labels (B, N) (default all 1), boxes (B, 4) as
        (min_row, min_col, max_row, max_col), mask_input (B, 256, 256); all in plane pixels.
        Returns low-res logits (B, K, 256, 256) and scores (B, K).
        """
        dev = self.device
        sy, sx = embedding.scale
        to_xy = np.array([sx, sy], dtype=np.float32)
        point_t = None
        if points is not None:
            points = np.asarray(points, dtype=np.float32)
            labels = np.ones(points.shape[:2], np.int64) if labels is None else np.asarray(labels, np.int64)
            xy = points[..., ::-1] * to_xy
            point_t = (torch.as_tensor(xy, device=dev), torch.as_tensor(labels, device=dev))
        box_t = None
        if boxes is not None:
            xyxy = np.asarray(boxes, dtype=np.float32)[:, [1, 0, 3, 2]] * np.tile(to_xy, 2)
            box_t = torch.as_tensor(xyxy, device=dev)
        mask_t = None if mask_input is None else torch.as_tensor(np.asarray(mask_input, np.float32)[:, None], device=dev)
        if self.is_sam2:
            return self._decode_sam2(embedding, point_t, box_t, mask_t, multimask)
        pe = self.model.prompt_encoder
        with torch.inference_mode(), decoder_autocast(self.model):
            sparse, dense = pe(point_t, box_t, mask_t)
            if mask_t is None:
                logits, scores = self.model.mask_decoder(
                    None, None, sparse, None, multimask=multimask, prepared=self._prepared_image(embedding))
            else:
                logits, scores = self.model.mask_decoder(
                    embedding.features.to(dev, torch.float32), pe.dense_pe(), sparse, dense, multimask=multimask)
        return logits.float(), scores.float()

    def _decode_sam2(self, embedding: Embedding, points: tuple[torch.Tensor, torch.Tensor] | None,
                     boxes: torch.Tensor | None, mask_input: torch.Tensor | None, multimask: bool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 2.1 on a single image, as its image predictor: the embedding with the "no
        memory" vector added, boxes as corner points, the decoder's masks as they come."""
        model, dev = self.model, self.device
        if embedding.high_res is None:
            raise ValueError("this embedding has no high-resolution features: it was not made by a SAM 2 model")
        batch = max(t.shape[0] for t in (points[0] if points else None, boxes, mask_input) if t is not None)
        with torch.inference_mode(), decoder_autocast(model):
            sparse, dense = model.prompt_tokens(points, boxes, mask_input, batch, dev)
            image = model.without_memory(embedding.features.to(dev, torch.float32))
            high_res = tuple(h.to(dev, torch.float32) for h in embedding.high_res)
            out = model.sam_mask_decoder(image, model.sam_prompt_encoder.dense_pe(), sparse, dense,
                                         multimask=multimask, high_res=high_res)
        return out.masks.float(), out.iou.float()

    def _prepared_image(self, embedding: Embedding) -> PreparedImage:
        """The decoder's prompt-independent work for ``embedding`` (without a mask prompt),
        kept for the last embedding used: every prompt after the first on a plane skips it."""
        ident = embedding.features if embedding.origin is None else embedding.origin
        cached = self._prepared
        if cached is not None and cached[0] is ident:
            return cached[1]
        pe = self.model.prompt_encoder
        features = embedding.features.to(self.device, torch.float32)
        prepared = self.model.mask_decoder.prepare_image(features, pe.dense_pe(), pe.no_mask_dense())
        self._prepared = (ident, prepared)
        return prepared

    def upscale(self, logits: torch.Tensor, embedding: Embedding) -> torch.Tensor:
        """Low-res logits (1, K, 256, 256) -> (K, H, W) logits at the plane's size."""
        s = embedding.img_size
        h, w = embedding.input_size
        with torch.inference_mode():
            if self.fit == "stretch":  # SAM 2 resizes its low-res logits straight to the plane
                return F.interpolate(logits, embedding.original_size, mode="bilinear", align_corners=False)[0]
            x = logits if logits.shape[-1] == s else F.interpolate(logits, (s, s), mode="bilinear", align_corners=False)
            x = x[..., :h, :w]
            if tuple(x.shape[-2:]) != tuple(embedding.original_size):
                x = F.interpolate(x, embedding.original_size, mode="bilinear", align_corners=False)
        return x[0]


__all__ = ["Candidates", "Embedding", "Predictor"]
