"""What the model sees: validate a 2D plane, map any dtype to 0-255 intensities, and
resize + pad it to the model's square input. Pure numpy/torch, no napari."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def finite(x: np.ndarray) -> np.ndarray:
    """``x`` with NaN and infinities replaced by its lowest finite value (0 if it has none),
    as a float32 copy; ``x`` itself when all its values are finite."""
    ok = np.isfinite(x)
    if ok.all():
        return x
    return np.where(ok, x, float(x[ok].min()) if ok.any() else 0.0).astype(np.float32)


def intensity_limits(plane: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> tuple[float, float]:
    """The (low, high) values that :func:`to_intensity` maps to 0 and 255.

    Computed once per plane, they can be passed back for crops of it, so that a crop is
    shown to the model with the plane's contrast rather than a re-stretch of its own noise.
    uint8 planes are kept as they are: (0, 255).
    """
    if plane.dtype == np.uint8:
        return 0.0, 255.0
    x = plane.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    values = x[finite] if not finite.all() else x
    if values.size == 0:
        raise ValueError("image plane has no finite values (all NaN or inf)")
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:  # flat plane (or all outliers): fall back to the full range
        lo, hi = values.min(), values.max()
    return float(lo), float(hi)


def to_intensity(
    plane: np.ndarray,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    limits: tuple[float, float] | None = None,
) -> np.ndarray:
    """Map a validated plane to (H, W, 3) intensities on the 0-255 scale.

    uint8 data is kept exactly (parity with the reference implementations); any other
    dtype is stretched between ``limits`` (default: the given percentiles of its finite
    values, see :func:`intensity_limits`), clipped, and NaN/inf become the low end.
    """
    if plane.dtype == np.uint8:
        out = plane
    else:
        lo, hi = intensity_limits(plane, percentiles) if limits is None else _check_limits(limits)
        out = _stretch(plane.astype(np.float32, copy=False), lo, hi)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return out


def _check_limits(limits: object) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in limits)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"limits must be two numbers (low, high), got {limits!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ValueError(f"limits must be finite with low <= high, got {limits!r}")
    return lo, hi


def _stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.clip((x - lo) * scale, 0.0, 255.0)
    out[~np.isfinite(x)] = 0.0
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
    limits: tuple[float, float] | None = None, fit: str = "pad",
) -> tuple[torch.Tensor, tuple[int, int]]:
    """A validated plane -> padded model input (1, 3, S, S) and the resized (h, w).

    ``limits`` are precomputed intensity limits (see :func:`intensity_limits`). ``fit``
    "pad" keeps the aspect ratio and pads; "stretch" resizes both sides to S (SAM 2).
    """
    rgb = to_intensity(plane, percentiles, limits)
    size = (img_size, img_size) if fit == "stretch" else resized_shape(rgb.shape[:2], img_size)
    x = normalise_for_model(resize_rgb(rgb, size), normalisation)
    x = F.pad(x, (0, img_size - size[1], 0, img_size - size[0]))
    return x[None], size


# --------------------------------------------------------------------------- nD planes

MAX_NDIM = 5  # (t, c, z, y, x) at most, plus a colour axis for RGB(A) data


def plane_of(
    data: Any,
    index: Sequence[int] = (),
    channel_axis: int | None = None,
    rgb: bool = False,
    plane_axes: tuple[int, int] = (-2, -1),
) -> np.ndarray:
    """Read one 2D plane of an nD array-like (numpy, memmap, dask, zarr): only it is read.

    ``plane_axes`` are the (row, col) axes, napari's last two displayed dims. ``index``
    gives the position along the other axes: either napari's ``dims.current_step`` (one
    entry per axis; entries on plane and channel axes are ignored) or one entry per stack
    axis only. ``channel_axis`` names an axis of 1-3 channels that become the plane's
    colours (2 channels: red and green); ``rgb`` says the last axis holds RGB(A) colours.
    Returns (H, W) or (H, W, C) as numpy, validated by :func:`as_plane`.
    """
    shape = _array_shape(data)
    spatial = len(shape) - (1 if rgb else 0)
    if rgb and (len(shape) < 3 or shape[-1] not in (3, 4)):
        raise ValueError(f"rgb=True needs a last axis of 3 or 4 colours, got shape {shape}")
    if spatial < 2:
        raise ValueError(f"need at least 2 spatial axes, got shape {shape}")
    if spatial > MAX_NDIM:
        raise ValueError(
            f"got a {spatial}D array of shape {shape}; at most {MAX_NDIM} axes (t, c, z, y, x) "
            "are supported: index the extra axes away first")
    if any(n == 0 for n in shape):
        raise ValueError(f"array is empty (shape {shape})")
    rows, cols = (_axis(a, spatial, "plane axis") for a in plane_axes)
    if rows == cols:
        raise ValueError(f"plane_axes {plane_axes} name the same axis twice")
    ch = None if channel_axis is None else _axis(channel_axis, spatial, "channel_axis")
    if ch in (rows, cols):
        raise ValueError(f"channel_axis {channel_axis} is one of the plane axes {plane_axes}")
    if ch is not None and rgb:
        raise ValueError("pass either rgb=True or a channel_axis, not both")
    if ch is not None and not 1 <= shape[ch] <= 3:
        raise ValueError(
            f"channel_axis {channel_axis} has {shape[ch]} entries; SAM takes 1-3 channels as "
            "colours. Is it the right axis? Otherwise select up to 3 channels first")
    stack = [a for a in range(spatial) if a not in (rows, cols, ch)]
    sel: list[Any] = [slice(None)] * len(shape)
    for axis, i in zip(stack, _stack_index(index, spatial, stack, shape)):
        sel[axis] = i
    arr = np.asarray(data[tuple(sel)])
    kept = [a for a in range(len(shape)) if isinstance(sel[a], slice)]
    order = [kept.index(rows), kept.index(cols)] + ([kept.index(ch)] if ch is not None else [])
    order += [i for i in range(arr.ndim) if i not in order]
    arr = np.transpose(arr, order)
    if ch is not None and arr.shape[-1] == 2:
        arr = np.concatenate([arr, np.zeros_like(arr[..., :1])], axis=-1)
    return as_plane(arr)


def _array_shape(data: Any) -> tuple[int, ...]:
    if isinstance(data, (str, bytes)) or not hasattr(data, "shape") or not hasattr(data, "dtype"):
        raise TypeError(f"expected an array (numpy, dask, zarr, memmap), got {type(data).__name__}")
    dtype = np.dtype(data.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == bool) or np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"image must be real numeric (integer, float or bool), got dtype {dtype}")
    return tuple(int(n) for n in data.shape)


def _axis(axis: int, ndim: int, what: str) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{what} must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what} {axis} is out of range for {ndim} spatial axes")
    return int(axis) % ndim


def _stack_index(index: Sequence[int], spatial: int, stack: list[int], shape: tuple[int, ...]) -> list[int]:
    idx = list(np.atleast_1d(np.asarray(index, dtype=float)))
    if len(idx) == spatial:  # napari's current_step: keep the stack axes' entries
        idx = [idx[a] for a in stack]
    elif len(idx) != len(stack):
        raise ValueError(
            f"index {tuple(index)} has {len(idx)} entries: give one per axis ({spatial}) "
            f"or one per stack axis ({len(stack)})")
    out = []
    for axis, i in zip(stack, idx):
        if not np.isfinite(i) or i != int(i) or not 0 <= i < shape[axis]:
            raise IndexError(f"index {i} is out of range for axis {axis} of size {shape[axis]}")
        out.append(int(i))
    return out
