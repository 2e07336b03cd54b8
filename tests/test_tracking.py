"""Tracking objects through movies: the motion estimate, following real nuclei that move
several pixels per frame with LiteMedSAM, confidence and where an object ends."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.errors import Cancelled
from napari_sam.metrics import iou
from napari_sam.segmentation.propagation import propagate
from napari_sam.segmentation.tracking import ArrayFrames, TrackParams, motion, track
from napari_sam.variants import moving

FRAMES = 8


@pytest.fixture(scope="module")
def movie(nuclei2d):
    """Real nuclei moving 3 px per frame (and turning) over 8 frames."""
    image, labels = nuclei2d
    return moving(image[:192, :192], labels[:192, :192], frames=FRAMES, speed_px=3.0, seed=1)


@pytest.fixture(scope="module")
def frames(lite_predictor, movie):
    return ArrayFrames(lite_predictor.prompts(), movie[0])


def _objects(truth: np.ndarray, n: int) -> list[int]:
    """``n`` nuclei present on every frame and large enough to see (a fixed sample)."""
    ids = [k for k in np.unique(truth[0]) if k and all((truth[t] == k).sum() > 80 for t in range(len(truth)))]
    rng = np.random.default_rng(0)
    return sorted(int(k) for k in rng.choice(ids, size=min(n, len(ids)), replace=False))


def _box(mask: np.ndarray) -> np.ndarray:
    r, c = np.nonzero(mask)
    return np.array([r.min(), c.min(), r.max(), c.max()], np.float32)


def _per_frame_iou(masks: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([iou(masks[t], truth[t]) for t in range(len(truth))]))


def test_motion_recovers_a_known_shift_of_a_real_nucleus(nuclei2d):
    image, labels = nuclei2d
    mask = labels == np.bincount(labels.ravel())[1:].argmax() + 1
    for shift in [(0, 0), (3, -2), (-5, 4), (7, 7)]:
        moved = np.roll(image, shift, axis=(0, 1))
        assert motion(image, moved, mask, np.zeros(2)) == shift
    # a shift beyond the search reach is found around where the last velocity points
    far = np.roll(image, (40, 0), axis=(0, 1))
    assert motion(image, far, mask, np.array([37.0, 0.0])) == (40, 0)
    assert motion(image, far, mask, np.zeros(2)) != (40, 0)


def test_follows_nuclei_moving_3px_per_frame(lite_predictor, movie, frames):
    image, truth = movie
    ids = _objects(truth, 6)
    ours, carried = [], []
    for k in ids:
        start = lite_predictor.segment(image[0], box=_box(truth[0] == k))
        tr = track(frames, 0, start.masks[start.best])
        ours.append(_per_frame_iou(tr.paste(FRAMES), truth == k))
        # the intensity carry grows the last mask by a pixel: it loses what moves further
        carried.append(_per_frame_iou(propagate(lite_predictor, image, 0, box=_box(truth[0] == k)), truth == k))
        # each frame is kept as a crop of the object's size, not a full plane
        assert all(f.mask.shape[0] < 80 and f.mask.shape[1] < 80 for f in tr.frames.values())
    assert np.mean(ours) >= 0.70, (ours, carried)
    assert np.mean(ours) >= np.mean(carried) + 0.2, (ours, carried)


def test_an_object_that_vanishes_ends_the_track_with_a_reason(lite_predictor, movie):
    image, truth = movie
    k = _objects(truth, 1)[0]
    gone = image.copy()
    background = np.median(image[0][truth[0] == 0])
    for t in range(4, FRAMES):  # the object bleaches away from frame 4
        gone[t][truth[t] == k] = background
    start = lite_predictor.segment(gone[0], box=_box(truth[0] == k))
    tr = track(ArrayFrames(lite_predictor.prompts(), gone), 0, start.masks[start.best])
    assert tr.span[1] < 5, (tr.span, tr.stopped)
    assert tr.stopped[1] != "end of the stack"
    assert tr.stopped[-1] == "end of the stack"
    assert np.mean([iou(tr.mask(t), truth[t] == k) for t in range(4)]) > 0.6


def test_confidence_and_corrections(lite_predictor, movie, frames):
    image, truth = movie
    k = _objects(truth, 1)[0]
    start = lite_predictor.segment(image[0], box=_box(truth[0] == k))
    fix = truth[3] == k
    tr = track(frames, 0, start.masks[start.best], corrections={3: fix, 6: np.zeros_like(fix)})
    assert np.array_equal(tr.mask(3), fix)  # the user's mask is taken as given
    assert tr.span == (0, 5) and "frame 6" in tr.stopped[1]  # an empty correction ends it
    conf = tr.confidence()
    assert sorted(conf) == list(range(6)) and all(0 <= v <= 1 for v in conf.values())
    assert conf[3] == 1.0 and min(conf.values()) > 0.3


def test_tracking_from_an_empty_mask_finds_nothing_and_cancel_stops(frames, movie):
    _, truth = movie
    assert track(frames, 0, np.zeros(truth.shape[1:], bool)).frames == {}
    with pytest.raises(Cancelled):
        track(frames, 0, truth[0] == _objects(truth, 1)[0], cancel=lambda: True)


def test_unsure_frames_are_flagged_and_a_run_of_them_stops(frames, movie):
    _, truth = movie
    k = _objects(truth, 1)[0]
    # demand a predicted IoU no model gives: every frame the model answers is unsure; the
    # user's frame 3 breaks the run, and the next run of three ends the object
    tr = track(frames, 0, truth[0] == k, TrackParams(min_score=1.01, patience=3), corrections={3: truth[3] == k})
    assert tr.span == (0, 3) and tr.unsure() == [1, 2]
    assert tr.stopped[1] == "unsure from frame 4"


def test_an_intensity_carried_object_gets_the_same_confidence_and_flags(lite_predictor, movie):
    from napari_sam.segmentation.propagation import propagate_piece, score_piece

    image, truth = movie
    k = _objects(truth, 1)[0]
    still = np.repeat(image[:1], FRAMES, axis=0)  # the object does not move: the carry follows it
    gone = still.copy()
    gone[5:][:, truth[0] == k] = np.median(image[0][truth[0] == 0])  # ... until it is gone from frame 5
    piece = propagate_piece(lite_predictor, gone, 2, mask=truth[0] == k)
    scored = score_piece(lambda t: gone[t], FRAMES, 2, piece, truth.shape[1:])
    assert scored.span == (0, 4) and scored.stopped == {-1: "end of the stack", 1: "where its intensity profile ends"}
    np.testing.assert_array_equal(scored.paste(FRAMES), piece.paste(gone.shape))
    conf = scored.confidence()
    assert conf[2] == 1.0 and all(v > 0.8 for v in conf.values()), conf  # the same object on every frame
    with pytest.raises(ValueError, match="start frame"):
        score_piece(lambda t: gone[t], FRAMES, 6, piece, truth.shape[1:])


class _LongMovie:
    """A 500-frame 2048^2 uint16 movie (4 GB were it dense), each frame made when read: a
    nucleus moving (2, 3) px per frame over noise, gone after frame 5."""

    shape = (500, 2048, 2048)
    dtype = np.dtype(np.uint16)
    ndim = 3

    def __init__(self) -> None:
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, k: int) -> np.ndarray:
        self.reads.append(int(k))
        plane = np.random.default_rng(int(k)).poisson(100, self.shape[1:]).astype(np.uint16)
        if k < 6:
            rr, cc = np.ogrid[:2048, :2048]
            plane[(rr - 1000 - 2 * k) ** 2 + (cc - 900 - 3 * k) ** 2 < 15 ** 2] += 400
        return plane


def test_a_long_movie_of_large_frames_is_read_frame_by_frame_in_bounded_memory(lite_predictor):
    import tracemalloc

    movie = _LongMovie()
    rr, cc = np.ogrid[:2048, :2048]
    tracemalloc.start()
    try:
        tr = track(ArrayFrames(lite_predictor.prompts(), movie), 0, (rr - 1000) ** 2 + (cc - 900) ** 2 < 15 ** 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tr.span == (0, 5) and "frame 6" in tr.stopped[1]
    assert max(movie.reads) <= 8  # only the frames it reached were read
    assert all(f.mask.shape[0] < 40 and f.mask.shape[1] < 40 for f in tr.frames.values())
    for t in range(6):  # it followed the nucleus as it moved
        assert abs(tr.frames[t].r0 + tr.frames[t].mask.shape[0] / 2 - (1000 + 2 * t)) <= 3
        assert abs(tr.frames[t].c0 + tr.frames[t].mask.shape[1] / 2 - (900 + 3 * t)) <= 3
    assert peak < 400e6, peak / 1e6  # a few planes, never the stack (4 GB) or a mask per frame (2 GB)


def test_connected_part_keeps_the_part_on_the_reference_or_says_none_is():
    from napari_sam.masks import connected_part

    mask = np.zeros((10, 10), bool)
    mask[0:2, 0:2] = mask[5:9, 5:9] = True
    near, far = np.zeros_like(mask), np.zeros_like(mask)
    near[0, 0] = far[0, 9] = True
    assert connected_part(mask, near).sum() == 4  # the small part it overlaps, not the larger one
    assert connected_part(mask, far).sum() == 16  # tracking: none overlaps, keep the largest
    assert not connected_part(mask, far, largest_if_apart=False).any()  # the intensity carry: the object ended
    assert not connected_part(np.zeros_like(mask), near).any()
