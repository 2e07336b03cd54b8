"""The fixed sine/cosine position code of a feature grid, as SAM 2's FPN neck and memory
encoder use it (the transformer kind, in two dimensions: half the channels code the row,
half the column)."""

from __future__ import annotations

import math

import torch


def sine_positions(h: int, w: int, channels: int, device: torch.device | str | None = None,
                   temperature: float = 10000.0) -> torch.Tensor:
    """Position code of an ``h`` x ``w`` grid, (channels, h, w), float32.

    Rows and columns are numbered from 1 and scaled so that the last one sits at 2*pi.
    Each half of the channels holds (sin, cos) pairs of that coordinate over frequencies
    ``temperature ** (-2i / (channels / 2))``; the row half comes first.
    """
    if channels % 4:
        raise ValueError(f"channels must be a multiple of 4, got {channels}")
    half = channels // 2
    eps = 1e-6
    rows = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + eps) * (2 * math.pi)
    cols = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + eps) * (2 * math.pi)
    pair = torch.arange(half, dtype=torch.float32, device=device) // 2
    freq = temperature ** (2 * pair / half)

    def code(t: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, half) interleaved sin, cos
        angles = t[:, None] / freq
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    by_row = code(rows)[:, None, :].expand(h, w, half)
    by_col = code(cols)[None, :, :].expand(h, w, half)
    return torch.cat((by_row, by_col), dim=2).permute(2, 0, 1).contiguous()
