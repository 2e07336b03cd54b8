"""The errors shared across modules, and friendly ones for what users commonly hit: no Qt
binding, no CUDA, not enough memory.

Each error says what happened and what to do next. Nothing here imports torch or Qt at
module level, so the CLI and napari's plugin discovery stay fast.

- :class:`Cancelled` ends long work whose ``cancel`` callable turned true.
- :class:`QtBindingError` is what importing :mod:`napari_sam._qt` raises without a usable
  Qt binding: an ImportError naming the pip extra (or the system packages) to install.
- :class:`DeviceUnavailableError` is what :func:`napari_sam.device.select_device`
  raises for an explicit device that cannot be used (a RuntimeError, as before).
- :func:`friendly_oom` wraps model work: an out-of-memory error of torch or Python
  becomes :class:`NotEnoughMemoryError` with advice (smaller model, CPU, fewer workers).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "QT_INSTALL_HINT",
    "Cancelled",
    "DeviceUnavailableError",
    "NotEnoughMemoryError",
    "QtBindingError",
    "friendly_oom",
    "is_out_of_memory",
    "memory_message",
]

QT_INSTALL_HINT = 'pip install "napari-sam-kit[pyqt6]"'
QT_APT_PACKAGES = (
    "libgl1 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 "
    "libxcb-render-util0 libxcb-image0 libxcb-xinerama0 libxcb-randr0 libdbus-1-3 libfontconfig1"
)


class QtBindingError(ImportError):
    """napari's Qt side cannot be used: no Qt binding is installed, or it cannot load."""


class Cancelled(RuntimeError):
    """Long work (automatic segmentation, propagation, tracking) stopped because its
    ``cancel`` callable returned True."""


class DeviceUnavailableError(RuntimeError):
    """An explicitly requested torch device (cuda, cuda:N, mps) is not usable here."""


class NotEnoughMemoryError(MemoryError, RuntimeError):
    """Model work ran out of GPU or main memory; the message says what to try.

    Both a MemoryError and a RuntimeError, so code that caught torch's out-of-memory
    error (a RuntimeError) or Python's MemoryError keeps catching it.
    """


# --------------------------------------------------------------------------- memory

# Lower-case fragments of the messages of torch's and the OS's allocation failures:
# CUDA and MPS ("... out of memory"), the CPU allocator on Linux and on Windows.
_OOM_TEXT = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for Python's MemoryError and torch's out-of-memory errors (CUDA, MPS, CPU)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # never import torch just to look at an error
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(getattr(torch, "cuda", None),
                                                                    "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in _OOM_TEXT)


def memory_message(what: str, model: str | None = None, device: object = None, detail: str = "") -> str:
    """The advice for running out of memory during ``what`` (e.g. "embedding a plane")."""
    where = str(device) if device is not None else ""
    on_gpu = where.startswith(("cuda", "mps"))
    head = f"Not enough {'GPU ' if on_gpu else ''}memory for {what}"
    if model:
        head += f" with model '{model}'"
    if where:
        head += f" on {where}"
    if detail:
        head += f" ({detail})"
    tips = []
    if model != "lite_medsam":
        tips.append("a smaller model (lite_medsam or vit_t rather than vit_b, vit_l or vit_h)")
    if on_gpu:
        tips.append("the CPU (device='cpu', or --device cpu on the command line): main memory is usually "
                    "larger than GPU memory")
        tips.append("closing other programs that use the GPU (see nvidia-smi)")
    tips.append("fewer parallel workers (napari-sam segment --workers 1) or smaller images")
    if not on_gpu:
        tips.append("closing other programs to free main memory")
    return f"{head}. Try {'; or '.join(tips)}."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


@contextmanager
def friendly_oom(what: str = "embedding", model: str | None = None, device: object = None) -> Iterator[None]:
    """Turn out-of-memory errors raised inside the block into :class:`NotEnoughMemoryError`.

    Other errors pass unchanged, and so does a NotEnoughMemoryError from an inner block.
    Usage::

        with friendly_oom("embedding a plane", predictor.model_name, predictor.device):
            features = model.image_encoder(x)
    """
    try:
        yield
    except NotEnoughMemoryError:
        raise
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise NotEnoughMemoryError(memory_message(what, model, device, _first_line(exc))) from exc
