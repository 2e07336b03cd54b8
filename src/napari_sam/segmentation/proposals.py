"""Classical box proposals for automatic segmentation with box-prompted models.

Three complementary detectors on a [0, 1] intensity image: Laplacian-of-Gaussian blobs
(finds dim and touching round objects), an Otsu + distance-transform watershed (follows
elongated and large ones), and a watershed seeded by blobs of a fraction of the objects'
size (one box per touching object, where the others give one box for a pair). Their boxes
are merged; SAM turns each into a mask. The seeds also let the selection prefer a mask
holding one object over one holding several.
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


def seeded_boxes(gray: np.ndarray, diameter: float, margin: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the objects of about ``diameter`` pixels, one per object even where objects
    touch, and their (N, 2) seed pixels (row, col).

    The seeds are maxima of the scale-normalised LoG at the scale of a disc of two thirds
    the diameter, at least a third of it apart, on the Otsu foreground (smoothed by a
    twelfth of the diameter). A watershed of that relief cuts the foreground into one basin
    per seed; each basin's box is grown by ``margin`` pixels, and basins under a third of
    the diameter squared are dropped.
    """
    no_boxes, no_seeds = np.zeros((0, 4), np.float32), np.zeros((0, 2), np.int64)
    if gray.max() <= gray.min():
        return no_boxes, no_seeds
    smooth = filters.gaussian(gray, max(1.0, diameter / 12))
    foreground = smooth > filters.threshold_otsu(smooth)
    sigma = diameter / (3 * np.sqrt(2))  # a disc of 2/3 the diameter responds most here
    relief = -sigma ** 2 * ndi.gaussian_laplace(gray, sigma)
    seeds = feature.peak_local_max(relief, min_distance=max(2, int(diameter / 3)), labels=measure.label(foreground),
                                   threshold_abs=0)
    if not len(seeds):
        return no_boxes, no_seeds
    markers = np.zeros(gray.shape, np.int32)
    markers[tuple(seeds.T)] = np.arange(1, len(seeds) + 1)
    regions = segmentation.watershed(-relief, markers, mask=foreground)
    boxes = [r.bbox for r in measure.regionprops(regions) if r.area >= (diameter / 3) ** 2]
    if not boxes:
        return no_boxes, seeds
    return np.asarray(boxes, np.float32) + np.array([-margin, -margin, margin - 1, margin - 1], np.float32), seeds


def box_proposals(gray: np.ndarray, min_diameter: float, max_diameter: float,
                  diameter: float | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """Merged, clipped proposal boxes, the median object diameter they suggest, and the
    object seeds (:func:`seeded_boxes`, for the objects' typical ``diameter``; none when
    it is not given)."""
    h, w = gray.shape
    seeds = np.zeros((0, 2), np.int64)
    parts = [blob_boxes(gray, min_diameter, max_diameter), watershed_boxes(gray, min_diameter)]
    if diameter:
        boxes, seeds = seeded_boxes(gray, diameter)
        parts.append(boxes)
    boxes = np.clip(np.concatenate(parts), 0, [h - 1, w - 1, h - 1, w - 1]).astype(np.float32)
    sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    boxes = boxes[(sizes >= min_diameter / 2) & (sizes <= 2 * max_diameter)]
    boxes = _dedupe(boxes, 0.8)
    median = float(np.median(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))) if len(boxes) else max_diameter
    return boxes, median, seeds


def _dedupe(boxes: np.ndarray, thresh: float) -> np.ndarray:
    """Drop boxes that nearly repeat an earlier one."""
    keep: list[int] = []
    for i in range(len(boxes)):
        if not keep or box_iou(boxes[i : i + 1], boxes[keep]).max() < thresh:
            keep.append(i)
    return boxes[keep]
