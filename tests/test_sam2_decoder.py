"""SAM 2.1 mask decoder and prompt encoder parity with the sam2 package, on random
(perturbed) weights, in fp32."""

from __future__ import annotations

import pytest
import torch

from napari_sam.model.prompt_encoder import PromptEncoder
from napari_sam.model.sam2_decoder import Sam2MaskDecoder

from .conftest import perturb_

ATOL = 1e-4


@pytest.fixture(scope="module")
def oracle():
    """A SAM 2.1 Hiera-T model built as ``build_sam2`` builds it (stability fallback on)."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")
    perturb_(model.sam_mask_decoder, seed=1)
    perturb_(model.sam_prompt_encoder, seed=2)
    return model.eval()


@pytest.fixture(scope="module")
def decoder(oracle):
    ours = Sam2MaskDecoder()
    ours.load_state_dict(oracle.sam_mask_decoder.state_dict(), strict=True)
    return ours.eval()


@pytest.fixture(scope="module")
def prompt_encoder(oracle):
    ours = PromptEncoder(256, 64, 1024)
    ours.load_state_dict(oracle.sam_prompt_encoder.state_dict(), strict=True)
    return ours.eval()


def _image(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random image embedding (batch, 256, 64, 64) and backbone levels at stride 4 and 8."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 256, 64, 64, generator=gen), torch.randn(batch, 256, 256, 256, generator=gen),
            torch.randn(batch, 256, 128, 128, generator=gen))


def _box_points(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 4) boxes as the oracle's image predictor sends them: corner points labelled 2, 3."""
    return boxes.reshape(-1, 2, 2), torch.tensor([[2, 3]]).repeat(boxes.shape[0], 1)


def _prompts() -> dict[str, tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]]:
    """Name -> (points, mask input) as the oracle's prompt encoder takes them."""
    gen = torch.Generator().manual_seed(3)
    box_xy, box_labels = _box_points(torch.tensor([[200.0, 310.5, 640.0, 700.0]]))
    click = torch.tensor([[[420.0, 515.0]]])
    return {
        "click": ((click, torch.tensor([[1]])), None),
        "two clicks, one negative": ((torch.tensor([[[420.0, 515.0], [600.0, 100.0]]]), torch.tensor([[1, 0]])), None),
        "box": ((box_xy, box_labels), None),
        "box and click": ((torch.cat([box_xy, click], 1), torch.cat([box_labels, torch.tensor([[1]])], 1)), None),
        "click and mask": ((click, torch.tensor([[1]])), torch.randn(1, 1, 256, 256, generator=gen) * 4),
        "3 prompts": ((torch.rand(3, 2, 2, generator=gen) * 1023, torch.tensor([[1, 0], [1, 1], [0, 1]])), None),
    }


def _compare(ours, ref) -> float:
    """Assert that a :class:`Sam2Decoded` matches the oracle's output tuple; returns the max diff."""
    masks, iou, tokens, score = ref
    pairs = [(ours.masks, masks), (ours.iou, iou), (ours.tokens, tokens), (ours.object_score, score)]
    for mine, theirs in pairs:
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=ATOL)
    return max(float((mine - theirs).abs().max()) for mine, theirs in pairs)


@torch.no_grad()
def test_decoder_matches_oracle(oracle, decoder):
    ref = oracle.sam_mask_decoder
    image, stride4, stride8 = _image(1, seed=0)
    high_res = decoder.project_high_res(stride4, stride8)
    for mine, theirs in zip(high_res, (ref.conv_s0(stride4), ref.conv_s1(stride8))):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    pe = oracle.sam_prompt_encoder.get_dense_pe()
    worst = 0.0
    for name, (points, mask) in _prompts().items():
        sparse, dense = oracle.sam_prompt_encoder(points=points, boxes=None, masks=mask)
        batched = sparse.shape[0] > 1
        for multimask in (True, False):
            expected = ref(image, pe, sparse, dense, multimask, repeat_image=batched, high_res_features=list(high_res))
            got = decoder(image, pe, sparse, dense, multimask, high_res)
            k, n = (3, 3) if multimask else (1, 1)
            assert got.masks.shape == (sparse.shape[0], k, 256, 256) and got.tokens.shape[1] == n, name
            worst = max(worst, _compare(got, expected))
    print(f"max abs diff vs oracle: {worst:.2e}")


@torch.no_grad()
def test_stability_fallback_takes_both_branches(oracle, decoder):
    """Two images (batched as in tracking): a huge offset in the first one's stride-4
    features gives a single mask of one sign (stable), the second's is not."""
    image, stride4, stride8 = _image(2, seed=4)
    stride4[0] += 1000.0
    high_res = decoder.project_high_res(stride4, stride8)
    pe = oracle.sam_prompt_encoder.get_dense_pe()
    points = torch.tensor([[[300.0, 300.0]], [[700.0, 500.0]]]), torch.tensor([[1], [1]])
    sparse, dense = oracle.sam_prompt_encoder(points=points, boxes=None, masks=None)

    ref = oracle.sam_mask_decoder
    assert ref.dynamic_multimask_via_stability and decoder.stability_fallback
    decoder.stability_fallback = ref.dynamic_multimask_via_stability = False
    try:
        single = decoder(image, pe, sparse, dense, False, high_res)
        _compare(single, ref(image, pe, sparse, dense, False, repeat_image=False, high_res_features=list(high_res)))
    finally:
        decoder.stability_fallback = ref.dynamic_multimask_via_stability = True
    candidates = decoder(image, pe, sparse, dense, True, high_res)
    logits = single.masks.flatten(1)
    stability = (logits > 0.05).sum(1) / (logits > -0.05).sum(1)
    assert stability[0] >= 0.98 > stability[1], stability

    got = decoder(image, pe, sparse, dense, False, high_res)
    best = candidates.iou[1].argmax()
    torch.testing.assert_close(got.masks[0], single.masks[0])
    torch.testing.assert_close(got.masks[1, 0], candidates.masks[1, best])
    torch.testing.assert_close(got.iou[1, 0], candidates.iou[1, best])
    torch.testing.assert_close(got.tokens, single.tokens)
    _compare(got, ref(image, pe, sparse, dense, False, repeat_image=False, high_res_features=list(high_res)))


def test_state_dict_keys_are_the_official_ones(oracle):
    ours = Sam2MaskDecoder().state_dict()
    theirs = oracle.sam_mask_decoder.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@torch.no_grad()
def test_prompt_encoder_matches_oracle(oracle, prompt_encoder):
    """SAM 1's prompt encoder loads SAM 2.1's weights and embeds clicks, boxes sent as
    corner points (labels 2 and 3, then the padding point) and masks alike."""
    ref = oracle.sam_prompt_encoder
    torch.testing.assert_close(prompt_encoder.dense_pe(), ref.get_dense_pe(), atol=1e-6, rtol=0)
    for name, (points, mask) in _prompts().items():
        sparse, dense = prompt_encoder(points, None, mask)
        ref_sparse, ref_dense = ref(points=points, boxes=None, masks=mask)
        torch.testing.assert_close(sparse, ref_sparse, atol=1e-6, rtol=0, msg=name)
        torch.testing.assert_close(dense, ref_dense, atol=1e-5, rtol=0, msg=name)


@torch.no_grad()
def test_box_as_corner_points(oracle, prompt_encoder):
    """The oracle's predictor sends a box as points labelled 2 and 3 ahead of the clicks,
    with a padding point after them: the same tokens as SAM 1's box-corner tokens followed
    by the clicks' tokens (padding included), and as our encoder's points labelled alike."""
    boxes = torch.tensor([[200.0, 310.5, 640.0, 700.0], [10.0, 20.0, 1000.0, 900.0]])
    box_xy, box_labels = _box_points(boxes)
    clicks = torch.tensor([[[420.0, 515.0]], [[50.0, 60.0]]]), torch.tensor([[0], [1]])
    for xy, labels in ((clicks[0][:, :0], clicks[1][:, :0]), clicks):  # box alone, box and click
        points = torch.cat([box_xy, xy], 1), torch.cat([box_labels, labels], 1)
        ref_sparse, _ = oracle.sam_prompt_encoder(points=points, boxes=None, masks=None)
        as_box = torch.cat([prompt_encoder.embed_boxes(boxes), prompt_encoder((xy, labels), None, None)[0]], 1)
        torch.testing.assert_close(as_box, ref_sparse, atol=1e-5, rtol=0)
        torch.testing.assert_close(prompt_encoder(points, None, None)[0], ref_sparse, atol=1e-5, rtol=0)


def test_stability_score(oracle, decoder):
    """Area above +0.05 over area above -0.05; 1 for a mask empty at both thresholds."""
    masks = torch.full((3, 1, 16, 16), -1.0)
    masks[0, 0, :10] = 1.0  # 160 pixels well inside
    masks[0, 0, 10, :3] = torch.tensor([0.06, 0.04, -0.04])  # one more inside, two at the edge
    masks[1] = 1.0
    expected = torch.tensor([[161 / 163], [1.0], [1.0]])
    torch.testing.assert_close(decoder.stability(masks), expected)
    torch.testing.assert_close(oracle.sam_mask_decoder._get_stability_scores(masks), expected)
