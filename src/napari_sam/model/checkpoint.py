"""Reading checkpoint files and loading them strictly, with errors that name the mismatch."""

from __future__ import annotations

import zipfile
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from .architectures import recognise

# Training scripts (micro-sam, MedSAM, lightning) wrap the state dict under one of these.
_WRAPPER_KEYS = ("model_state", "model", "state_dict")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the requested architecture."""


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file onto the CPU and unwrap it to a flat state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:200]  # torch's first line; the rest is advice for pickles
        raise CheckpointError(
            f"could not read checkpoint {path}: it is not a PyTorch checkpoint, or one that is truncated or "
            f"corrupt ({type(exc).__name__}: {reason}). If it was downloaded, delete it and download it "
            "again (napari-sam download NAME)."
        ) from exc
    while isinstance(obj, Mapping) and not _looks_like_state(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise CheckpointError(f"{path} holds no SAM state dict (top-level keys: {sorted(obj)[:8]})")
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {_strip_wrapper_prefix(k): v for k, v in obj.items()}


_SAM_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


def _strip_wrapper_prefix(key: str) -> str:
    # micro-sam training checkpoints prefix every SAM key with "sam.".
    if key.startswith("sam.") and key[4:].startswith(_SAM_PARTS):
        return key[4:]
    return key


def _looks_like_state(obj: Mapping) -> bool:
    return any(isinstance(k, str) and k.startswith(("image_encoder.", "sam.image_encoder.")) for k in obj)


def load_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str,
                    unused_prefixes: Iterable[str] = ()) -> None:
    """Load ``state`` strictly into ``model``; keys under ``unused_prefixes`` are dropped first.

    Raises :class:`CheckpointError` naming the architecture mismatch or the offending keys.
    """
    prefixes = tuple(unused_prefixes)
    state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    found = recognise(state)
    if found is not None and found != arch:
        raise CheckpointError(
            f"this checkpoint is a {found} model, but {arch} was requested: "
            f"pass model_type={found!r} (or pick the matching registry entry)"
        )
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong_shape:
            k = wrong_shape[0]
            details.append(
                f"{len(wrong_shape)} with other shapes (e.g. {k}: checkpoint "
                f"{tuple(state[k].shape)} vs {arch} {tuple(own[k].shape)})"
            )
        raise CheckpointError(f"checkpoint does not fit architecture {arch}: " + "; ".join(details))
    model.load_state_dict(state, strict=True)
