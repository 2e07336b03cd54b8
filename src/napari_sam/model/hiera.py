"""Hiera, the hierarchical trunk of the SAM 2.1 image encoder.

A 7x7 stride-4 patch embedding, then four stages of pre-norm transformer blocks. Each stage
halves the grid and doubles the width and the heads: its first block max-pools the queries
2x2 (and the shortcut with them), so the attention itself does the downsampling. Most
blocks attend within square windows, a few over the whole grid. The position embedding is
a small learned background, resized to the grid, plus one learned window tiled over it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import add_, gelu_, to_windows


@dataclass(frozen=True)
class HieraConfig:
    """One Hiera size, with the numbers of the official SAM 2.1 configs.

    ``window_spec`` is the window side per stage (the first block of a stage still uses the
    previous stage's, pooled); ``global_att_blocks`` are block indices over the whole trunk.
    ``backbone_channel_list`` is the stages' widths, lowest resolution first, as the neck
    takes them.
    """

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_pos_embed_bkg_spatial_size: tuple[int, int]
    window_spec: tuple[int, ...]
    backbone_channel_list: tuple[int, ...]
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if len(self.window_spec) != len(self.stages):
            raise ValueError("window_spec needs one window size per stage")
        widths = tuple(self.embed_dim * 2**i for i in range(len(self.stages)))
        if tuple(self.backbone_channel_list) != widths[::-1]:
            raise ValueError(f"backbone_channel_list must be {widths[::-1]}, got {self.backbone_channel_list}")


HIERA_CONFIGS: dict[str, HieraConfig] = {
    "hiera_t": HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), (7, 7), (8, 4, 14, 7), (768, 384, 192, 96)),
    "hiera_s": HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), (7, 7), (8, 4, 14, 7), (768, 384, 192, 96)),
    "hiera_b+": HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20), (14, 14), (8, 4, 14, 7), (896, 448, 224, 112)),
    "hiera_l": HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), (7, 7), (8, 4, 16, 8), (1152, 576, 288, 144)),
}


def max_pool_2x2(x: torch.Tensor, dim: int) -> torch.Tensor:
    """2x2 max pooling with stride 2 over axes ``dim`` and ``dim + 1`` of ``x`` (any others
    around them); an odd last row or column is dropped, as ``nn.MaxPool2d`` does."""
    h, w = x.shape[dim], x.shape[dim + 1]
    x = x.narrow(dim, 0, h - h % 2).narrow(dim + 1, 0, w - w % 2)
    lead = (slice(None),) * dim

    def corner(i: int, j: int) -> torch.Tensor:
        return x[(*lead, slice(i, None, 2), slice(j, None, 2))]

    # Three elementwise maxima of strided views, the same to the bit as a reduction over two
    # short axes (amax) and on CPUs about 5x faster; faster than max_pool2d too, which
    # would want the channels moved first.
    return torch.maximum(torch.maximum(corner(0, 0), corner(0, 1)), torch.maximum(corner(1, 0), corner(1, 1)))


class MultiScaleAttention(nn.Module):
    """Self-attention over a (B, H, W, dim) grid to a (B, H', W', dim_out) one, within
    ``window`` x ``window`` windows (0: the whole grid); ``pool`` halves the grid by
    max-pooling the queries of each window."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, window: int, pool: bool) -> None:
        super().__init__()
        if pool and window % 2:
            raise ValueError(f"query pooling needs an even window, got {window}")
        self.num_heads = num_heads
        self.window = window
        self.pool = pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        if self.window:
            x, (hp, wp) = to_windows(x, self.window)  # zero padding: those tokens are keys too
        else:
            hp, wp = h, w
        n, wh, ww, _ = x.shape
        heads = self.num_heads
        # q, k, v stay strided views into the projection: (n, heads, wh*ww, d)
        q, k, v = self.qkv(x).reshape(n, wh * ww, 3, heads, -1).permute(2, 0, 3, 1, 4)
        if self.pool:
            q = max_pool_2x2(q.unflatten(2, (wh, ww)), 2)
            wh, ww, h, w, hp, wp = wh // 2, ww // 2, h // 2, w // 2, hp // 2, wp // 2
            q = q.flatten(2, 3)
        out = F.scaled_dot_product_attention(q, k, v)
        # (nH*nW*B, heads, wh*ww, d) -> (B, hp, wp, heads*d) in one copy
        out = out.reshape(b, hp // wh, wp // ww, heads, wh, ww, -1).permute(0, 1, 4, 2, 5, 3, 6)
        out = out.reshape(b, hp, wp, -1)
        if (hp, wp) != (h, w):
            out = out[:, :h, :w]
        return self.proj(out)


class HieraMlp(nn.Module):
    """Linear, GELU, linear (keys ``layers.0``, ``layers.1``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](gelu_(self.layers[0](x)))


class MultiScaleBlock(nn.Module):
    """Pre-norm attention + MLP block on a (B, H, W, C) grid. A block that widens the
    channels (the first of a stage) also pools: its shortcut is the projected, pooled
    input (keys ``proj.*``)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.pool = dim != dim_out
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, window, self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = HieraMlp(dim_out, int(dim_out * mlp_ratio))
        if self.pool:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        shortcut = max_pool_2x2(self.proj(y), 1) if self.pool else x
        x = add_(self.attn(y), shortcut)
        return add_(self.mlp(self.norm2(x)), x)


class HieraPatchEmbed(nn.Module):
    """7x7 convolution with stride 4: (B, 3, H, W) -> (B, H/4, W/4, C) (keys ``proj.*``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A channels-last image makes the convolution's output (B, H, W, C) contiguous.
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        return x.permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """The trunk: (B, 3, 1024, 1024) -> its four stage outputs, highest resolution first,
    (B, C, 256, 256), (B, 2C, 128, 128), (B, 4C, 64, 64), (B, 8C, 32, 32)."""

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        dim, heads = config.embed_dim, config.num_heads
        self.patch_embed = HieraPatchEmbed(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *config.window_pos_embed_bkg_spatial_size))
        first_window = config.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, dim, first_window, first_window))
        starts = [sum(config.stages[:i]) for i in range(len(config.stages))]
        self.stage_ends = [start + n - 1 for start, n in zip(starts, config.stages)]
        blocks = []
        for i in range(sum(config.stages)):
            stage = sum(i >= start for start in starts) - 1
            dim_out = dim
            # The first block of a stage works on the previous stage's grid and windows.
            window = config.window_spec[max(stage - 1, 0) if i == starts[stage] else stage]
            if i in config.global_att_blocks:
                window = 0
            if i == starts[stage] and stage > 0:
                dim_out, heads = dim * 2, heads * 2
            blocks.append(MultiScaleBlock(dim, dim_out, heads, window, config.mlp_ratio))
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)

    def position_code(self, h: int, w: int) -> torch.Tensor:
        """(1, C, h, w): the background resized bicubically plus the window tiled over it."""
        window = self.pos_embed_window
        tiles = (-(-h // window.shape[2]), -(-w // window.shape[3]))
        tiled = window.tile(1, 1, *tiles)[:, :, :h, :w]
        return F.interpolate(self.pos_embed, size=(h, w), mode="bicubic") + tiled

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = add_(x, self.position_code(*x.shape[1:3]).permute(0, 2, 3, 1))
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
