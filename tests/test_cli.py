"""The command line refuses what it cannot do well before any model work: typos in --model
or --device. Each refusal is one line, exit status 2, nothing written, no model loaded."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam import cli


@pytest.fixture
def model_loads(monkeypatch):
    """Records every attempt to load a model; none is made."""
    import napari_sam.loading

    calls = []

    def load_model(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(napari_sam.loading, "load_model", load_model)
    return calls


@pytest.fixture
def images(tmp_path):
    """A folder of two small real-typed images (uint16, like microscopy)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(folder / name, rng.integers(0, 4000, (48, 48), dtype=np.uint16))
    return folder


def contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def refused(capsys, argv, *needles):
    """Run the CLI, expect exit status 2 and one line of error naming every needle."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# --------------------------------------------------------------------------- typos in options


@pytest.mark.parametrize("command", ["segment", "embed"])
def test_model_typo_is_one_line_naming_the_models(images, tmp_path, model_loads, capsys, command):
    out = str(tmp_path / ("o.tif" if command == "segment" else "o.zarr"))
    err = refused(capsys, [command, str(images / "a.tif"), "-o", out, "--model", "lite_medsm"],
                  "--model", "unknown model 'lite_medsm'", "vit_b", "did you mean 'lite_medsam'")
    assert err.startswith(f"napari-sam {command}: error:")
    refused(capsys, [command, str(images / "a.tif"), "-o", out, "--model", str(tmp_path / "mine.pth")],
            "checkpoint file", "not found")
    assert model_loads == [] and not (tmp_path / "o.tif").exists() and not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("command", ["segment", "embed"])
def test_device_typo_is_one_line_naming_the_devices(images, tmp_path, model_loads, capsys, command):
    out = str(tmp_path / ("o.tif" if command == "segment" else "o.zarr"))
    refused(capsys, [command, str(images / "a.tif"), "-o", out, "--device", "gpu"],
            "--device", "unknown device 'gpu'", "auto, cpu, cuda, cuda:N", "mps")
    refused(capsys, [command, str(images / "a.tif"), "-o", out, "--device", "cuda:x"], "unknown device")
    assert model_loads == []


def test_valid_spellings_are_accepted():
    args = cli.build_parser().parse_args(["segment", "x.tif", "-o", "y.tif", "--model", "LiteMedSAM",
                                          "--device", "CUDA:1"])
    assert args.device == "cuda:1" and args.model == "LiteMedSAM"
    assert cli.build_parser().parse_args(["embed", "x.tif", "-o", "y.zarr"]).device == "auto"
