"""Instance segmentation metrics, computed the standard way (DSB 2018, StarDist, micro-sam).

Label images of any dimension and integer dtype; 0 is background, every other id is one
object (ids need not be consecutive). Objects of the truth and the prediction are matched
one to one; a pair can match when its IoU is above the threshold (strictly: ``IoU > t``).
Above 0.5 no object can overlap two others that much, so the matching is unique; below it
the largest one-to-one matching is taken (maximum bipartite matching).

When neither image has an object every score is 1.0 (nothing to find, nothing found);
when only one of them has objects every score is 0.0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MSA_THRESHOLDS", "Matching", "f1", "iou", "matching", "mean_matched_iou", "mean_segmentation_accuracy",
]

#: IoU thresholds of the mean segmentation accuracy: np.arange(0.5, 1.0, 0.05), without its rounding errors.
MSA_THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks of the same shape (nonzero is inside); 1.0 when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} and {b.shape}")
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


@dataclass(frozen=True)
class Matching:
    """Counts of a one-to-one matching of objects at one IoU threshold, and the scores from them."""

    threshold: float
    tp: int  #: matched pairs
    fp: int  #: predicted objects left unmatched
    fn: int  #: truth objects left unmatched

    def _ratio(self, num: int, den: int) -> float:
        if den:
            return num / den
        return 1.0 if self.tp + self.fp + self.fn == 0 else 0.0

    @property
    def precision(self) -> float:
        """TP / (TP + FP): the share of predicted objects that match."""
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """TP / (TP + FN): the share of truth objects that are found."""
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN): the harmonic mean of precision and recall."""
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def accuracy(self) -> float:
        """TP / (TP + FP + FN): the segmentation accuracy of DSB 2018, StarDist and micro-sam."""
        return self._ratio(self.tp, self.tp + self.fp + self.fn)


@dataclass(frozen=True)
class _Overlaps:
    """Objects' counts and the IoU of every overlapping (truth, prediction) pair, by object index."""

    n_truth: int
    n_pred: int
    rows: np.ndarray  # truth object index, 0 .. n_truth - 1
    cols: np.ndarray  # predicted object index, 0 .. n_pred - 1
    ious: np.ndarray

    def matches(self, threshold: float) -> int:
        """The size of the largest one-to-one matching of pairs with IoU > threshold."""
        valid = self.ious > threshold
        if threshold >= 0.5:  # each object has at most one such partner
            return int(np.count_nonzero(valid))
        rows, cols = self.rows[valid], self.cols[valid]
        if not rows.size:
            return 0
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import maximum_bipartite_matching

        rows_u, rows = np.unique(rows, return_inverse=True)  # only the objects with a candidate
        cols_u, cols = np.unique(cols, return_inverse=True)
        graph = csr_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(rows_u.size, cols_u.size))
        return int(np.count_nonzero(maximum_bipartite_matching(graph, perm_type="column") >= 0))


def _labels(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != bool and not np.issubdtype(image.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label image, not {image.dtype}")
    return image.ravel()


def _overlaps(truth: np.ndarray, pred: np.ndarray) -> _Overlaps:
    if np.shape(truth) != np.shape(pred):
        raise ValueError(f"label images differ in shape: {np.shape(truth)} and {np.shape(pred)}")
    t, p = _labels(truth, "truth"), _labels(pred, "pred")
    t_ids, t_area = np.unique(t, return_counts=True)
    p_ids, p_area = np.unique(p, return_counts=True)
    t_area, p_area = t_area[t_ids != 0], p_area[p_ids != 0]
    t_ids, p_ids = t_ids[t_ids != 0], p_ids[p_ids != 0]
    both = (t != 0) & (p != 0)
    if not both.any():
        empty = np.zeros(0, np.intp)
        return _Overlaps(t_ids.size, p_ids.size, empty, empty, np.zeros(0))
    pairs = np.searchsorted(t_ids, t[both]).astype(np.int64) * p_ids.size + np.searchsorted(p_ids, p[both])
    pairs, inter = np.unique(pairs, return_counts=True)
    rows, cols = np.divmod(pairs, p_ids.size)
    return _Overlaps(t_ids.size, p_ids.size, rows, cols, inter / (t_area[rows] + p_area[cols] - inter))


def matching(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> Matching:
    """Match the objects of ``pred`` to those of ``truth`` one to one at IoU > ``threshold``."""
    overlaps = _overlaps(truth, pred)
    tp = overlaps.matches(threshold)
    return Matching(float(threshold), tp, overlaps.n_pred - tp, overlaps.n_truth - tp)


def f1(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> float:
    """Instance F1 at IoU > ``threshold``: 2 TP / (number of truth objects + number of predicted ones)."""
    return matching(truth, pred, threshold).f1


def mean_segmentation_accuracy(
    truth: np.ndarray, pred: np.ndarray, thresholds: Iterable[float] = MSA_THRESHOLDS,
) -> float:
    """mSA: the segmentation accuracy TP / (TP + FP + FN) averaged over IoU thresholds
    (by default 0.5, 0.55, ..., 0.95), as in the DSB 2018 challenge and micro-sam."""
    overlaps = _overlaps(truth, pred)
    scores = []
    for t in thresholds:
        tp = overlaps.matches(t)
        scores.append(Matching(float(t), tp, overlaps.n_pred - tp, overlaps.n_truth - tp).accuracy)
    if not scores:
        raise ValueError("no thresholds given")
    return float(np.mean(scores))


def mean_matched_iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean over truth objects of the IoU with the predicted object that overlaps each best
    (0 for a truth object no prediction touches). Not one to one: a predicted object may be
    the best match of two truth objects. Suits interactive evaluation, one prediction per prompt."""
    overlaps = _overlaps(truth, pred)
    if not overlaps.n_truth:
        return 1.0 if not overlaps.n_pred else 0.0
    best = np.zeros(overlaps.n_truth)
    np.maximum.at(best, overlaps.rows, overlaps.ious)
    return float(best.mean())
