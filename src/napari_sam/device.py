"""Pick the torch device: CUDA if usable, then Apple MPS, then CPU, or what the user asks."""

from __future__ import annotations

import re

import torch

from .errors import DeviceUnavailableError

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "cuda:N", "mps")

_CUDA_NAME = re.compile(r"^cuda(?::(\d+))?$")


def select_device(name: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``name`` ("auto", "cpu", "cuda", "cuda:N" or "mps").

    "auto" prefers CUDA, then MPS, then CPU. An explicit device that is not usable raises
    :class:`~napari_sam.errors.DeviceUnavailableError` (a RuntimeError) explaining why and
    what to do; an unknown name raises ValueError listing the choices.
    """
    key = str(name).strip().lower() or "auto"
    if key == "auto":
        return _auto_device()
    if key == "cpu":
        return torch.device("cpu")
    if key == "mps":
        _require_mps()
        return torch.device("mps")
    match = _CUDA_NAME.match(key)
    if match:
        index = int(match.group(1)) if match.group(1) is not None else None
        _require_cuda(index)
        return torch.device(key)
    raise ValueError(f"unknown device {str(name)!r}; choose one of: {', '.join(DEVICE_CHOICES)}")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _auto_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _require_cuda(index: int | None) -> None:
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            why = f"the installed torch ({torch.__version__}) was built without CUDA support"
            fix = "install a CUDA build of PyTorch (https://pytorch.org/get-started/locally/)"
        else:
            why = (
                f"this torch build ({torch.__version__}) supports CUDA {torch.version.cuda}, "
                "but no usable NVIDIA GPU or driver was found"
            )
            fix = "check `nvidia-smi`, the driver version and CUDA_VISIBLE_DEVICES"
        raise DeviceUnavailableError(
            f"CUDA was requested but torch.cuda.is_available() is False: {why}. "
            f"To use the GPU, {fix}; otherwise use device='cpu' (or 'auto')."
        )
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise DeviceUnavailableError(
            f"cuda:{index} was requested but only {count} CUDA device(s) are visible "
            f"(cuda:0 to cuda:{count - 1}); check CUDA_VISIBLE_DEVICES or pick another index."
        )


def _require_mps() -> None:
    if _mps_available():
        return
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_built():
        why = f"this torch build ({torch.__version__}) was built without MPS support"
    else:
        why = "MPS needs a Mac with Apple silicon (or an AMD GPU) and macOS 12.3 or later"
    raise DeviceUnavailableError(
        f"MPS was requested but torch.backends.mps.is_available() is False: {why}. Use device='cpu' (or 'auto')."
    )
