"""The two-way transformer of SAM's mask decoder: prompt tokens and image tokens attend
to each other in turn.

What the first block computes from the image alone (its keys, values and queries) does not
depend on the prompt; :meth:`TwoWayTransformer.prepare_image` computes it once per image
embedding so that each prompt pays only for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import FeedForward, attention


class ProjectedAttention(nn.Module):
    """Multi-head attention whose q/k/v live in a space ``downsample`` times narrower."""

    def __init__(self, dim: int, num_heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        if inner % num_heads:
            raise ValueError("num_heads must divide dim // downsample")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def heads(self, proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """Project (B, N, dim) tokens with ``proj`` and split them into (B, heads, N, d)."""
        x = proj(x)
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over already projected heads; returns (B, N, dim)."""
        if q.shape[0] != k.shape[0]:  # one image's keys and values serve a batch of prompts
            b = max(q.shape[0], k.shape[0])
            q, k, v = (t.expand(b, -1, -1, -1) for t in (q, k, v))
        out = attention(q, k, v)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.heads(self.q_proj, q), self.heads(self.k_proj, k), self.heads(self.v_proj, v))


@dataclass(frozen=True)
class PreparedImage:
    """Prompt-independent image side of the transformer for one image (+ dense) embedding.

    ``image`` and ``pe`` are (1 or B, HW, C) tokens; ``keys``, ``values`` and ``queries``
    are the first block's projections of them, (1 or B, heads, HW, d).
    """

    image: torch.Tensor
    pe: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    queries: torch.Tensor


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image, token MLP, image->token (each with a LayerNorm)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.self_attn = ProjectedAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = ProjectedAttention(dim, num_heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim, act=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = ProjectedAttention(dim, num_heads, downsample)

    def project_image(self, image: torch.Tensor, image_pe: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The image-only projections: token->image keys and values, image->token queries."""
        image_k = image + image_pe
        to_image, to_token = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return (to_image.heads(to_image.k_proj, image_k), to_image.heads(to_image.v_proj, image),
                to_token.heads(to_token.q_proj, image_k))

    def forward(
        self,
        tokens: torch.Tensor,
        image: torch.Tensor,
        token_pe: torch.Tensor,
        image_pe: torch.Tensor,
        projected: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            # The first block replaces the tokens: their positional part is still in them.
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)

        keys, values, queries = projected if projected is not None else self.project_image(image, image_pe)
        to_image, to_token = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        tokens = self.norm2(tokens + to_image.attend(to_image.heads(to_image.q_proj, tokens + token_pe), keys, values))
        tokens = self.norm3(tokens + self.mlp(tokens))
        attn = to_token.attend(queries, to_token.heads(to_token.k_proj, tokens + token_pe),
                               to_token.heads(to_token.v_proj, tokens))
        image = self.norm4(image + attn)
        return tokens, image


class TwoWayTransformer(nn.Module):
    """Alternating token/image attention blocks, then a last token->image attention."""

    def __init__(self, depth: int = 2, dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048, downsample: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, num_heads, mlp_dim, downsample, first=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = ProjectedAttention(dim, num_heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def prepare_image(self, image: torch.Tensor, image_pe: torch.Tensor) -> PreparedImage:
        """image, image_pe: (1 or B, C, H, W) -> the prompt-independent part of :meth:`forward`."""
        # Contiguous token layout: the adds and projections are several times slower on
        # the strided view that a bare transpose gives.
        image = image.flatten(2).transpose(1, 2).contiguous()
        image_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        return PreparedImage(image, image_pe, *self.layers[0].project_image(image, image_pe))

    def forward(
        self, image: torch.Tensor | PreparedImage, image_pe: torch.Tensor | None, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe: (B, C, H, W), or a :class:`PreparedImage` (and None); tokens:
        (B, N, C). Returns tokens (B, N, C) and image tokens (B, HW, C)."""
        prepared = image if isinstance(image, PreparedImage) else self.prepare_image(image, image_pe)
        image, image_pe = prepared.image, prepared.pe
        token_pe = tokens
        projected = (prepared.keys, prepared.values, prepared.queries)
        for i, layer in enumerate(self.layers):
            tokens, image = layer(tokens, image, token_pe, image_pe, projected if i == 0 else None)
        attn = self.final_attn_token_to_image(tokens + token_pe, image + image_pe, image)
        return self.norm_final_attn(tokens + attn), image
