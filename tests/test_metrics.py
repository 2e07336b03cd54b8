"""Instance segmentation metrics: hand-made label images with known answers, and a
brute-force check (pairwise mask IoU, optimal assignment) on random label images."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from napari_sam.metrics import (
    MSA_THRESHOLDS, Matching, f1, iou, matching, mean_matched_iou, mean_segmentation_accuracy,
)


@pytest.fixture
def four_objects() -> tuple[np.ndarray, np.ndarray]:
    """Truth: A, B and C side by side, D. Prediction: A exactly, B and C merged (IoU 1/2
    with each), D shifted two rows (IoU 32/48 = 2/3), and one object on background."""
    truth = np.zeros((20, 40), np.uint16)
    truth[1:6, 1:6] = 1  # A
    truth[1:5, 10:14] = 2  # B
    truth[1:5, 14:18] = 3  # C
    truth[8:18, 1:5] = 4  # D
    pred = np.zeros((20, 40), np.int32)
    pred[1:6, 1:6] = 7
    pred[1:5, 10:18] = 300
    pred[10:20, 1:5] = 12
    pred[10:15, 20:30] = 1000  # false positive
    return truth, pred


def counts(m: Matching) -> tuple[int, int, int]:
    return m.tp, m.fp, m.fn


def test_iou_of_masks():
    a, b = np.zeros((4, 5), bool), np.zeros((4, 5), bool)
    assert iou(a, b) == 1.0  # both empty
    a[0, :4] = True
    assert iou(a, b) == 0.0
    b[0, 2:] = True
    assert iou(a, b) == pytest.approx(2 / 5)
    assert iou(a.astype(np.uint8) * 9, b) == iou(a, b)  # nonzero is inside
    with pytest.raises(ValueError, match="shape"):
        iou(a, b.T)


def test_hand_made_counts_at_several_thresholds(four_objects):
    truth, pred = four_objects
    assert counts(matching(truth, pred, 0.5)) == (2, 2, 2)  # A, D; the merge matches neither (IoU 1/2 is not > 1/2)
    assert counts(matching(truth, pred, 0.65)) == (2, 2, 2)  # D's 2/3 is still above
    assert counts(matching(truth, pred, 0.7)) == (1, 3, 3)  # only A
    assert counts(matching(truth, pred, 0.95)) == (1, 3, 3)
    assert counts(matching(truth, pred, 0.4)) == (3, 1, 1)  # the merge matches B or C, not both
    assert counts(matching(truth, pred, 0.0)) == (3, 1, 1)
    m = matching(truth, pred)
    assert m.threshold == 0.5
    assert (m.precision, m.recall, m.f1, m.accuracy) == (0.5, 0.5, 0.5, pytest.approx(1 / 3))
    assert f1(truth, pred) == 0.5 and f1(truth, pred, 0.4) == 0.75
    assert matching(truth, pred, 0.4).accuracy == pytest.approx(3 / 5)


def test_hand_made_msa_and_mean_matched_iou(four_objects):
    truth, pred = four_objects
    # 0.5 .. 0.65: 2 / (2 + 2 + 2); 0.7 .. 0.95: 1 / (1 + 3 + 3)
    exact = (4 * Fraction(1, 3) + 6 * Fraction(1, 7)) / 10
    assert mean_segmentation_accuracy(truth, pred) == pytest.approx(float(exact), abs=1e-12)
    assert np.allclose(MSA_THRESHOLDS, np.arange(0.5, 1.0, 0.05))
    assert mean_segmentation_accuracy(truth, pred, thresholds=[0.4]) == pytest.approx(3 / 5)
    assert mean_segmentation_accuracy(truth, pred, thresholds=np.array([0.5, 0.7])) == pytest.approx((1 / 3 + 1 / 7) / 2)
    with pytest.raises(ValueError):
        mean_segmentation_accuracy(truth, pred, thresholds=[])
    assert mean_matched_iou(truth, pred) == pytest.approx((1 + 1 / 2 + 1 / 2 + 2 / 3) / 4)


def test_scores_do_not_depend_on_ids_or_dtype(four_objects):
    truth, pred = four_objects
    ids = np.array([0, 41, 5, 2**40, 9], np.int64)  # non-consecutive, beyond 32 bits, out of order
    relabelled = ids[truth]
    for t in (0.3, 0.5, 0.7):
        assert matching(relabelled, pred, t) == matching(truth, pred, t)
        assert matching(truth.astype(np.int8), pred.astype(np.uint64), t) == matching(truth, pred, t)
    assert mean_segmentation_accuracy(pred, relabelled) == mean_segmentation_accuracy(truth, pred)
    assert counts(matching(pred, truth, 0.5)) == (2, 2, 2)  # swapping sides swaps fp and fn
    # cropped to 16 columns, the merge is B and half of C: IoU 16/24 with B
    assert counts(matching(truth[:, :16], pred[:, :16], 0.5)) == (3, 0, 1)


def test_low_thresholds_take_the_largest_matching():
    # 1D: X = 0..9, Y = 10..19; P = 3..15 overlaps X (IoU 7/16) and Y (6/17); Q = 0..2 overlaps X (3/10).
    truth = np.array([1] * 10 + [2] * 10)
    pred = np.array([8] * 3 + [6] * 13 + [0] * 4)
    assert counts(matching(truth, pred, 0.25)) == (2, 0, 0)  # P-Y and Q-X, not the greedy P-X
    assert counts(matching(truth, pred, 0.32)) == (1, 1, 1)
    assert counts(matching(truth, pred, 0.5)) == (0, 2, 2)
    assert mean_matched_iou(truth, pred) == pytest.approx((7 / 16 + 6 / 17) / 2)  # P is best for both


def test_3d_labels():
    truth = np.zeros((8, 10, 12), np.uint32)
    truth[1:5, 1:5, 1:5] = 3
    truth[5:8, 6:10, 6:12] = 9
    pred = np.zeros_like(truth, dtype=np.int16)
    pred[2:6, 1:5, 1:5] = 1  # shifted one plane: 48 / 80 = 0.6
    pred[5:8, 6:10, 6:12] = 2
    assert counts(matching(truth, pred, 0.55)) == (2, 0, 0)
    assert counts(matching(truth, pred, 0.6)) == (1, 1, 1)
    assert mean_segmentation_accuracy(truth, pred) == pytest.approx((2 * 1 + 8 * 1 / 3) / 10)
    assert mean_matched_iou(truth, pred) == pytest.approx(0.8)
    assert iou(truth == 3, pred == 1) == pytest.approx(0.6)


def test_empty_images():
    empty = np.zeros((6, 7), np.int32)
    full = empty.copy()
    full[1:3, 1:3] = 4
    m = matching(empty, empty)
    assert counts(m) == (0, 0, 0) and (m.precision, m.recall, m.f1, m.accuracy) == (1.0, 1.0, 1.0, 1.0)
    assert mean_segmentation_accuracy(empty, empty) == 1.0 and mean_matched_iou(empty, empty) == 1.0
    for truth, pred in [(empty, full), (full, empty)]:
        m = matching(truth, pred, 0.1)
        assert (m.precision, m.recall, m.f1, m.accuracy) == (0.0, 0.0, 0.0, 0.0)
        assert f1(truth, pred) == 0.0 and mean_segmentation_accuracy(truth, pred) == 0.0
        assert mean_matched_iou(truth, pred) == 0.0
    assert counts(matching(empty, full)) == (0, 1, 0) and counts(matching(full, empty)) == (0, 0, 1)
    assert matching(full, full).accuracy == 1.0 and mean_segmentation_accuracy(full, full) == 1.0


def test_matching_is_frozen_and_inputs_are_checked():
    m = matching(np.ones((2, 2), int), np.ones((2, 2), int))
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.tp = 3
    with pytest.raises(ValueError, match="shape"):
        matching(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(TypeError, match="integer"):
        matching(np.zeros((2, 2)), np.zeros((2, 2), int))
    assert counts(matching(np.ones((2, 2), bool), np.ones((2, 2), np.uint8))) == (1, 0, 0)


def brute_force(truth: np.ndarray, pred: np.ndarray, threshold: float) -> tuple[int, int, int, float]:
    """(tp, fp, fn, mean best IoU per truth object) from every pair's mask IoU and an optimal assignment."""
    t_ids, p_ids = [i for i in np.unique(truth) if i], [j for j in np.unique(pred) if j]
    ious = np.array([[iou(truth == i, pred == j) for j in p_ids] for i in t_ids]).reshape(len(t_ids), len(p_ids))
    valid = (ious > threshold).astype(float)
    rows, cols = linear_sum_assignment(valid, maximize=True)
    tp = int(valid[rows, cols].sum())
    if not t_ids:
        best = float(not p_ids)
    else:
        best = ious.max(1).mean() if p_ids else 0.0
    return tp, len(p_ids) - tp, len(t_ids) - tp, best


def random_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Truth of 4-pixel blocks with sparse ids (some objects of several blocks); the prediction
    shifted by 0 or 1 along an axis, with some objects merged and some speckle. Or, for every
    fourth seed, a prediction of unrelated fragments: many pairs, all of low IoU."""
    rng = np.random.default_rng(seed)
    ndim = 2 + seed % 2
    n = 5**ndim
    ids = rng.choice(10_000, n, replace=False) * (rng.random(n) < 0.7)  # ~30% background blocks
    ids = np.where(rng.random(n) < 0.2, ids[rng.integers(0, n, n)], ids)
    truth = np.kron(ids.reshape((5,) * ndim), np.ones((4,) * ndim, np.int64))
    if seed % 4 == 3:
        return truth, (rng.integers(0, 3, truth.shape) * 5).astype(np.uint8)
    pred = np.roll(truth, rng.integers(0, 2), axis=rng.integers(ndim))
    old = np.unique(pred)
    merge = np.arange(len(old)) * 3
    some = rng.random(len(old)) < 0.2
    merge[some] = rng.choice(merge[1:], some.sum())
    merge[0] = 0
    pred = merge[np.searchsorted(old, pred)]
    noise = rng.random(pred.shape) < 0.05
    pred[noise] = rng.integers(0, 3, noise.sum()) * 100_001
    return truth, pred


@pytest.mark.parametrize("seed", range(12))
def test_random_label_images_against_brute_force(seed):
    from skimage.metrics import contingency_table
    from skimage.segmentation import relabel_sequential

    truth, pred = random_pair(seed)
    for threshold in (0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9):
        tp, fp, fn, best = brute_force(truth, pred, threshold)
        assert counts(matching(truth, pred, threshold)) == (tp, fp, fn), threshold
    assert mean_matched_iou(truth, pred) == pytest.approx(best)
    # skimage's contingency table (of the images numbered 1..N) gives the same IoUs at the default threshold
    small_t, small_p = relabel_sequential(truth)[0], relabel_sequential(pred)[0]
    table = contingency_table(small_t, small_p).toarray()[1:, 1:].astype(float)
    area_t, area_p = np.bincount(small_t.ravel())[1:], np.bincount(small_p.ravel())[1:]
    with np.errstate(invalid="ignore"):
        ious = table / (area_t[:, None] + area_p[None, :] - table)
    assert matching(truth, pred).tp == int((ious > 0.5).sum())
    accuracies = []
    for t in MSA_THRESHOLDS:
        tp, fp, fn, _ = brute_force(truth, pred, t)
        accuracies.append(Fraction(tp, tp + fp + fn) if tp + fp + fn else Fraction(1))
    assert mean_segmentation_accuracy(truth, pred) == pytest.approx(float(sum(accuracies) / len(accuracies)))
