"""Predictor parity with the reference implementations, on random weights, in fp32:
segment-anything (vit_b) and MobileSAM's reference code (vit_t)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam import Predictor
from napari_sam.model.checkpoint import load_state_dict
from napari_sam.model.sam import Sam

from .conftest import perturb_

UNUSED = ("image_encoder.head.", "image_encoder.norm_head.")


def _pair(arch: str):
    """(reference SamPredictor, our Predictor) sharing one random state dict."""
    torch.manual_seed(0)
    if arch == "vit_b":
        from segment_anything import SamPredictor, build_sam_vit_b

        ref = build_sam_vit_b()
    else:
        from mobile_sam import SamPredictor
        from mobile_sam.build_sam import build_sam_vit_t

        ref = build_sam_vit_t()
    # eval() after perturbing: the MobileSAM reference caches its attention biases in eval().
    perturb_(ref, seed=1).eval()
    ours = Sam(arch)
    load_state_dict(ours, ref.state_dict(), arch, UNUSED)
    return SamPredictor(ref), Predictor(ours)


def _image(shape: tuple[int, int]) -> np.ndarray:
    """A uint8 RGB image with structure (smooth blobs plus noise), not only noise."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = 120 + 80 * np.sin(yy / 37.0) * np.cos(xx / 53.0)
    rgb = np.stack([base, base[::-1], base[:, ::-1]], axis=-1) + rng.normal(0, 20, (*shape, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=["vit_b", "vit_t"])
def embedded(request):
    ref, ours = _pair(request.param)
    image = _image((1024, 1024))
    ref.set_image(image)
    emb = ours.embed(image)
    return ref, ours, emb


def _close(ours, ref, rtol=1e-4):
    ours, ref = torch.as_tensor(np.asarray(ours)), torch.as_tensor(np.asarray(ref))
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


def _same_masks(ours: np.ndarray, ref: np.ndarray) -> None:
    """Masks agree but for a handful of pixels whose logits sit at 0 within float noise."""
    differ = ours != ref
    assert ours.shape == ref.shape
    assert differ.sum() <= 1e-5 * ref.size, f"{differ.sum()} pixels differ"


def test_embedding_matches_reference(embedded):
    ref, _, emb = embedded
    assert emb.features.shape == (1, 256, 64, 64)
    _close(emb.features, ref.features)


PROMPTS = {
    "point": dict(points=[[300, 420]], labels=[1]),
    "positive_and_negative_points": dict(points=[[300, 420], [520, 610], [100, 90]], labels=[1, 0, 0]),
    "box": dict(box=[200, 250, 640, 700]),
    "box_and_point": dict(box=[200, 250, 640, 700], points=[[400, 480]], labels=[0]),
}


def _reference_kwargs(kw: dict) -> dict:
    """Our (row, col) prompts in the reference's (x, y) convention."""
    out = {}
    if "points" in kw:
        out["point_coords"] = np.asarray(kw["points"], dtype=float)[:, ::-1]
        out["point_labels"] = np.asarray(kw["labels"])
    if "box" in kw:
        r0, c0, r1, c1 = kw["box"]
        out["box"] = np.array([c0, r0, c1, r1], dtype=float)
    return out


@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_prompts_match_reference(embedded, prompt):
    ref, ours, emb = embedded
    kw = PROMPTS[prompt]
    ref_masks, ref_scores, ref_logits = ref.predict(**_reference_kwargs(kw), multimask_output=True)
    cand = ours.predict(emb, **kw)
    assert cand.masks.shape == (3, 1024, 1024) and cand.masks.dtype == bool
    assert cand.logits.shape == (3, 256, 256)
    _close(cand.scores, ref_scores)
    _close(cand.logits, ref_logits)
    _same_masks(cand.masks, ref_masks)

    # Refinement: the best candidate's logits go back in as mask_input, single-mask output.
    best = int(np.argmax(ref_scores))
    ref2 = ref.predict(**_reference_kwargs(kw), mask_input=ref_logits[best][None], multimask_output=False)
    cand2 = ours.predict(emb, **kw, mask_input=cand.logits[cand.best], multimask=False)
    assert cand2.masks.shape == (1, 1024, 1024)
    _close(cand2.scores, ref2[1])
    _close(cand2.logits, ref2[2])
    _same_masks(cand2.masks, ref2[0])


def test_non_square_uint8_matches_reference():
    """Resizing of a non-square uint8 image and the mask crop/upscale follow the reference
    (the same for every encoder: the small one keeps this test quick)."""
    ref, ours = _pair("vit_t")
    image = _image((480, 640))
    ref.set_image(image)
    emb = ours.embed(image)
    assert emb.input_size == (768, 1024) and emb.original_size == (480, 640)
    _close(emb.features, ref.features)
    kw = PROMPTS["box_and_point"] | dict(box=[100, 120, 300, 400], points=[[200, 250]])
    ref_masks, ref_scores, ref_logits = ref.predict(**_reference_kwargs(kw))
    cand = ours.predict(emb, **kw)
    _close(cand.scores, ref_scores)
    _same_masks(cand.masks, ref_masks)
