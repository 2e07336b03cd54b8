"""Classical box proposals for automatic segmentation with box-prompted models.

Two complementary detectors on a [0, 1] intensity image: Laplacian-of-Gaussian blobs
(finds dim and touching round objects) and an Otsu + distance-transform watershed
(follows elongated and large ones). Their boxes are merged; SAM turns each into a mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import feature, filters, measure, segmentation


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes (N, 4) and (M, 4) given as (min_row, min_col, max_row, max_col)."""
    r0 = np.maximum(a[:, None, 0], b[None, :, 0])
    c0 = np.maximum(a[:, None, 1], b[None, :, 1])
    r1 = np.minimum(a[:, None, 2], b[None, :, 2])
    c1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(r1 - r0, 0, None) * np.clip(c1 - c0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def blob_boxes(gray: np.ndarray, min_diameter: float, max_diameter: float, margin: float = 1.3) -> np.ndarray:
    """Boxes around LoG blobs with diameters in the given range (pixels)."""
    # A blob of radius r responds most at sigma = r / sqrt(2).
    min_sigma = max(min_diameter / (2 * np.sqrt(2)), 1.0)
    max_sigma = max(max_diameter / (2 * np.sqrt(2)), min_sigma + 0.5)
    blobs = feature.blob_log(gray, min_sigma=min_sigma, max_sigma=max_sigma, num_sigma=10,
                             threshold=0.05, overlap=0.5)
    if not len(blobs):
        return np.zeros((0, 4), np.float32)
    r = blobs[:, 2] * np.sqrt(2) * margin
    return np.column_stack([blobs[:, 0] - r, blobs[:, 1] - r, blobs[:, 0] + r, blobs[:, 1] + r])


def watershed_boxes(gray: np.ndarray, min_diameter: float, margin: float = 2.0) -> np.ndarray:
    """Boxes of Otsu foreground regions split by a distance-transform watershed."""
    smooth = filters.gaussian(gray, 1.0)
    if smooth.max() <= smooth.min():
        return np.zeros((0, 4), np.float32)
    fg = smooth > filters.threshold_otsu(smooth)
    dist = ndi.distance_transform_edt(fg)
    peaks = feature.peak_local_max(dist, min_distance=max(int(min_diameter / 2), 2), labels=measure.label(fg))
    markers = np.zeros(gray.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    regions = segmentation.watershed(-dist, markers, mask=fg)
    boxes = [r.bbox for r in measure.regionprops(regions) if r.area >= (min_diameter / 2) ** 2]
    if not boxes:
        return np.zeros((0, 4), np.float32)
    b = np.asarray(boxes, np.float32)
    return b + np.array([-margin, -margin, margin - 1, margin - 1], np.float32)


def box_proposals(gray: np.ndarray, min_diameter: float, max_diameter: float) -> tuple[np.ndarray, float]:
    """Merged, clipped proposal boxes and the median object diameter they suggest."""
    h, w = gray.shape
    boxes = np.concatenate([blob_boxes(gray, min_diameter, max_diameter),
                            watershed_boxes(gray, min_diameter)])
    boxes = np.clip(boxes, 0, [h - 1, w - 1, h - 1, w - 1]).astype(np.float32)
    sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    boxes = boxes[(sizes >= min_diameter / 2) & (sizes <= 2 * max_diameter)]
    boxes = _dedupe(boxes, 0.8)
    diameter = float(np.median(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))) if len(boxes) else max_diameter
    return boxes, diameter


def _dedupe(boxes: np.ndarray, thresh: float) -> np.ndarray:
    """Drop boxes that nearly repeat an earlier one."""
    keep: list[int] = []
    for i in range(len(boxes)):
        if not keep or box_iou(boxes[i : i + 1], boxes[keep]).max() < thresh:
            keep.append(i)
    return boxes[keep]
