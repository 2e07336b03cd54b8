"""SAM 2.1 memory attention and memory encoder against the sam2 package (used here only, as
the oracle)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from napari_sam.model.memory_attention import MemoryAttention, rotary_angles
from napari_sam.model.memory_encoder import MemoryEncoder

from .conftest import perturb_

CONFIGS = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")


@pytest.fixture(scope="module")
def oracle() -> torch.nn.Module:
    """SAM 2.1 Hiera-T with random weights, every state tensor perturbed (the layer-scale
    ``gamma`` of 1e-6 would otherwise hide the fuser's MLP)."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu").eval()
    perturb_(model.memory_attention, seed=1)
    perturb_(model.memory_encoder, seed=2, scale=0.1)
    return model


@pytest.fixture(scope="module")
def attention(oracle) -> MemoryAttention:
    ours = MemoryAttention().eval()
    ours.load_state_dict(oracle.memory_attention.state_dict(), strict=True)
    return ours


@pytest.fixture(scope="module")
def encoder(oracle) -> MemoryEncoder:
    ours = MemoryEncoder().eval()
    ours.load_state_dict(oracle.memory_encoder.state_dict(), strict=True)
    return ours


def test_rotary_tables_are_the_oracles_and_stay_out_of_the_state_dict(attention):
    from sam2.modeling.position_encoding import compute_axial_cis

    ref = compute_axial_cis(dim=256, end_x=64, end_y=64, theta=10000.0)
    assert (torch.polar(torch.ones(1), rotary_angles(64, 256)) - ref).abs().max() < 1e-6
    assert (torch.view_as_complex(attention.rope_turns) - ref).abs().max() < 1e-6
    assert not any(k.startswith("rope_") for k in attention.state_dict())


def _first_layer(oracle_attention: torch.nn.Module) -> tuple[torch.nn.Module, MemoryAttention]:
    """The oracle cut down to its first layer (and final norm), and ours loaded from it."""
    ref = copy.deepcopy(oracle_attention)
    ref.layers, ref.num_layers = ref.layers[:1], 1
    cut = MemoryAttention(depth=1).eval()
    cut.load_state_dict(ref.state_dict(), strict=True)
    return ref, cut


@pytest.mark.parametrize(
    ("grid", "frames", "pointers", "batch"),
    [
        (64, 1, 8, 1),  # the SAM 2.1 grid, on the precomputed tables (one layer: CPU time)
        (16, 1, 0, 2),
        (16, 3, 8, 1),
        (16, 3, 8, 2),
    ],
)
def test_memory_attention_matches_oracle(oracle, attention, grid, frames, pointers, batch):
    ref_module, ours_module = oracle.memory_attention, attention
    if grid == 64:
        ref_module, ours_module = _first_layer(ref_module)
    gen = torch.Generator().manual_seed(grid + 10 * frames + 100 * batch)
    hw, m = grid * grid, frames * grid * grid + pointers
    current, current_pos = torch.randn(2, batch, hw, 256, generator=gen)
    memory, memory_pos = torch.randn(2, batch, m, 64, generator=gen)
    with torch.no_grad():
        seq_first = (t.transpose(0, 1) for t in (current, memory, current_pos, memory_pos))
        ref = ref_module(*seq_first, num_obj_ptr_tokens=pointers).transpose(0, 1)
        ours = ours_module(current, memory, current_pos, memory_pos, num_obj_ptr_tokens=pointers)
    assert ours.shape == (batch, hw, 256)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_memory_attention_turns_keys_alike_with_gradients(attention):
    """With gradients recorded the rotary code is applied out of place: same result."""
    gen = torch.Generator().manual_seed(4)
    current, current_pos = torch.randn(2, 1, 64, 256, generator=gen)
    memory, memory_pos = torch.randn(2, 1, 2 * 64 + 8, 64, generator=gen)
    with torch.no_grad():
        ref = attention(current, memory, current_pos, memory_pos, num_obj_ptr_tokens=8)
    memory.requires_grad_(True)
    ours = attention(current, memory, current_pos, memory_pos, num_obj_ptr_tokens=8)
    ours.sum().backward()
    assert memory.grad is not None and memory.grad[:, -8:].abs().sum() > 0
    torch.testing.assert_close(ours.detach(), ref, rtol=1e-5, atol=1e-5)


def test_memory_attention_rejects_partial_frames(attention):
    x = torch.zeros(1, 256, 256)
    memory = torch.zeros(1, 256 + 5, 64)
    with pytest.raises(ValueError, match="whole frames"):
        attention(x, memory, x, memory, num_obj_ptr_tokens=4)


@pytest.mark.parametrize("binary", [False, True])
def test_memory_encoder_matches_oracle(oracle, encoder, binary):
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(1, 256, 64, 64, generator=gen)
    masks = torch.randn(1, 1, 1024, 1024, generator=gen) * 4
    if binary:
        masks = (masks > 0).float()
    with torch.no_grad():
        ref = oracle.memory_encoder(features, masks, skip_mask_sigmoid=binary)
        ours, pos = encoder(features, masks, skip_mask_sigmoid=binary)
    assert ours.shape == pos.shape == (1, 64, 64, 64)
    torch.testing.assert_close(ours, ref["vision_features"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pos, ref["vision_pos_enc"][0], rtol=0, atol=0)


def _config(name: str):
    from omegaconf import OmegaConf
    import sam2

    return OmegaConf.load(Path(sam2.__file__).parent / "configs" / "sam2.1" / f"{name}.yaml").model


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_every_sam2_1_config_has_the_same_memory_modules():
    from hydra.utils import instantiate

    sections = [{part: _config(name)[part] for part in ("memory_attention", "memory_encoder")} for name in CONFIGS]
    assert all(s == sections[0] for s in sections[1:])
    large = sections[-1]
    assert _shapes(instantiate(large["memory_attention"])) == _shapes(MemoryAttention())
    assert _shapes(instantiate(large["memory_encoder"])) == _shapes(MemoryEncoder())
