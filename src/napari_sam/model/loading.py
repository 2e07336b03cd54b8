"""``load_model``: registry name or checkpoint path -> a ready SAM on the chosen device."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .architectures import ARCHITECTURES, architecture, recognise
from .checkpoint import CheckpointError, load_state_dict, read_checkpoint
from .sam import Sam

if TYPE_CHECKING:
    from .sam2 import Sam2
from .fast import apply_precision, resolve_precision
from .registry import ModelSpec, get_spec


def spec_for(name_or_path: str | Path, model_type: str | None = None) -> tuple[ModelSpec, Path | None]:
    """The registry spec for a name, or an ad-hoc spec for a local checkpoint file."""
    path = Path(name_or_path).expanduser()
    looks_like_path = isinstance(name_or_path, Path) or path.suffix in (".pth", ".pt", ".ckpt") or path.exists()
    if not looks_like_path:
        spec = get_spec(str(name_or_path))
        if model_type is not None and model_type != spec.arch:
            raise ValueError(f"model {spec.name!r} is a {spec.arch}; model_type={model_type!r} contradicts it")
        return spec, None
    if model_type is not None and model_type not in ARCHITECTURES:
        raise ValueError(f"model_type must be one of {ARCHITECTURES}, got {model_type!r}")
    arch = model_type or "unknown"
    spec = ModelSpec(name=path.stem, arch=arch, title=f"local checkpoint {path.name}", filename=path.name)
    return spec, path


def build(arch: str) -> Sam | Sam2:
    """An untrained network of architecture ``arch``: SAM (1) or, for a Hiera encoder, SAM 2.1."""
    if architecture(arch).tracks_with_memory:
        from .sam2 import Sam2

        return Sam2(arch)
    return Sam(arch)


def load_model(
    name_or_path: str | Path = "lite_medsam",
    model_type: str | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    progress: Callable[[int, int | None], None] | None = None,
) -> Sam | Sam2:
    """Build a SAM-family model and load its weights.

    ``name_or_path`` is a registry name (``lite_medsam``, ``vit_b``, ``vit_l``, ``vit_h``,
    ``vit_t``, ``sam2.1_hiera_t``, ...) or a checkpoint file; for a file, ``model_type`` names the architecture
    (guessed from the weights when omitted). Downloads report ``progress(done, total)``.
    ``precision``: "fp32" is the exact path; "bf16" runs the image encoder in bfloat16
    (see :mod:`napari_sam.model.fast`); "auto" takes bf16 where the CPU or GPU runs it
    natively, fp32 elsewhere.
    The returned module carries ``.spec`` (what it is and is good at) and ``.precision``.
    """
    from ..device import select_device
    from ..errors import friendly_oom
    from .weights import resolve_checkpoint

    spec, path = spec_for(name_or_path, model_type)
    if path is None:
        path = resolve_checkpoint(spec, progress=progress)
    state = read_checkpoint(path)
    arch = spec.arch
    if arch == "unknown":
        arch = recognise(state)
        if arch is None:
            raise CheckpointError(f"cannot tell the architecture of {path}: pass model_type (one of {ARCHITECTURES})")
        spec = dataclasses.replace(spec, arch=arch)
    model = build(arch)
    load_state_dict(model, state, arch, spec.unused_prefixes)
    dev = device if isinstance(device, torch.device) else select_device(device)
    chosen = resolve_precision(precision, dev)  # a bad value fails before the weights move
    with friendly_oom("loading the weights", spec.name, dev):
        model = model.to(dev).eval()
    model.spec = spec
    return apply_precision(model, chosen)
