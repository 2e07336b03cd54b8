"""What the model sees: validate a 2D plane, map any dtype to 0-255 intensities, and
resize + pad it to the model's square input. Pure numpy/torch, no napari."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Percentiles for mapping non-uint8 data: robust to hot pixels and dark offsets.
DEFAULT_PERCENTILES = (1.0, 99.8)

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def as_plane(image: object) -> np.ndarray:
    """Check that ``image`` is one 2D plane, (H, W) or (H, W, C) with C in 1, 3, 4.

    Raises TypeError for non-numeric data and ValueError for wrong shapes, empty arrays
    or planes with no finite value; the message says what to pass instead.
    """
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"image must be numeric (integer, float or bool), got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError("complex images are not supported: pass np.abs(image) or the real part")
    if arr.size == 0:
        raise ValueError(f"image is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"got shape {arr.shape}: a 3D array must be (H, W, C) with C = 1, 3 or 4 channels last. "
            "For a z/t stack pass one plane (image[z]); for channels-first data move the axis "
            "(np.moveaxis(image, 0, -1)) or pick one channel."
        )
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"expected one 2D plane, (H, W) or (H, W, C); got {arr.ndim}D shape {arr.shape}. "
            "Slice stacks to one plane first (e.g. image[t, z])."
        )
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(f"image plane of shape {arr.shape[:2]} is too small to segment")
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # drop alpha
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).any():
        raise ValueError("image plane has no finite values (all NaN or inf)")
    return arr


def to_intensity(plane: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Map a validated plane to (H, W, 3) intensities on the 0-255 scale.

    uint8 data is kept exactly (parity with the reference implementations); any other
    dtype is stretched between the given percentiles of its finite values, clipped, and
    NaN/inf become the low end.
    """
    if plane.dtype == np.uint8:
        out = plane
    else:
        out = _stretch(plane.astype(np.float32, copy=False), percentiles)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return out


def _stretch(x: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    finite = np.isfinite(x)
    values = x[finite] if not finite.all() else x
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:  # flat plane (or all outliers): fall back to the full range
        lo, hi = float(values.min()), float(values.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.clip((x - lo) * scale, 0.0, 255.0)
    out[~finite] = 0.0
    return out.astype(np.float32, copy=False)


def resized_shape(shape: tuple[int, int], target: int) -> tuple[int, int]:
    """(h, w) after scaling the longest side to ``target`` (rounded half up)."""
    h, w = shape
    scale = target / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Resize (H, W, 3) intensities to ``size`` -> float tensor (3, h, w), 0-255 scale.

    uint8 goes through Pillow's bilinear filter, exactly as the reference SAM predictor;
    float data through an antialiased bilinear filter of the same kind.
    """
    h, w = size
    if rgb.shape[:2] == (h, w):
        return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
    if rgb.dtype == np.uint8:
        small = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        return torch.from_numpy(small.copy()).permute(2, 0, 1).float()
    t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]


def normalise_for_model(rgb: torch.Tensor, normalisation: str) -> torch.Tensor:
    """Apply a model's input normalisation to (3, h, w) 0-255 intensities."""
    if normalisation == "sam":
        mean = rgb.new_tensor(SAM_PIXEL_MEAN)[:, None, None]
        std = rgb.new_tensor(SAM_PIXEL_STD)[:, None, None]
        return (rgb - mean) / std
    if normalisation == "minmax":
        lo, hi = rgb.min(), rgb.max()
        return (rgb - lo) / torch.clamp(hi - lo, min=1e-8)
    raise ValueError(f"unknown normalisation {normalisation!r}")


def model_input(
    plane: np.ndarray, img_size: int, normalisation: str,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """A validated plane -> padded model input (1, 3, S, S) and the resized (h, w)."""
    rgb = to_intensity(plane, percentiles)
    size = resized_shape(rgb.shape[:2], img_size)
    x = normalise_for_model(resize_rgb(rgb, size), normalisation)
    x = F.pad(x, (0, img_size - size[1], 0, img_size - size[0]))
    return x[None], size
