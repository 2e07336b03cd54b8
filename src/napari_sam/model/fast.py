"""The fast inference path: the image encoder in bfloat16 and channels-last, TinyViT's
BatchNorms folded into their convolutions; the mask decoder's matrix products under bf16
autocast (its weights and LayerNorms stay float32).

``precision="fp32"`` leaves the network exactly as loaded (the reference-parity path).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

PRECISIONS = ("auto", "fp32", "bf16")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively (and so faster than float32) on ``device``.

    CUDA: GPUs that support bf16 (Ampere and newer). CPU: oneDNN's bf16 kernels, which need
    AVX-512 BF16 or AMX; elsewhere bf16 is emulated and slower than float32. MPS: no.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The numeric path to run on ``device``: "fp32" (exact) or "bf16" (fast).

    "auto" takes bf16 where the hardware runs it natively, float32 elsewhere.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if precision == "bf16" and device.type == "mps":
        raise ValueError("bf16 is not supported on Apple MPS here: use precision='fp32'")
    return precision


def fold_batchnorms(module: nn.Module) -> int:
    """Fold every eval-mode ``Conv2d`` + ``BatchNorm2d`` pair of TinyViT's ConvBN blocks
    (children ``c`` and ``bn``) into one biased convolution, in place. Returns how many."""
    folded = 0
    for block in module.modules():
        conv, bn = getattr(block, "c", None), getattr(block, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            block.c = fuse_conv_bn_eval(conv.eval(), bn.eval())
            block.bn = nn.Identity()
            folded += 1
    return folded


def apply_precision(model: nn.Module, precision: str) -> nn.Module:
    """Put ``model`` (a :class:`~napari_sam.model.Sam`) on the numeric path ``precision``
    ("fp32" or "bf16", already resolved), in place, and record it as ``model.precision``.

    bf16 is one-way: fold and cast a freshly loaded model, or load it again for fp32.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16' here (resolve 'auto' first), got {precision!r}")
    current = getattr(model, "precision", "fp32")
    if current == "bf16" and precision == "fp32":
        raise ValueError("this model already runs in bf16; load it again with precision='fp32'")
    if precision == "bf16" and current != "bf16":
        with torch.no_grad():
            fold_batchnorms(model.image_encoder)
            # Channels-last spares oneDNN a layout reorder around every bf16 convolution.
            model.image_encoder.to(torch.bfloat16, memory_format=torch.channels_last)
    model.precision = precision
    return model


def encoder_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, 3, S, S) moved to the image encoder's device, dtype and memory layout."""
    weight = next(model.image_encoder.parameters())
    if getattr(model, "precision", "fp32") == "bf16":
        return x.to(weight.device, weight.dtype, memory_format=torch.channels_last)
    return x.to(weight.device, weight.dtype)


def decoder_autocast(model: nn.Module) -> AbstractContextManager:
    """Context for answering a prompt with ``model``'s prompt encoder and mask decoder:
    bf16 autocast on the CPU fast path (the 4096 image tokens' projections dominate a
    prompt there). On a GPU the decoder's kernels are too small for bf16 to pay: measured
    on an H200, autocast made a vit_b prompt slower (8.3 ms against 5.7 ms in float32), so
    the decoder stays float32 there."""
    device = next(model.parameters()).device
    if getattr(model, "precision", "fp32") != "bf16" or device.type != "cpu":
        return nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def memory_autocast(model: nn.Module) -> AbstractContextManager:
    """Context for a SAM 2 tracking step (memory attention over tens of thousands of
    memory tokens, the decoder, the memory encoder): bf16 autocast on the fast path, on
    any device (it halves a step on an H200 and saves a tenth on a CPU)."""
    if getattr(model, "precision", "fp32") != "bf16":
        return nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)
