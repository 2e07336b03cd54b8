"""SAM 2.1's image encoder: the Hiera trunk and an FPN neck that brings its stages to 256
channels, each with its sine position code."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .hiera import Hiera, HieraConfig
from .sine_positions import sine_positions


class FpnNeck(nn.Module):
    """1x1 lateral convolutions to ``dim`` channels (keys ``convs.{i}.conv.*``, lowest
    resolution first, like ``channels``), with the next coarser level's output added,
    nearest-upsampled 2x, only at ``top_down_levels`` (counted from the highest resolution;
    the others keep their lateral features alone)."""

    def __init__(self, channels: Sequence[int], dim: int = 256, top_down_levels: Sequence[int] = (2, 3)) -> None:
        super().__init__()
        self.dim = dim
        self.top_down_levels = tuple(top_down_levels)
        self._positions: dict[tuple[int, int, int], torch.Tensor] = {}
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(c, dim, kernel_size=1))) for c in channels
        )

    def forward(self, xs: Sequence[torch.Tensor], with_positions: bool = True
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Stage outputs, highest resolution first -> (features, position codes), each a list
        of (B, dim, H_i, W_i) in the same order; no codes (an empty list) without
        ``with_positions``."""
        if len(xs) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} feature maps, got {len(xs)}")
        last = len(xs) - 1
        features: list[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        coarser = None
        for i in range(last, -1, -1):
            x = self.convs[last - i](xs[i])
            if coarser is not None and i in self.top_down_levels:
                x = x + F.interpolate(coarser, scale_factor=2.0, mode="nearest")
            features[i] = coarser = x
        positions = [self.position_code(f) for f in features] if with_positions else []
        return features, positions

    def position_code(self, x: torch.Tensor) -> torch.Tensor:
        """The sine position code of a (B, C, H, W) map, (B, C, H, W) in its dtype.

        The code depends on the shape alone, so it is made once per shape, device and dtype
        (the largest is 64 MB, slower to write than to keep) and every call returns an
        expanded view of it: read it, never write into it.
        """
        b, c, h, w = x.shape
        code = self._positions.get((c, h, w))
        if code is None or code.device != x.device or code.dtype != x.dtype:
            with torch.inference_mode(False), torch.no_grad():  # usable outside inference mode too
                code = sine_positions(h, w, c, x.device).to(x.dtype)
            self._positions[c, h, w] = code
        return code[None].expand(b, -1, -1, -1)


class Sam2ImageEncoder(nn.Module):
    """(B, 3, 1024, 1024) -> (features, position codes): three 256-channel levels,
    (B, 256, 256, 256), (B, 256, 128, 128), (B, 256, 64, 64), highest resolution first.
    The last is the image embedding; the trunk's coarsest level only feeds it top-down and is
    not returned."""

    img_size = 1024

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        self.trunk = Hiera(config)
        self.neck = FpnNeck(config.backbone_channel_list)

    def forward(self, x: torch.Tensor, with_positions: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """See the class; ``with_positions=False`` skips the position codes (a frame's
        encoding needs none: they depend on the grid alone)."""
        features, positions = self.neck(self.trunk(x), with_positions)
        return features[:-1], positions[:-1]
