"""Small layers shared by the SAM image encoders, prompt encoder and mask decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """GELU of a temporary ``x``, written over ``x`` when no gradient is recorded for it.

    On a CPU a fresh buffer of tens of MB costs more (page faults) than the GELU itself,
    so inference reuses the input's memory. The result is the same to the bit.
    """
    return F.gelu(x) if x.requires_grad else torch.ops.aten.gelu_(x)


def add_(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``x + other``, written over the temporary ``x`` when no gradient is recorded for it."""
    return x + other if x.requires_grad or other.requires_grad else x.add_(other)


class GELU(nn.Module):
    """:func:`gelu_` as a module: in place on a temporary input during inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_(x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class FeedForward(nn.Module):
    """Two linear layers with an activation between them (keys ``lin1``/``lin2``)."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class StackedLinear(nn.Module):
    """``depth`` linear layers with ReLU between them (keys ``layers.{i}``)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, depth: int) -> None:
        super().__init__()
        dims = [dim_in] + [hidden] * (depth - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = torch.relu(x)
        return x


def make_neck(in_dim: int, out_dim: int = 256) -> nn.Sequential:
    """The encoders' projection to the 256-channel embedding (keys ``neck.0`` .. ``neck.3``)."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False),
        LayerNorm2d(out_dim),
        nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_dim),
    )
