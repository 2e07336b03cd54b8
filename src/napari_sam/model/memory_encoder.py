"""SAM 2's memory encoder: a frame's mask, brought down to the feature grid, is added to the
frame's image features, mixed by two ConvNeXt blocks and narrowed to 64 memory channels."""

from __future__ import annotations

import torch
from torch import nn

from .common import GELU, LayerNorm2d, add_, gelu_
from .sine_positions import sine_positions


class MaskDownsampler(nn.Module):
    """``stages`` stride-2 3x3 convolutions, each with LayerNorm2d and GELU and 4 times the
    channels (1 -> 4 -> 16 -> ...), then a 1x1 convolution to ``dim`` (keys ``encoder.{i}``)."""

    def __init__(self, dim: int = 256, stages: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Sequential()
        channels = 1
        for _ in range(stages):
            self.encoder.extend([
                nn.Conv2d(channels, channels * 4, kernel_size=3, stride=2, padding=1),
                LayerNorm2d(channels * 4),
                GELU(),
            ])
            channels *= 4
        self.encoder.append(nn.Conv2d(channels, dim, kernel_size=1))

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, dim, H / 2**stages, W / 2**stages)."""
        return self.encoder(masks)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 convolution, LayerNorm, pointwise MLP (4x wider, GELU) scaled per
    channel by ``gamma``, added to the input."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)  # over the channels, applied channels-last
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, H, W) -> (B, dim, H, W)."""
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(gelu_(self.pwconv1(y))) * self.gamma
        return add_(y.permute(0, 3, 1, 2), x)


class Fuser(nn.Module):
    """ConvNeXt blocks in sequence (keys ``layers.{i}``)."""

    def __init__(self, dim: int = 256, depth: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConvNeXtBlock(dim) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Encodes a frame's image features and mask into memory features and their position
    code (SAM 2.1: 256 feature channels, 64 memory channels, masks at 16x the grid)."""

    def __init__(self, dim: int = 256, out_dim: int = 64, mask_stages: int = 4) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownsampler(dim, mask_stages)
        self.pix_feat_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.fuser = Fuser(dim)
        self.out_proj = nn.Conv2d(dim, out_dim, kernel_size=1)

    def forward(
        self, features: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features: (B, dim, h, w); masks: (B, 1, 16h, 16w) logits, or probabilities (or
        binary masks) with ``skip_mask_sigmoid``.

        Returns the memory features (B, out_dim, h, w) and their sine position code, the
        same for every batch entry: a (B, out_dim, h, w) expanded view.
        """
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        x = add_(self.pix_feat_proj(features), self.mask_downsampler(masks))
        x = self.out_proj(self.fuser(x))
        b, c, h, w = x.shape
        pos = sine_positions(h, w, c, x.device).to(x.dtype)
        return x, pos.expand(b, -1, -1, -1)
