"""TinyViT image encoder of MobileSAM ("vit_t") and LiteMedSAM ("lite_medsam").

The network is a four-stage hierarchy: a convolutional stem, one stage of
inverted-residual (MBConv) blocks, then three stages of windowed-attention
blocks, each stage but the last ending in a convolutional patch-merging step.
A 1x1/3x3 convolutional neck maps the last stage to SAM's 256-channel,
64x64 image embedding.

Both variants share every layer size; they differ only in the stem.  MobileSAM
reads a 1024 px image and its stem downsamples by 4 with two stride-2 3x3
convolutions; LiteMedSAM reads a 256 px image and its stem is two 1x1,
stride-1 convolutions.  Either way the first stage sees a 256x256 grid.

Module and parameter names follow the released checkpoints so that their
``image_encoder.*`` weights load strictly, except for the classification head
(``head.*``, ``norm_head.*``) which SAM never uses and this module omits.
This is an inference-only model: no dropout or stochastic depth.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .architectures import architecture
from .common import GELU, add_, from_windows, gelu_, make_neck, to_windows

__all__ = ["TinyViTConfig", "TINY_VIT_CONFIGS", "TinyViTEncoder", "relative_bias_index"]


@dataclass(frozen=True)
class TinyViTConfig:
    """Shape of one TinyViT encoder.

    Stage 0 is convolutional, so ``num_heads[0]`` and ``window_sizes[0]`` are unused.
    ``merge_strides[i]`` is the stride of the patch merging that ends stage ``i``.
    """

    stem_kernel: int
    stem_stride: int
    dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    merge_strides: tuple[int, ...] = (2, 2, 1)
    mlp_ratio: int = 4
    mbconv_expand_ratio: int = 4
    out_chans: int = 256


TINY_VIT_CONFIGS: dict[str, TinyViTConfig] = {
    "vit_t": TinyViTConfig(stem_kernel=3, stem_stride=2),
    "lite_medsam": TinyViTConfig(stem_kernel=1, stem_stride=1),
}


def relative_bias_index(window: int) -> torch.Tensor:
    """(N, N) table, N = window**2, mapping a query/key pair to its bias column.

    Tokens are numbered row-major inside the window.  The bias of a pair depends
    only on their absolute offset (|dy|, |dx|), stored at column ``|dy| * window + |dx|``.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return dy * window + dx


class ConvBN(nn.Sequential):
    """Bias-free convolution followed by BatchNorm (keys ``c.*`` and ``bn.*``)."""

    def __init__(
        self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        conv = nn.Conv2d(
            in_chans, out_chans, kernel, stride, padding=kernel // 2, groups=groups, bias=False
        )
        super().__init__(OrderedDict(c=conv, bn=nn.BatchNorm2d(out_chans)))


class PatchEmbed(nn.Module):
    """Stem: two ConvBN layers with a GELU between them."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        # The GELU sits at index 1 so that the convolutions are ``seq.0`` and ``seq.2``.
        self.seq = nn.Sequential(
            ConvBN(in_chans, dim // 2, kernel, stride),
            GELU(),
            ConvBN(dim // 2, dim, kernel, stride),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, add, GELU."""

    def __init__(self, dim: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = dim * expand_ratio
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, kernel=3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = gelu_(self.conv1(x))
        y = gelu_(self.conv2(y))
        return gelu_(add_(self.conv3(y), x))


class PatchMerging(nn.Module):
    """Change width (1x1), optionally halve resolution (3x3 depthwise), mix (1x1)."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, kernel=3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = gelu_(self.conv1(x))
        x = gelu_(self.conv2(x))
        return self.conv3(x)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window, with a learned relative-position bias.

    Takes ``(num_windows * B, window**2, C)``; the input LayerNorm is part of this module.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("bias_index", relative_bias_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_win, n_tok, dim = x.shape
        qkv = self.qkv(self.norm(x))
        # The projection's output is grouped by head first, then (q, k, v) within a head.
        qkv = qkv.view(n_win, n_tok, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=-1)
        bias = self.attention_biases[:, self.bias_index]  # (heads, N, N), broadcast over windows
        # The default scale 1/sqrt(head_dim) is the one TinyViT uses.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])
        return self.proj(out.transpose(1, 2).reshape(n_win, n_tok, dim))


class MLP(nn.Module):
    """Pre-norm feed-forward block: LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depthwise 3x3 ConvBN (not residual), MLP (residual).

    Works on channels-last maps ``(B, H, W, C)``.
    """

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = MLP(dim, dim * mlp_ratio)
        self.local_conv = ConvBN(dim, dim, kernel=3, groups=dim)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        ws, c = self.window, x.shape[-1]
        # Zero padding happens before the attention's LayerNorm, so padded tokens
        # act as (normalised) keys; that is how the released weights were trained.
        windows, padded = to_windows(x, ws)
        out = self.attn(windows.reshape(-1, ws * ws, c))
        return from_windows(out.view(-1, ws, ws, c), padded, x.shape[1:3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = add_(self._attend(x), x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return add_(self.mlp(x), x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks, then patch merging. Channels-first in and out."""

    def __init__(self, dim: int, depth: int, expand_ratio: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1-3: TinyViT blocks, then patch merging if not last. Channels-first in and out."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: int,
        merge: tuple[int, int] | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, mlp_ratio) for _ in range(depth)
        )
        self.downsample = PatchMerging(dim, *merge) if merge is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class TinyViTEncoder(nn.Module):
    """TinyViT image encoder: ``(B, 3, S, S)`` -> ``(B, 256, 64, 64)``.

    ``variant`` is ``"vit_t"`` (MobileSAM, S = 1024) or ``"lite_medsam"`` (S = 256).
    """

    def __init__(self, variant: str) -> None:
        super().__init__()
        try:
            cfg = TINY_VIT_CONFIGS[variant]
        except KeyError:
            raise ValueError(
                f"unknown TinyViT variant {variant!r}; expected one of {sorted(TINY_VIT_CONFIGS)}"
            ) from None
        self.variant = variant
        self.config = cfg
        self.img_size = architecture(variant).img_size

        dims = cfg.dims
        self.patch_embed = PatchEmbed(3, dims[0], cfg.stem_kernel, cfg.stem_stride)
        conv_stage = ConvStage(
            dims[0], cfg.depths[0], cfg.mbconv_expand_ratio, dims[1], cfg.merge_strides[0]
        )
        stages: list[nn.Module] = [conv_stage]
        for i in range(1, len(dims)):
            last = i == len(dims) - 1
            stages.append(
                AttentionStage(
                    dims[i],
                    cfg.depths[i],
                    cfg.num_heads[i],
                    cfg.window_sizes[i],
                    cfg.mlp_ratio,
                    merge=None if last else (dims[i + 1], cfg.merge_strides[i]),
                )
            )
        self.layers = nn.ModuleList(stages)
        self.neck = make_neck(dims[-1], cfg.out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.img_size,) * 2:
            raise ValueError(
                f"{self.variant} expects input (B, 3, {self.img_size}, {self.img_size}), "
                f"got {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.neck(x)
