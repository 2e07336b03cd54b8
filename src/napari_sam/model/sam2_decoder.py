"""SAM 2.1's mask decoder: SAM's decoder plus an object-score token, high-resolution
backbone features mixed into the mask upscaling, a sigmoid IoU head, and a fallback from
an unstable single mask to the best of the three candidates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import StackedLinear, mask_upscaling
from .transformer import TwoWayTransformer


@dataclass(frozen=True)
class Sam2Decoded:
    """One decoder pass for B prompts; K = 3 with multimask output, else 1.

    ``masks``: (B, K, 256, 256) logits; ``iou``: (B, K) predicted IoU in [0, 1];
    ``tokens``: (B, K or 1, C) mask-token outputs that become object pointers;
    ``object_score``: (B, 1) logit that the object is present.
    """

    masks: torch.Tensor
    iou: torch.Tensor
    tokens: torch.Tensor
    object_score: torch.Tensor


class Sam2MaskDecoder(nn.Module):
    """Predicts 4 low-res masks (1 single-prompt + 3 candidates), their IoU and an object score.

    With ``stability_fallback`` (on in every official SAM 2.1 model), a single-mask request
    whose mask flips on more than ``1 - stability_thresh`` of its area when the logit
    threshold moves by +-``stability_delta`` gets the candidate with the best predicted IoU
    instead. Like the reference, the fallback applies in eval mode only.
    """

    def __init__(
        self,
        dim: int = 256,
        num_candidates: int = 3,
        stability_fallback: bool = True,
        stability_delta: float = 0.05,
        stability_thresh: float = 0.98,
    ) -> None:
        super().__init__()
        self.num_mask_tokens = num_candidates + 1
        self.stability_fallback = stability_fallback
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh
        self.transformer = TwoWayTransformer(dim=dim)
        for layer in self.transformer.layers:
            # Same two-layer ReLU MLP as SAM's, stored under SAM 2's key names (mlp.layers.{0,1}).
            layer.mlp = StackedLinear(dim, layer.mlp.lin1.out_features, dim, 2)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = mask_upscaling(dim)
        # Applied by the caller to the backbone's stride-4 and stride-8 levels, once per image.
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            StackedLinear(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = StackedLinear(dim, 256, self.num_mask_tokens, 3)
        self.pred_obj_score_head = StackedLinear(dim, dim, 1, 3)

    def project_high_res(self, stride4: torch.Tensor, stride8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's (B, C, 256, 256) and (B, C, 128, 128) levels -> ``high_res`` for
        :meth:`forward`: (B, C/8, 256, 256) and (B, C/4, 128, 128)."""
        return self.conv_s0(stride4), self.conv_s1(stride8)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask: bool,
        high_res: tuple[torch.Tensor, torch.Tensor],
    ) -> Sam2Decoded:
        """image_embeddings: (1 or B, C, 64, 64); image_pe: (1, C, 64, 64); sparse: (B, N, C);
        dense: (1 or B, C, 64, 64); high_res: from :meth:`project_high_res`, batch 1 or B.
        One image serves a batch of prompts when its batch is 1."""
        b = sparse.shape[0]
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([out_tokens.expand(b, -1, -1), sparse], dim=1)
        tokens, image = self.transformer(image_embeddings + dense, image_pe, tokens)
        object_score = self.pred_obj_score_head(tokens[:, 0])
        iou = torch.sigmoid(self.iou_prediction_head(tokens[:, 1]))
        mask_tokens = tokens[:, 2 : 2 + self.num_mask_tokens]

        fallback = not multimask and self.stability_fallback and not self.training
        keep = range(1, self.num_mask_tokens) if multimask else range(self.num_mask_tokens if fallback else 1)
        weights = torch.stack([self.output_hypernetworks_mlps[i](mask_tokens[:, i]) for i in keep], dim=1)
        h, w = image_embeddings.shape[-2:]
        upscaled = self.upscale(image.transpose(1, 2).reshape(b, -1, h, w), high_res)
        masks = (weights @ upscaled.flatten(2)).view(b, len(keep), *upscaled.shape[-2:])
        iou = iou[:, keep.start : keep.stop]
        if fallback:
            masks, iou = self.stable_or_best(masks, iou)
        # Object pointers come from the three candidates' tokens with multimask output, else
        # from the single-mask token (also when the fallback picked a candidate's mask).
        pointer_tokens = mask_tokens[:, 1:] if multimask else mask_tokens[:, :1]
        return Sam2Decoded(masks, iou, pointer_tokens, object_score)

    def upscale(self, image: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(B, C, h, w) image tokens -> (B, C/8, 4h, 4w), with the high-res features added
        before each activation."""
        up1, norm, act1, up2, act2 = self.output_upscaling
        stride4, stride8 = high_res
        x = act1(norm(up1(image) + stride8))
        return act2(up2(x) + stride4)

    def stability(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) logits -> (B, K): area above +delta over area above -delta (1 if empty)."""
        inner = (masks > self.stability_delta).flatten(2).sum(-1).float()
        outer = (masks > -self.stability_delta).flatten(2).sum(-1).float()
        return torch.where(outer > 0, inner / outer.clamp(min=1), 1.0)

    def stable_or_best(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All four masks (B, 4, H, W) and IoUs (B, 4) -> the single mask where it is stable,
        else the candidate with the highest predicted IoU: (B, 1, H, W), (B, 1)."""
        best = 1 + iou[:, 1:].argmax(dim=1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        stable = self.stability(masks[:, :1]) >= self.stability_thresh  # (B, 1)
        masks = torch.where(stable[..., None, None], masks[:, :1], masks[rows, best][:, None])
        iou = torch.where(stable, iou[:, :1], iou[rows, best][:, None])
        return masks, iou
