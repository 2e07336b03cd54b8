"""SAM's mask decoder: output tokens + prompt tokens go through the two-way transformer;
mask tokens become per-mask hypernetwork weights over an upsampled image embedding."""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm2d, StackedLinear
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts 4 low-res masks (1 single-prompt + 3 ambiguity candidates) and their IoU."""

    def __init__(self, dim: int = 256, num_candidates: int = 3) -> None:
        super().__init__()
        self.num_mask_tokens = num_candidates + 1
        self.transformer = TwoWayTransformer(dim=dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            StackedLinear(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = StackedLinear(dim, 256, self.num_mask_tokens, 3)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings: (1 or B, C, 64, 64); sparse: (B, N, C); dense: (B, C, 64, 64).

        Returns low-res mask logits (B, K, 256, 256) and predicted IoU (B, K), with K = 3
        if ``multimask`` else 1.
        """
        masks, iou = self.predict_all(image_embeddings, image_pe, sparse, dense)
        keep = slice(1, None) if multimask else slice(0, 1)
        return masks[:, keep], iou[:, keep]

    def predict_all(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All four mask tokens' logits (B, 4, 256, 256) and IoU predictions (B, 4)."""
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight]).expand(b, -1, -1)
        tokens = torch.cat([out_tokens, sparse], dim=1)
        image = image_embeddings.expand(b, -1, -1, -1) if image_embeddings.shape[0] == 1 else image_embeddings
        image = image + dense
        pe = image_pe.expand(b, -1, -1, -1)
        c, h, w = image.shape[1:]
        tokens, image = self.transformer(image, pe, tokens)
        iou_out = tokens[:, 0]
        mask_out = tokens[:, 1 : 1 + self.num_mask_tokens]

        upscaled = self.output_upscaling(image.transpose(1, 2).reshape(b, c, h, w))
        weights = torch.stack(
            [mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        uc, uh, uw = upscaled.shape[1:]
        masks = (weights @ upscaled.reshape(b, uc, uh * uw)).reshape(b, -1, uh, uw)
        return masks, self.iou_prediction_head(iou_out)
