"""Automatic segmentation: real nuclei with LiteMedSAM, SAM's grid helpers against the
reference, cheap re-thresholding, linking of planes into 3D objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.segmentation.automatic import (
    AutoParams, crop_boxes, link_slices, point_grid, propose_steps, run_with_progress, select,
    segment_everything,
)
from napari_sam.masks import stability_scores
from napari_sam.cache import EmbeddingCache
from napari_sam.errors import Cancelled
from napari_sam.metrics import f1, mean_segmentation_accuracy
from napari_sam.segmentation.refine_labels import refine_labels


NUCLEI = "nuclei2d"  # the plane's signature in the windows' cache


@pytest.fixture(scope="module")
def window_cache():
    return EmbeddingCache()


@pytest.fixture(scope="module")
def nuclei_proposals(lite_predictor, nuclei2d, window_cache):
    steps = []
    proposals = run_with_progress(propose_steps(lite_predictor, nuclei2d[0], cache=window_cache, signature=NUCLEI),
                                  lambda d, t: steps.append((d, t)))
    assert steps and steps[-1][0] == steps[-1][1] == len(proposals.tiles)
    return proposals


def test_boxes_method_segments_real_nuclei(lite_predictor, nuclei2d, nuclei_proposals):
    # 125 real DSB2018 nuclei; Otsu + distance watershed scores F1 0.67 on this image.
    labels = select(nuclei_proposals, lite_predictor)
    assert nuclei_proposals.method == "boxes"  # the default for box-trained LiteMedSAM
    score = f1(nuclei2d[1], labels)
    assert score >= 0.9, score  # 0.929; 0.854 before the seeded boxes and the seed penalty
    assert labels.dtype == np.int32 and labels.shape == nuclei2d[0].shape
    # numbered in raster order: each id's first pixel comes after the one before
    ids, first = np.unique(labels, return_index=True)
    assert list(ids) == list(range(len(ids))) and np.all(np.diff(first[1:]) > 0)


def test_refining_the_chosen_objects_costs_no_encoder_call_and_sharpens_them(
        lite_predictor, nuclei2d, nuclei_proposals, window_cache):
    """segment_everything's last step: each chosen object prompted again with a box around
    its own mask, in the windows the proposals were decoded in."""
    image, truth = nuclei2d
    chosen = select(nuclei_proposals, lite_predictor)
    service = lite_predictor.prompts(window_cache)
    calls = service.encoder_calls
    refined = refine_labels(lite_predictor, image, chosen, cache=window_cache, signature=NUCLEI).labels
    assert service.encoder_calls == calls
    before, after = mean_segmentation_accuracy(truth, chosen), mean_segmentation_accuracy(truth, refined)
    # measured: mSA 0.532 -> 0.564, F1 0.929 -> 0.913 (issue 20's bar: 0.55 and 0.85)
    assert after >= before + 0.02 and after >= 0.55, (before, after)
    assert f1(truth, refined) >= 0.88


@pytest.mark.parametrize("variant, least, least_msa", [("inverted", 0.8, 0.45), ("rgb", 0.88, 0.45)])
def test_boxes_method_finds_dark_nuclei_on_bright(lite_predictor, nuclei2d, variant, least, least_msa):
    """Dark on bright (inverted contrast, a stain rendered in RGB): the detectors look for
    the minority side of the plane, as bright blobs. Both scored F1 0 when they looked for
    bright blobs only; on this quarter of the image they measure F1 0.84 and 0.93, mSA
    0.48 and 0.48."""
    from napari_sam.variants import standard_variants

    (_, image, truth), = standard_variants(nuclei2d[0][:256, :256], nuclei2d[1][:256, :256], [variant])
    cache, steps = EmbeddingCache(), []
    labels = segment_everything(lite_predictor, image, progress=lambda d, t: steps.append((d, t)), cache=cache,
                                signature=variant)
    score, msa = f1(truth, labels), mean_segmentation_accuracy(truth, labels)
    assert score >= least and msa >= least_msa, (score, msa)
    assert steps[-1][0] == steps[-1][1] and all(t == steps[-1][1] for _, t in steps)
    # The windows stay cached for the plane: a box on an object found is a decoder call.
    service = lite_predictor.prompts(cache)
    calls = service.encoder_calls
    rows, cols = np.nonzero(labels == labels.max())
    box = np.clip([rows.min() - 2, cols.min() - 2, rows.max() + 2, cols.max() + 2], 0, 255)
    cand = service.segment(image, box=box, signature=variant)
    assert service.encoder_calls == calls and cand.masks[cand.best].any()


def test_photon_limited_planes_are_segmented_denoised(lite_predictor, nuclei2d, monkeypatch):
    """At 15 photons per nucleus pixel the model's outlines fray: the prompt service shows
    it such planes denoised, and the detectors see them so too. On the whole field, F1 /
    mSA 0.785 / 0.348 as it is, 0.867 / 0.471 denoised; on this quarter of it, 0.746 /
    0.298 and 0.841 / 0.431."""
    from napari_sam.prompting import noise
    from napari_sam.variants import standard_variants

    (_, image, truth), = standard_variants(nuclei2d[0][:256, :256], nuclei2d[1][:256, :256], ["low_photon"])
    scores = {}
    for denoise in (True, False):
        monkeypatch.setattr(noise, "LIMITED_CONTRAST", 4.5 if denoise else 0.0)
        cache = EmbeddingCache()
        labels = segment_everything(lite_predictor, image, cache=cache, signature=("low photon", denoise))
        assert lite_predictor.prompts(cache).denoises(("low photon", denoise)) == denoise
        scores[denoise] = f1(truth, labels), mean_segmentation_accuracy(truth, labels)
    assert scores[True][1] >= 0.40 and scores[True][1] >= scores[False][1] + 0.1, scores
    assert scores[True][0] >= 0.8, scores


def test_the_diameter_range_follows_the_magnification_unless_set(nuclei2d, nuclei3d):
    from skimage.measure import regionprops

    from napari_sam.variants import standard_variants

    for name, image, truth in standard_variants(*nuclei2d, ["native", "3x"]):
        sizes = [2 * np.sqrt(r.area / np.pi) for r in regionprops(truth)]
        got = AutoParams().sized_for(image)
        # the detectors' range holds nine in ten of the true diameters
        assert got.min_diameter <= np.percentile(sizes, 5) and np.percentile(sizes, 95) <= got.max_diameter, name
    assert AutoParams(min_diameter=6, max_diameter=60).sized_for(nuclei2d[0]) == AutoParams(min_diameter=6,
                                                                                              max_diameter=60)
    stack = AutoParams(max_diameter=50).sized_for(nuclei3d[0])  # a stack: measured on its planes
    assert stack.max_diameter == 50 and 2 <= stack.min_diameter <= 8


def test_seeded_boxes_give_touching_nuclei_their_own_boxes(nuclei2d):
    """The seeded watershed adds a box per touching nucleus where the blob and distance
    detectors give one for the pair: of 125 nuclei, 79 % have a box of IoU >= 0.5 without
    it, 86 % with it."""
    from skimage.measure import regionprops

    from napari_sam.prompting.object_size import estimate_diameter
    from napari_sam.segmentation.proposals import box_iou, box_proposals

    image, truth = nuclei2d
    gray = (image - image.min()) / np.ptp(image)
    params = AutoParams().sized_for(image)
    true_boxes = np.array([[r.bbox[0], r.bbox[1], r.bbox[2] - 1, r.bbox[3] - 1] for r in regionprops(truth)], np.float32)
    found = []
    for diameter in (None, estimate_diameter(image)):
        boxes, _, seeds = box_proposals(gray, params.min_diameter, params.max_diameter, diameter)
        found.append(np.mean(box_iou(true_boxes, boxes).max(1) >= 0.5))
    assert len(seeds) == pytest.approx(len(true_boxes), rel=0.1)  # about one seed per nucleus
    assert found[1] >= 0.84 and found[1] >= found[0] + 0.04, found


def test_masks_holding_several_seeds_yield_to_single_objects(lite_predictor, nuclei2d, nuclei_proposals):
    """Touching nuclei decoded as one mask rank below the masks of each nucleus: mSA 0.485
    without the seeds, 0.532 with them (before refinement)."""
    from dataclasses import replace

    truth = nuclei2d[1]
    blind = replace(nuclei_proposals, meta={**nuclei_proposals.meta, "seeds": None})
    with_seeds = mean_segmentation_accuracy(truth, select(nuclei_proposals, lite_predictor))
    without = mean_segmentation_accuracy(truth, select(blind, lite_predictor))
    assert with_seeds >= without + 0.03, (with_seeds, without)


def test_rethresholding_needs_no_encoder(lite_predictor, nuclei_proposals, monkeypatch):
    monkeypatch.setattr(lite_predictor, "embed", lambda *a, **k: pytest.fail("select() must not embed"))
    counts = [select(nuclei_proposals, lite_predictor, AutoParams(pred_iou_thresh=t)).max() for t in (0.5, 0.8, 0.95)]
    assert counts[0] >= counts[1] >= counts[2]
    assert counts[0] > counts[2]
    big = select(nuclei_proposals, lite_predictor, AutoParams(min_area=400))
    sizes = np.bincount(big.ravel())[1:]
    assert sizes.min() >= 400


def test_grid_matches_reference_helpers():
    from segment_anything.utils import amg
    for n in (1, 4, 32):
        ref = amg.build_point_grid(n)  # (x, y) in [0, 1]
        np.testing.assert_allclose(point_grid(n), ref[:, ::-1])
    for shape, layers in [((480, 640), 1), ((512, 512), 2), ((300, 200), 0)]:
        ref_boxes, ref_layers = amg.generate_crop_boxes(shape, layers, 512 / 1500)
        ours = crop_boxes(shape, layers, 512 / 1500)
        as_xyxy = [[c0, r0, c0 + w, r0 + h] for r0, c0, h, w, _ in ours]
        theirs = [list(map(int, b)) for b in ref_boxes]
        assert sorted(zip(as_xyxy, [layer for *_, layer in ours])) == sorted(zip(theirs, ref_layers))
    logits = torch.randn(5, 64, 64) * 3
    np.testing.assert_allclose(stability_scores(logits, 1.0),
                               amg.calculate_stability_score(logits, 0.0, 1.0).numpy(), rtol=1e-6)


def test_batched_decoding_equals_one_by_one(lite_predictor, nuclei2d_embedding):
    boxes = np.array([[10, 10, 60, 70], [200, 220, 240, 250], [300, 100, 330, 160]], np.float32)
    logits, scores = lite_predictor.decode_batch(nuclei2d_embedding, boxes=boxes, multimask=False)
    for i, box in enumerate(boxes):
        one = lite_predictor.predict(nuclei2d_embedding, box=box, multimask=False)
        np.testing.assert_allclose(logits[i, 0].numpy(), one.logits[0], atol=1e-4)
        assert scores[i, 0].item() == pytest.approx(float(one.scores[0]), abs=1e-5)


def test_blank_plane_gives_no_objects_and_bad_input_is_refused(lite_predictor):
    assert segment_everything(lite_predictor, np.full((64, 64), 7, np.uint16)).max() == 0
    with pytest.raises(ValueError):
        segment_everything(lite_predictor, np.zeros((2, 3, 64, 64)))
    with pytest.raises(ValueError, match="method"):
        segment_everything(lite_predictor, np.zeros((64, 64)), AutoParams(method="magic"))


def test_cancel_stops_between_tiles(lite_predictor, nuclei2d):
    with pytest.raises(Cancelled):
        segment_everything(lite_predictor, nuclei2d[0], cancel=lambda: True)


def test_link_slices_joins_overlapping_objects_one_to_one():
    planes = np.zeros((4, 20, 20), np.int32)
    planes[0, 2:8, 2:8] = 1
    planes[1, 2:8, 3:9] = 2     # continues object 1
    planes[1, 12:18, 12:18] = 1  # a new object
    planes[2, 12:18, 12:17] = 5  # continues that one
    planes[3, 2:8, 2:8] = 1     # a gap at z=2: a separate object
    out = link_slices(planes)
    assert out[0, 4, 4] == out[1, 4, 5] != 0
    assert out[1, 14, 14] == out[2, 14, 14] != out[0, 4, 4]
    assert out[3, 4, 4] not in (0, out[0, 4, 4], out[1, 14, 14])
    assert sorted(np.unique(out)) == [0, 1, 2, 3]


def test_stack_segmentation_finds_real_nuclei_in_3d(lite_predictor, nuclei3d):
    # 51 noisy, crowded, anisotropic nuclei (~7 slices deep, 15 px wide). Each plane
    # segmented on its own and linked by overlap scores F1 0.20 here.
    from napari_sam.segmentation.automatic_volume import seeds
    from napari_sam.cli.batch import segment_array  # what `napari-sam segment` runs on a (Z, H, W) file

    volume, truth = nuclei3d
    found = seeds(volume)
    assert 30 <= len(found) <= 80
    steps = []
    labels = segment_array(lite_predictor, volume, AutoParams(), lambda d, t: steps.append((d, t)))
    score = f1(truth, labels)
    assert score >= 0.6, score
    assert labels.dtype == np.int32 and labels.shape == volume.shape
    assert set(np.unique(labels)) == set(range(labels.max() + 1))  # numbered 1..N
    assert steps[-1] == (len(found), len(found))


def test_stack_seeds_find_dark_nuclei_on_bright_as_they_find_bright_ones(nuclei3d):
    """A stack of dark objects (a stain, brightfield) is seeded like its mirror image: the
    seeds assumed bright objects and found next to nothing in it."""
    from napari_sam.segmentation.automatic_volume import plan_seeds

    volume = nuclei3d[0]
    dark = (int(volume.max()) + int(volume.min()) - volume.astype(np.int32)).astype(volume.dtype)
    bright, mirrored = plan_seeds(volume), plan_seeds(dark)
    assert 30 <= len(bright) == len(mirrored)
    assert [s.at for s in bright] == [s.at for s in mirrored]
    boxed = [(a.box, b.box) for a, b in zip(bright, mirrored) if a.box is not None]
    assert len(boxed) >= 30 and all(b is not None and np.abs(a - b).max() <= 1 for a, b in boxed)


def test_stack_segmentation_refuses_bad_input_and_cancels(lite_predictor, nuclei3d):
    from napari_sam.segmentation.automatic_volume import segment_volume

    with pytest.raises(ValueError, match=r"\(Z, H, W\)"):
        segment_volume(lite_predictor, nuclei3d[0][0])
    with pytest.raises(TypeError, match="numeric"):
        segment_volume(lite_predictor, np.full((3, 8, 8), "a"))
    assert not segment_volume(lite_predictor, np.zeros((4, 32, 32), np.uint16)).any()
    with pytest.raises(Cancelled):
        segment_volume(lite_predictor, nuclei3d[0], cancel=lambda: True)


def test_stack_segmentation_takes_nan_as_the_lowest_value(lite_predictor, nuclei3d):
    from napari_sam.segmentation.automatic_volume import checked_volume, segment_volume

    crop = nuclei3d[0][:, :24, :24].astype(np.float32)
    holed = crop.copy()
    holed[0, :3, :3] = np.nan
    holed[1, 0, 0] = -np.inf
    filled = checked_volume(holed)
    assert np.isfinite(filled).all() and filled[0, 0, 0] == filled[1, 0, 0] == np.nanmin(crop)
    assert checked_volume(crop) is crop  # no copy when every value is finite
    np.testing.assert_array_equal(segment_volume(lite_predictor, holed), segment_volume(lite_predictor, filled))


def test_grid_with_a_box_only_model_is_refused_and_auto_picks_boxes():
    from types import SimpleNamespace

    lite = SimpleNamespace(box_only=True, model_name="lite_medsam")
    with pytest.raises(ValueError, match=r"'lite_medsam' was trained on boxes only.*'boxes'.*'auto'"):
        AutoParams(method="grid").resolve(lite)
    assert AutoParams().resolve(lite).method == "boxes"
    assert AutoParams(method="boxes").resolve(lite).method == "boxes"
    sam = SimpleNamespace(box_only=False, model_name="vit_b")
    assert AutoParams(method="grid").resolve(sam).method == "grid"
    assert AutoParams().resolve(sam).method == "grid"


def test_grid_with_litemedsam_fails_before_any_embedding(lite_predictor, nuclei2d, monkeypatch):
    monkeypatch.setattr(lite_predictor, "embed", lambda *a, **k: pytest.fail("nothing may be embedded"))
    with pytest.raises(ValueError, match="trained on boxes only"):
        segment_everything(lite_predictor, nuclei2d[0], AutoParams(method="grid"))
    with pytest.raises(ValueError, match="trained on boxes only"):
        next(propose_steps(lite_predictor, nuclei2d[0], AutoParams(method="grid")))
