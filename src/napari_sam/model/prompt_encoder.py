"""SAM's prompt encoder: points and box corners become sparse tokens, a low-res mask
becomes a dense embedding added to the image embedding."""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d


class FourierPositions(nn.Module):
    """Random Fourier features of normalised (x, y) positions in [0, 1]."""

    def __init__(self, num_feats: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, xy: torch.Tensor) -> torch.Tensor:
        """(..., 2) positions in [0, 1] -> (..., 2*num_feats) features."""
        proj = (2.0 * xy - 1.0) @ self.positional_encoding_gaussian_matrix
        proj = 2.0 * math.pi * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Encoding of the centres of an h x w grid, as (C, h, w)."""
        m = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=m.device, dtype=m.dtype) + 0.5) / h
        xs = (torch.arange(w, device=m.device, dtype=m.dtype) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self.encode(xy).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Encodes points (x, y in model-input pixels), boxes and mask logits.

    Point labels: 1 foreground, 0 background, -1 padding (no point), and 2 / 3 for a box's
    top-left / bottom-right corner given as points (how SAM 2 sends boxes).
    """

    def __init__(self, embed_dim: int = 256, grid: int = 64, input_size: int = 1024, mask_channels: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.grid_size = (grid, grid)
        self.input_size = (input_size, input_size)
        self.pe_layer = FourierPositions(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_channels // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_channels // 4),
            nn.GELU(),
            nn.Conv2d(mask_channels // 4, mask_channels, kernel_size=2, stride=2),
            LayerNorm2d(mask_channels),
            nn.GELU(),
            nn.Conv2d(mask_channels, embed_dim, kernel_size=1),
        )
        self._dense_pe: torch.Tensor | None = None

    def no_mask_dense(self, batch: int = 1) -> torch.Tensor:
        """The dense embedding when no mask is given: (batch, C, 64, 64), one learnt vector."""
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.grid_size)

    def dense_pe(self) -> torch.Tensor:
        """Positional encoding of the embedding grid, (1, C, 64, 64); cached (prompt-independent)."""
        pe = self._dense_pe
        m = self.pe_layer.positional_encoding_gaussian_matrix
        if pe is None or pe.device != m.device or pe.dtype != m.dtype:
            pe = self.pe_layer.grid(*self.grid_size).unsqueeze(0)
            self._dense_pe = pe
        return pe

    def _encode_xy(self, xy: torch.Tensor) -> torch.Tensor:
        # +0.5 moves integer pixel coordinates to pixel centres.
        h, w = self.input_size
        scale = xy.new_tensor([w, h])
        return self.pe_layer.encode((xy + 0.5) / scale)

    def embed_points(self, xy: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        tokens = self._encode_xy(xy)
        labels = labels[..., None]
        tokens = torch.where(labels == -1, torch.zeros_like(tokens), tokens)
        tokens = tokens + (labels == -1) * self.not_a_point_embed.weight
        tokens = tokens + (labels == 0) * self.point_embeddings[0].weight
        tokens = tokens + (labels == 1) * self.point_embeddings[1].weight
        tokens = tokens + (labels == 2) * self.point_embeddings[2].weight
        tokens = tokens + (labels == 3) * self.point_embeddings[3].weight
        return tokens

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) boxes as x0, y0, x1, y1 -> (B, 2, C) corner tokens."""
        corners = self._encode_xy(boxes.reshape(-1, 2, 2))
        corner_types = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return corners + corner_types

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse tokens (B, N, C) and the dense embedding (B, C, 64, 64)."""
        batch = 1
        for p in (points[0] if points is not None else None, boxes, masks):
            if p is not None:
                batch = p.shape[0]
                break
        parts: list[torch.Tensor] = []
        if points is not None:
            xy, labels = points
            if boxes is None:
                # Without a box the decoder was trained with one padding token appended.
                xy = torch.cat([xy, xy.new_zeros(xy.shape[0], 1, 2)], dim=1)
                labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
            parts.append(self.embed_points(xy, labels))
        if boxes is not None:
            parts.append(self.embed_boxes(boxes))
        if parts:
            sparse = torch.cat(parts, dim=1)
        else:
            sparse = self.no_mask_embed.weight.new_empty(batch, 0, self.embed_dim)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_dense(batch)
        return sparse, dense
