"""The values that pass between the layers: a plane's :class:`Embedding` (what the encoder
made), :class:`Candidates` (what the decoder answered), and the checks that turn a user's
prompts into arrays. Nothing here runs a model, so every layer may import it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

LOW_RES = 256  # side of the decoder's mask logits


@dataclass(frozen=True)
class Embedding:
    """A plane's image embedding plus the geometry that maps model space back to pixels."""

    features: torch.Tensor  # (1, 256, 64, 64)
    original_size: tuple[int, int]  # (H, W) of the plane
    input_size: tuple[int, int]  # (h, w) after resizing the longest side to img_size
    img_size: int  # the model's square input side
    model_name: str = ""
    # SAM 2's two high-resolution maps for the decoder, (1, 32, 4*64, 4*64) and (1, 64, 2*64, 2*64).
    high_res: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, compare=False, repr=False)
    # What this embedding was read from (an embedding cache's stored features), so the
    # decoder's per-embedding work is reused across reads that each give new tensors.
    origin: object = field(default=None, compare=False, repr=False)

    @property
    def scale(self) -> tuple[float, float]:
        """Model pixels per plane pixel, along rows and columns."""
        return (self.input_size[0] / self.original_size[0], self.input_size[1] / self.original_size[1])

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.features, *(self.high_res or ())))


@dataclass(frozen=True)
class Candidates:
    """Candidate masks for one prompt, in the decoder's order (see :attr:`best`)."""

    masks: np.ndarray  # (K, H, W) bool at the plane's size
    scores: np.ndarray  # (K,) predicted IoU
    logits: np.ndarray  # (K, 256, 256) low-res logits; feed one back as mask_input
    # (r0, c0, r1, c1), half-open: the part of the plane the logits cover; None = all of it.
    window: tuple[int, int, int, int] | None = None

    @property
    def best(self) -> int:
        """Index of the candidate with the highest predicted IoU."""
        return int(np.argmax(self.scores))

    def __len__(self) -> int:
        return len(self.scores)


def check_points(points: object, labels: object, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Points (N, 2) as (row, col) and labels (N,) of 1/0 checked against a plane of
    ``shape``; None when there are none. Errors say what is wrong."""
    if points is None:
        if labels is not None and np.size(labels):
            raise ValueError("labels were given without points")
        return None
    pts = np.asarray(points, dtype=np.float32)
    if pts.size == 0:
        return None
    pts = pts.reshape(-1, 2) if pts.ndim == 1 and pts.size == 2 else pts
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be (N, 2) as (row, col), got shape {np.shape(points)}")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or inf")
    lab = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
    if len(lab) != len(pts):
        raise ValueError(f"got {len(pts)} points but {len(lab)} labels: give one label per point")
    if not np.isin(lab, (0, 1)).all():
        raise ValueError(f"labels must be 1 (object) or 0 (background), got {np.unique(lab).tolist()}")
    h, w = shape
    outside = (pts[:, 0] < -0.5) | (pts[:, 0] > h - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > w - 0.5)
    if outside.any():
        raise ValueError(f"point {pts[outside][0].tolist()} (row, col) lies outside the image of shape {shape}")
    return pts, lab.astype(np.int64)


def check_box(box: object, shape: tuple[int, int]) -> np.ndarray | None:
    """A box (min_row, min_col, max_row, max_col) checked and cut to a plane of ``shape``;
    None when there is none."""
    if box is None:
        return None
    b = np.asarray(box, dtype=np.float32).reshape(-1)
    if b.size == 0:
        return None
    if b.size != 4 or not np.isfinite(b).all():
        raise ValueError(f"box must be 4 finite numbers (min_row, min_col, max_row, max_col), got {box!r}")
    if b[2] < b[0] or b[3] < b[1]:
        raise ValueError(f"box {b.tolist()} has max < min: expected (min_row, min_col, max_row, max_col)")
    h, w = shape
    if b[2] < 0 or b[3] < 0 or b[0] > h or b[1] > w:
        raise ValueError(f"box {b.tolist()} lies outside the image of shape {shape}")
    # A box hanging over the border is cut to the image.
    return np.clip(b, 0, [h, w, h, w]).astype(np.float32)


def check_mask_input(mask_input: object) -> np.ndarray | None:
    """Low-res mask logits (256, 256) fed back to the decoder, as float32; None when absent."""
    if mask_input is None:
        return None
    m = np.asarray(mask_input.detach().cpu() if isinstance(mask_input, torch.Tensor) else mask_input,
                   dtype=np.float32)
    m = m.reshape(m.shape[-2:]) if m.ndim > 2 and np.prod(m.shape[:-2]) == 1 else m
    if m.shape != (LOW_RES, LOW_RES):
        raise ValueError(f"mask_input must be low-res logits of shape (256, 256), got {m.shape}")
    return m


__all__ = ["LOW_RES", "Candidates", "Embedding", "check_box", "check_mask_input", "check_points"]
