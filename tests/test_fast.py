"""The fast inference path: precision choice, BatchNorm folding, the bf16 encoder and the
decoder's per-embedding cache, each against the exact float32 path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from napari_sam import Predictor
from napari_sam.model.sam import Sam
from napari_sam.model.fast import (apply_precision, bf16_is_fast, decoder_autocast, fold_batchnorms, memory_autocast,
                                  resolve_precision)
from napari_sam.model.vit import attend_with_decomposed_bias

from .conftest import perturb_


def test_auto_takes_bf16_only_where_it_is_native():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_is_fast(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", cpu)


def test_autocast_contexts_follow_the_path():
    """Prompts on the CPU fast path run under bf16 autocast; SAM 2 tracking steps too."""
    model = Sam("lite_medsam").eval()
    for ctx in (decoder_autocast, memory_autocast):
        with ctx(model):
            assert not torch.is_autocast_enabled("cpu")
    apply_precision(model, "bf16")
    for ctx in (decoder_autocast, memory_autocast):
        with ctx(model):
            assert torch.is_autocast_enabled("cpu")


def test_global_attention_for_all_heads_at_once_matches_per_head_bands():
    """GPUs take a band of query rows for all heads at once (fewer kernel launches), CPUs
    one head at a time; both give softmax(q k^T / sqrt(d) + bias) v."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 64 * 64, 16, generator=g) for _ in range(3))
    bias_h, bias_w = (torch.randn(3, 64, 64, 64, generator=g) for _ in range(2))
    per_head = attend_with_decomposed_bias(q, k, v, bias_h, bias_w, per_head=True)
    together = attend_with_decomposed_bias(q, k, v, bias_h, bias_w, per_head=False)
    bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(3, 4096, 4096)
    whole = torch.softmax(q @ k.transpose(1, 2) / 4 + bias, -1) @ v
    assert torch.allclose(per_head, whole, atol=1e-5) and torch.allclose(together, whole, atol=1e-5)


def test_folded_batchnorms_give_the_same_embedding():
    torch.manual_seed(0)
    encoder = perturb_(Sam("lite_medsam").image_encoder.eval(), seed=3)
    folded = copy.deepcopy(encoder)
    assert fold_batchnorms(folded) == sum(1 for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        a, b = encoder(x), folded(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_bf16_is_one_way_and_close():
    torch.manual_seed(0)
    model = perturb_(Sam("lite_medsam").eval(), seed=4)
    exact = copy.deepcopy(model)
    apply_precision(model, "bf16")
    assert model.precision == "bf16" and next(model.image_encoder.parameters()).dtype == torch.bfloat16
    assert next(model.mask_decoder.parameters()).dtype == torch.float32  # scores stay exact
    with pytest.raises(ValueError, match="load it again"):
        apply_precision(model, "fp32")
    image = np.random.default_rng(0).integers(0, 255, (200, 300), dtype=np.uint8)
    a, b = Predictor(exact).embed(image).features, Predictor(model).embed(image).features
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_prepared_image_is_reused_and_exact():
    """Prompts after the first on a plane reuse the decoder's image-side work; results equal
    a fresh decode, and a mask prompt (which changes the image side) bypasses the cache."""
    torch.manual_seed(0)
    pred = Predictor(perturb_(Sam("lite_medsam").eval(), seed=5))
    image = np.random.default_rng(1).integers(0, 255, (128, 160), dtype=np.uint8)
    emb = pred.embed(image)
    first = pred.predict(emb, box=(10, 20, 60, 90))
    cached = pred._prepared
    again = pred.predict(emb, box=(10, 20, 60, 90))
    assert pred._prepared is cached
    np.testing.assert_array_equal(first.logits, again.logits)
    refined = pred.predict(emb, box=(10, 20, 60, 90), mask_input=first.logits[first.best])
    assert pred._prepared is cached and not np.array_equal(refined.logits, first.logits)
    other = pred.embed(image[::-1].copy())
    pred.predict(other, points=[(50, 50)])
    assert pred._prepared[0] is other.features
