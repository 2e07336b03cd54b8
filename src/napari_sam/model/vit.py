"""ViTDet image encoder of SAM ViT-B/L/H: windowed + global attention with decomposed
relative-position bias, followed by a neck down to a 256-channel embedding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .architectures import architecture
from .common import FeedForward, add_, from_windows, make_neck, to_windows


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    global_blocks: tuple[int, ...]
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    out_dim: int = 256


VIT_CONFIGS: dict[str, ViTConfig] = {
    "vit_b": ViTConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": ViTConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": ViTConfig(1280, 32, 16, (7, 15, 23, 31)),
}


def relative_position_table(table: torch.Tensor, q_len: int, k_len: int) -> torch.Tensor:
    """Gather a (q_len, k_len, C) bias table from learned per-offset embeddings.

    ``table`` holds one row per relative offset (2*L-1 rows). If it was trained for
    another length it is linearly resampled first.
    """
    n_offsets = 2 * max(q_len, k_len) - 1
    if table.shape[0] != n_offsets:
        table = F.interpolate(
            table.T.unsqueeze(0), size=n_offsets, mode="linear"
        ).squeeze(0).T
    q_scale = max(k_len / q_len, 1.0)
    k_scale = max(q_len / k_len, 1.0)
    q_pos = torch.arange(q_len, device=table.device)[:, None] * q_scale
    k_pos = torch.arange(k_len, device=table.device)[None, :] * k_scale
    offsets = (q_pos - k_pos) + (k_len - 1) * k_scale
    return table[offsets.long()]


class RelPosAttention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) grid with decomposed rel-pos bias."""

    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid[1] - 1, head_dim))

    def bias_terms(self, q: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two halves of the decomposed bias from queries q (BN, h*w, d).

        Returns (BN, h, w, h) and (BN, h, w, w): the bias of query (y, x) towards key
        (y', x') is ``bias_h[:, y, x, y'] + bias_w[:, y, x, x']``.
        """
        rh = relative_position_table(self.rel_pos_h, h, h)
        rw = relative_position_table(self.rel_pos_w, w, w)
        q = q.reshape(q.shape[0], h, w, -1)
        return torch.einsum("nyxd,ykd->nyxk", q, rh), torch.einsum("nyxd,xkd->nyxk", q, rw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(b, h * w, 3, heads, c // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).reshape(3, b * heads, h * w, c // heads)
        # The bias is computed from the unscaled queries, as in the trained models.
        bias_h, bias_w = self.bias_terms(q, h, w)
        out = attend_with_decomposed_bias(q, k, v, bias_h.to(q.dtype), bias_w.to(q.dtype))
        out = out.reshape(b, heads, h, w, c // heads).permute(0, 2, 3, 1, 4)
        return self.proj(out.reshape(b, h, w, c))


# Query rows per step when the full (h*w, h*w) bias would be large: global attention at
# 64x64 has a 4096 x 4096 bias per head, which costs more to write and read than to use.
_CHUNK_TOKENS = 1024


def attend_with_decomposed_bias(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias_h: torch.Tensor, bias_w: torch.Tensor,
    per_head: bool | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for q, k, v (N, h*w, d), bias from its two halves.

    Small grids (windows) get the whole bias at once; large ones are done per band of query
    rows, so the bias never exists for more than ``_CHUNK_TOKENS`` queries: per head on a
    CPU, where that keeps it in cache, and for all heads at once on a GPU, where the number
    of kernel launches is what costs (``per_head`` None: by the device).
    """
    n, h, w, _ = bias_h.shape
    tokens = h * w
    if tokens <= _CHUNK_TOKENS:
        bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(n, tokens, tokens)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out = torch.empty_like(v)
    rows = max(1, _CHUNK_TOKENS // w)
    on_cpu = q.device.type == "cpu"
    per_head = on_cpu if per_head is None else per_head
    scale = q.shape[-1] ** -0.5
    for heads in ([slice(i, i + 1) for i in range(n)] if per_head else [slice(0, n)]):
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            band = slice(y0 * w, y1 * w)
            bias = bias_h[heads, y0:y1, :, :, None] + bias_w[heads, y0:y1, :, None, :]
            bias = bias.reshape(-1, (y1 - y0) * w, tokens)
            if q.dtype == torch.float32 or not on_cpu:
                out[heads, band] = F.scaled_dot_product_attention(q[heads, band], k[heads], v[heads], attn_mask=bias)
            else:
                # In bfloat16 the explicit form is faster on CPUs than the fused kernel.
                scores = torch.baddbmm(bias, q[heads, band], k[heads].transpose(1, 2), alpha=scale)
                out[heads, band] = torch.bmm(scores.softmax(-1), v[heads])
    return out


class ViTBlock(nn.Module):
    """Pre-norm transformer block; ``window`` > 0 restricts attention to local windows."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window: int, grid: int) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_grid = (window, window) if window else (grid, grid)
        self.attn = RelPosAttention(dim, num_heads, attn_grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window:
            hw = y.shape[1:3]
            y, padded = to_windows(y, self.window)
            y = from_windows(self.attn(y), padded, hw)
        else:
            y = self.attn(y)
        x = add_(y, x)
        return add_(self.mlp(self.norm2(x)), x)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens, channels last (keys ``proj.*``)."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ViTDetEncoder(nn.Module):
    """SAM's ViT image encoder: (B, 3, 1024, 1024) -> (B, 256, 64, 64)."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        cfg = VIT_CONFIGS[arch]
        self.img_size = architecture(arch).img_size
        grid = self.img_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                window=0 if i in cfg.global_blocks else cfg.window_size,
                grid=grid,
            )
            for i in range(cfg.depth)
        )
        self.neck = make_neck(cfg.embed_dim, cfg.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
