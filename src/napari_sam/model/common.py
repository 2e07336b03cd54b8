"""Small layers shared by the SAM image encoders, prompt encoder and mask decoder."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # torch < 2.3: no cuDNN attention backend to avoid either
    sdpa_kernel = None


def _without_cudnn(q: torch.Tensor) -> AbstractContextManager:
    if sdpa_kernel is None or not q.is_cuda:
        return nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, never on cuDNN's kernel.

    On an H200 in bf16, PyTorch picked cuDNN's attention, which spent about 4 ms of CPU per
    call planning (the memory bank's key length changes from frame to frame): SAM 2
    tracking ran 2x slower in bf16 than in float32. Flash attention takes those shapes.
    """
    with _without_cudnn(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


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


def mask_upscaling(dim: int) -> nn.Sequential:
    """SAM's (and SAM 2's) mask decoder upscaling: two 2x transposed convolutions, from
    ``dim`` to ``dim // 8`` channels (keys ``output_upscaling.{0,1,3}``)."""
    return nn.Sequential(
        nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
        LayerNorm2d(dim // 4),
        GELU(),
        nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
        GELU(),
    )


def make_neck(in_dim: int, out_dim: int = 256) -> nn.Sequential:
    """The encoders' projection to the 256-channel embedding (keys ``neck.0`` .. ``neck.3``)."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False),
        LayerNorm2d(out_dim),
        nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_dim),
    )


def to_windows(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split (B, H, W, C) into (B*nW, size, size, C) windows, zero-padding H and W at the end
    (both encoders, ViTDet and TinyViT, window their attention this way)."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % size, (-w) % size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // size, size, wp // size, size, c).transpose(2, 3)
    return x.reshape(-1, size, size, c), (hp, wp)


def from_windows(windows: torch.Tensor, padded: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_windows`: reassemble and crop the padding."""
    hp, wp = padded
    size, c = windows.shape[1], windows.shape[-1]
    b = windows.shape[0] // ((hp // size) * (wp // size))
    x = windows.reshape(b, hp // size, wp // size, size, size, c).transpose(2, 3)
    x = x.reshape(b, hp, wp, c)
    return x[:, : hw[0], : hw[1]]
