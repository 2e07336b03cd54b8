"""SAM's mask decoder: output tokens + prompt tokens go through the two-way transformer;
mask tokens become per-mask hypernetwork weights over an upsampled image embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import StackedLinear, mask_upscaling
from .transformer import PreparedImage, TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts 4 low-res masks (1 single-prompt + 3 ambiguity candidates) and their IoU."""

    def __init__(self, dim: int = 256, num_candidates: int = 3) -> None:
        super().__init__()
        self.num_mask_tokens = num_candidates + 1
        self.transformer = TwoWayTransformer(dim=dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = mask_upscaling(dim)
        self.output_hypernetworks_mlps = nn.ModuleList(
            StackedLinear(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = StackedLinear(dim, 256, self.num_mask_tokens, 3)

    def prepare_image(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor
    ) -> PreparedImage:
        """The prompt-independent work for one embedding and dense prompt (no-mask), to be
        passed as ``prepared`` to :meth:`forward` for any number of prompts."""
        return self.transformer.prepare_image(image_embeddings + dense, image_pe)

    def forward(
        self,
        image_embeddings: torch.Tensor | None,
        image_pe: torch.Tensor | None,
        sparse: torch.Tensor,
        dense: torch.Tensor | None,
        multimask: bool = True,
        prepared: PreparedImage | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings: (1 or B, C, 64, 64); sparse: (B, N, C); dense: (1 or B, C, 64, 64);
        or, instead of the image, pe and dense, ``prepared`` from :meth:`prepare_image`.

        Returns low-res mask logits (B, K, 256, 256) and predicted IoU (B, K), with K = 3
        if ``multimask`` else 1.
        """
        keep = slice(1, None) if multimask else slice(0, 1)
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight]).expand(b, -1, -1)
        tokens = torch.cat([out_tokens, sparse], dim=1)
        if prepared is None:
            prepared = self.prepare_image(image_embeddings, image_pe, dense)
        grid = int(round(prepared.image.shape[1] ** 0.5))
        tokens, image = self.transformer(prepared, None, tokens)
        iou = self.iou_prediction_head(tokens[:, 0])[:, keep]
        indices = range(self.num_mask_tokens)[keep]
        weights = torch.stack([self.output_hypernetworks_mlps[i](tokens[:, 1 + i]) for i in indices], dim=1)
        return self.masks_from_weights(image, (grid, grid), weights), iou

    def masks_from_weights(self, image: torch.Tensor, hw: tuple[int, int], weights: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, h*w, C) and hypernetwork weights (B, K, C/8) -> logits (B, K, 4h, 4w).

        ``output_upscaling``'s two transposed convolutions have kernel 2 and stride 2, so
        every output pixel comes from one input pixel: each is a per-pixel linear map from C
        channels to 2x2 sub-pixels. Applied to the channels-last tokens as matrix products
        (no im2col, no layout changes), with the masks taken before the sub-pixels are put
        in place, this is the same arithmetic in a fraction of the time.
        """
        up1, norm, act1, up2, act2 = self.output_upscaling
        b, h, w = image.shape[0], *hw
        mid, out = up1.out_channels, up2.out_channels
        # ConvTranspose2d weights are (in, out, kh, kw): order them (in, kh, kw, out).
        x = image @ up1.weight.permute(0, 2, 3, 1).reshape(up1.in_channels, -1)
        x = x.view(b, h, w, 2, 2, mid) + up1.bias
        x = act1(F.layer_norm(x, (mid,), norm.weight, norm.bias, norm.eps))
        x = x @ up2.weight.permute(0, 2, 3, 1).reshape(mid, -1)
        x = act2(x.view(b, h, w, 2, 2, 2, 2, out) + up2.bias)
        masks = x.reshape(b, -1, out) @ weights.transpose(1, 2)  # (B, h*w*16, K)
        k = weights.shape[1]
        # Pixel (4y + 2a + c, 4x + 2d + e) sits at [y, x, a, d, c, e] of the product.
        masks = masks.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, k, 4 * h, 4 * w)
