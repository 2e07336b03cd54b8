"""Sam2ImageEncoder (Hiera trunk + FPN neck) against the image encoder of the sam2 package,
used here only, as the oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_sam.model.hiera import HIERA_CONFIGS, max_pool_2x2
from napari_sam.model.sam2_image_encoder import Sam2ImageEncoder

from .conftest import perturb_

SIZES = {"hiera_t": "t", "hiera_s": "s", "hiera_b+": "b+", "hiera_l": "l"}


@pytest.fixture
def one_thread():
    # A small image means many short operations: on a busy machine each parallel one waits
    # for a descheduled second thread, and one thread runs the pass several times faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def oracle_encoder(arch: str) -> nn.Module:
    """The oracle's image encoder of a SAM 2.1 config, random weights."""
    import sam2  # noqa: F401  (registers the package's configs with hydra)
    from hydra import compose
    from hydra.utils import instantiate

    cfg = compose(config_name=f"configs/sam2.1/sam2.1_hiera_{SIZES[arch]}.yaml")
    return instantiate(cfg.model.image_encoder)


def randomised(encoder: nn.Module, seed: int) -> nn.Module:
    """``encoder`` in eval mode with its LayerNorms perturbed and both position embeddings
    random: built, they are ones, zeros and zeros, which could hide a mistake (the linear
    layers and convolutions are random already)."""
    for norm in (m for m in encoder.modules() if isinstance(m, nn.LayerNorm)):
        perturb_(norm, seed, scale=0.2)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (encoder.trunk.pos_embed, encoder.trunk.pos_embed_window):
            p.copy_(torch.randn(p.shape, generator=gen))
    return encoder.eval()


def run_both(arch: str, size: int, seed: int):
    """(ours, oracle): each a (trunk outputs, FPN features, position codes) on one random image."""
    torch.manual_seed(seed)
    oracle = randomised(oracle_encoder(arch), seed)
    ours = Sam2ImageEncoder(HIERA_CONFIGS[arch]).eval()
    ours.load_state_dict(oracle.state_dict(), strict=True)
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    results = []
    for model in (ours, oracle):
        trunk_out: list[torch.Tensor] = []
        hook = model.trunk.register_forward_hook(lambda _m, _i, out: trunk_out.extend(out))
        with torch.inference_mode():
            out = model(image)
        hook.remove()
        if isinstance(out, dict):  # the oracle
            out = (out["backbone_fpn"], out["vision_pos_enc"])
        results.append((trunk_out, *out))
    return results


def assert_all_close(ours: list[torch.Tensor], ref: list[torch.Tensor], shapes: list[tuple[int, ...]]) -> None:
    assert [tuple(t.shape) for t in ours] == [tuple(t.shape) for t in ref] == shapes
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_hiera_t_encoder_matches_the_oracle():
    (trunk, features, positions), (ref_trunk, ref_features, ref_positions) = run_both("hiera_t", 1024, seed=0)
    assert_all_close(trunk, ref_trunk, [(1, 96, 256, 256), (1, 192, 128, 128), (1, 384, 64, 64), (1, 768, 32, 32)])
    levels = [(1, 256, 256, 256), (1, 256, 128, 128), (1, 256, 64, 64)]
    assert_all_close(features, ref_features, levels)
    assert_all_close(positions, ref_positions, levels)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("arch", ["hiera_s", "hiera_b+"])
def test_small_image_matches_the_oracle(arch):
    # At 256x256 the stage grids are 64, 32, 16, 8: every window pads, and it costs little.
    (trunk, features, positions), (ref_trunk, ref_features, ref_positions) = run_both(arch, 256, seed=1)
    width = HIERA_CONFIGS[arch].embed_dim
    assert_all_close(trunk, ref_trunk, [(1, width * 2**i, 64 // 2**i, 64 // 2**i) for i in range(4)])
    levels = [(1, 256, 64, 64), (1, 256, 32, 32), (1, 256, 16, 16)]
    assert_all_close(features, ref_features, levels)
    assert_all_close(positions, ref_positions, levels)


@pytest.mark.parametrize("arch", list(HIERA_CONFIGS))
def test_weights_and_blocks_match_the_oracle(arch, monkeypatch):
    # Random initialisation would take seconds for Hiera-L; only names and shapes matter here.
    for layer in (nn.Linear, nn.Conv2d):
        monkeypatch.setattr(layer, "reset_parameters", lambda self: None)
    oracle = oracle_encoder(arch)
    with torch.device("meta"):
        ours = Sam2ImageEncoder(HIERA_CONFIGS[arch])
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in oracle.state_dict().items()}
    # window side, width, heads and query pooling of every block
    assert [(b.attn.window, b.norm2.normalized_shape[0], b.attn.num_heads, b.pool) for b in ours.trunk.blocks] == [
        (b.window_size, b.dim_out, b.attn.num_heads, b.q_stride is not None) for b in oracle.trunk.blocks
    ]
    assert tuple(oracle.neck.backbone_channel_list) == HIERA_CONFIGS[arch].backbone_channel_list


@pytest.mark.parametrize("h, w", [(8, 8), (7, 9), (3, 2)])
def test_max_pool_2x2_is_max_pool2d(h, w):
    x = torch.randn(2, 3, h, w, 5)  # pooled over axes 2 and 3
    expected = F.max_pool2d(x.permute(0, 1, 4, 2, 3).flatten(1, 2), 2).unflatten(1, (3, 5)).permute(0, 1, 3, 4, 2)
    assert torch.equal(max_pool_2x2(x, 2), expected)


def test_position_codes_are_shared_views():
    neck = Sam2ImageEncoder(HIERA_CONFIGS["hiera_t"]).neck
    first = neck.position_code(torch.zeros(2, 256, 8, 8))
    again = neck.position_code(torch.zeros(1, 256, 8, 8))
    assert first.shape == (2, 256, 8, 8) and torch.equal(first[1], again[0])
    assert first.data_ptr() == again.data_ptr()
    half = neck.position_code(torch.zeros(1, 256, 8, 8, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16 and torch.equal(half[0], again[0].bfloat16())
