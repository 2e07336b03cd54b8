"""SAM 2's memory attention: the current frame's image tokens attend to themselves, then to
the memory of other frames (their encoded masks, then the objects' pointer tokens).

Queries and keys carry an axial rotary position code (RoPE) of their cell on the feature
grid: half of the channel pairs turn with the column, half with the row. Every memory frame
lies on the same grid, so the keys repeat the grid's code frame after frame; the pointer
tokens at the end of the memory have no grid cell and are not turned.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import add_, attention


def rotary_angles(grid: int, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Angles (grid*grid, dim/2) of the axial rotary code of a row-major ``grid`` x ``grid``
    token grid: channel pair j < dim/4 turns by column * f_j, pair dim/4 + j by row * f_j,
    with f_j = theta ** (-4j / dim)."""
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    freqs = 1.0 / theta ** (torch.arange(0, dim, 4, dtype=torch.float32) / dim)
    cell = torch.arange(grid * grid, dtype=torch.float32)
    cols, rows = cell % grid, torch.div(cell, grid, rounding_mode="floor")
    return torch.cat((cols[:, None] * freqs, rows[:, None] * freqs), dim=1)


def turns_of(angles: torch.Tensor) -> torch.Tensor:
    """Angles (...) -> their (cos, sin) pairs (..., 2)."""
    return torch.stack((angles.cos(), angles.sin()), dim=-1)


def rotate_(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Turn each channel pair (2i, 2i+1) of ``x`` (..., N, D), read as the complex number
    x[2i] + j x[2i+1], by the unit complex ``turns`` (N, D/2), in float32.

    In place for a float32 ``x`` without gradient (one pass over the keys of all memory
    frames, no copies); returns ``x`` then.
    """
    if x.requires_grad or x.dtype != torch.float32:
        turned = torch.view_as_complex(x.float().unflatten(-1, (-1, 2))) * turns
        return torch.view_as_real(turned).flatten(-2).to(x.dtype)
    torch.view_as_complex(x.unflatten(-1, (-1, 2))).mul_(turns)
    return x


class RotaryAttention(nn.Module):
    """Single-head attention with rotary codes on its queries and on its first keys.

    Keys and values come from ``kv_dim``-channel tokens; the queries are grid tokens.
    """

    def __init__(self, dim: int = 256, kv_dim: int | None = None) -> None:
        super().__init__()
        kv_dim = dim if kv_dim is None else kv_dim
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        turns: torch.Tensor,
        num_unrotated: int = 0,
    ) -> torch.Tensor:
        """queries: (B, N, dim), the tokens of a grid whose rotary code is ``turns`` (N, dim/2,
        complex); keys, values: (B, M, kv_dim), whose first M - ``num_unrotated`` tokens are
        whole frames of that grid. Returns (B, N, dim)."""
        n = queries.shape[1]
        rotated = keys.shape[1] - num_unrotated
        if rotated % n:
            raise ValueError(f"{rotated} rotated keys are not whole frames of {n} tokens")
        q = rotate_(self.q_proj(queries), turns)
        k = self.k_proj(keys)
        if rotated:
            frames = k[:, :rotated].unflatten(1, (-1, n))
            turned = rotate_(frames, turns)
            if turned is not frames:  # turned out of place: gradients are recorded
                k = torch.cat((turned.flatten(1, 2), k[:, rotated:]), dim=1)
        out = attention(q[:, None], k[:, None], self.v_proj(values)[:, None])
        return self.out_proj(out[:, 0])


class MemoryAttentionLayer(nn.Module):
    """Pre-norm self-attention, cross-attention to the memory, and a ReLU feed-forward."""

    def __init__(self, dim: int = 256, memory_dim: int = 64, hidden: int = 2048) -> None:
        super().__init__()
        self.self_attn = RotaryAttention(dim)
        self.cross_attn_image = RotaryAttention(dim, memory_dim)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_keys: torch.Tensor,
        turns: torch.Tensor,
        num_unrotated: int,
    ) -> torch.Tensor:
        """x: (B, N, dim); memory, memory_keys (memory + its position code): (B, M, memory_dim)."""
        h = self.norm1(x)
        x = add_(x, self.self_attn(h, h, h, turns))
        x = add_(x, self.cross_attn_image(self.norm2(x), memory_keys, memory, turns, num_unrotated))
        return add_(x, self.linear2(torch.relu_(self.linear1(self.norm3(x)))))


class MemoryAttention(nn.Module):
    """Conditions the current frame's image tokens on the memory of other frames (SAM 2.1:
    4 layers, 256 channels, 64-channel memory, 64x64 grid)."""

    def __init__(
        self, dim: int = 256, memory_dim: int = 64, depth: int = 4, hidden: int = 2048,
        grid: int = 64, theta: float = 10000.0,
    ) -> None:
        super().__init__()
        self.dim, self.theta = dim, theta
        self.layers = nn.ModuleList(MemoryAttentionLayer(dim, memory_dim, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        # (cos, sin) pairs, real so that a dtype cast of the module keeps them.
        self.register_buffer("rope_turns", turns_of(rotary_angles(grid, dim, theta)), persistent=False)

    def rotary_turns(self, n: int) -> torch.Tensor:
        """The rotary code (n, dim/2), complex64, of n tokens of a square grid."""
        turns = self.rope_turns
        if n != turns.shape[0]:
            grid = round(n**0.5)
            if grid * grid != n:
                raise ValueError(f"{n} tokens are not a square grid")
            turns = turns_of(rotary_angles(grid, self.dim, self.theta).to(turns.device))
        return torch.view_as_complex(turns.float())

    def forward(
        self,
        current: torch.Tensor,
        memory: torch.Tensor,
        current_pos: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        """current, current_pos: (B, HW, dim) image tokens of the frame and their position
        code; memory, memory_pos: (B, M, memory_dim), whole frames of HW tokens followed by
        ``num_obj_ptr_tokens`` object-pointer tokens. Returns (B, HW, dim)."""
        turns = self.rotary_turns(current.shape[1])
        # The position code enters the queries once, weakly, at the input; the memory's
        # enters every cross-attention's keys.
        x = current + 0.1 * current_pos
        memory_keys = memory + memory_pos
        for layer in self.layers:
            x = layer(x, memory, memory_keys, turns, num_obj_ptr_tokens)
        return self.norm(x)
