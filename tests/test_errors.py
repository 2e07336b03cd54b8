"""Friendly errors: napari without a Qt binding, torch without CUDA, running out of memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from napari_sam import cli
from napari_sam.device import select_device
from napari_sam.embeddings.engine import Engine, PlaneSource
from napari_sam.errors import (
    QT_INSTALL_HINT,
    DeviceUnavailableError,
    NotEnoughMemoryError,
    friendly_oom,
    is_out_of_memory,
)

CUDA_OOM = "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 7.79 GiB total capacity)"


# --------------------------------------------------------------------------- no Qt binding


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "QT_API"}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environ, timeout=120, check=False)


def test_widget_import_without_qt_binding_says_what_to_install():
    # A fresh interpreter in which no Qt binding can be imported, as after `pip install napari-sam-kit`.
    result = _run_python("""
        import sys
        for name in ("PyQt6", "PySide6", "PyQt5", "PySide2"):
            sys.modules[name] = None
        try:
            import napari_sam._qt
        except ImportError as exc:
            print(type(exc).__name__, "|", exc)
            sys.exit(3)
    """)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith("QtBindingError |")
    assert QT_INSTALL_HINT in result.stdout
    assert QT_INSTALL_HINT == 'pip install "napari-sam-kit[pyqt6]"'


def test_qt_binding_that_cannot_load_names_the_system_packages():
    # The binding is installed but its libraries do not load (a bare Linux container).
    result = _run_python("""
        import sys
        sys.modules["PyQt6.QtWidgets"] = None
        try:
            import napari_sam._qt
        except ImportError as exc:
            print(type(exc).__name__, "|", exc)
            sys.exit(3)
    """, QT_API="pyqt6")
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith("QtBindingError |")
    assert "PyQt6 is installed but cannot load" in result.stdout
    assert "libxcb-cursor0" in result.stdout and "xvfb-run" in result.stdout


# --------------------------------------------------------------------------- torch without CUDA


@pytest.fixture
def no_cuda_build(monkeypatch):
    """A CPU-only torch build, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_on_a_cpu_only_torch_build(no_cuda_build, name):
    with pytest.raises(DeviceUnavailableError) as info:
        select_device(name)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)  # what callers caught before
    assert "built without CUDA" in message and torch.__version__ in message
    assert "device='cpu'" in message and "'auto'" in message


def test_cuda_build_without_a_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(DeviceUnavailableError, match="no usable NVIDIA GPU") as info:
        select_device("cuda")
    assert "nvidia-smi" in str(info.value) and "CUDA_VISIBLE_DEVICES" in str(info.value)
    assert "device='cpu'" in str(info.value)


def test_cuda_index_beyond_the_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceUnavailableError, match=r"cuda:3 was requested but only 1 CUDA device"):
        select_device("cuda:3")


def test_auto_never_raises_without_cuda(no_cuda_build, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")


@pytest.fixture
def stack_file(tmp_path):
    path = tmp_path / "stack.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 255, (2, 48, 48), dtype=np.uint8))
    return path


def test_cli_cuda_without_cuda_prints_advice_not_a_traceback(no_cuda_build, stack_file, tmp_path, capsys):
    code = cli.main(["embed", str(stack_file), "-o", str(tmp_path / "s.zarr"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: CUDA was requested") and "built without CUDA" in err
    assert "device='cpu'" in err and "Traceback" not in err


# --------------------------------------------------------------------------- out of memory


@pytest.mark.parametrize("exc", [
    MemoryError(),
    torch.OutOfMemoryError(CUDA_OOM),
    RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.00 GB)"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not enough memory: "
                 "you tried to allocate 4294967296 bytes."),
    RuntimeError("[enforce fail at alloc_cpu.cpp:83] DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)"),
])
def test_out_of_memory_is_recognised(exc):
    assert is_out_of_memory(exc)


@pytest.mark.parametrize("exc", [
    RuntimeError("Expected all tensors to be on the same device"),
    ValueError("out of memory"),  # not an allocation failure, whatever it says
    KeyError("memory"),
])
def test_other_errors_are_not_out_of_memory(exc):
    assert not is_out_of_memory(exc)


def test_friendly_oom_explains_a_gpu_oom():
    original = torch.OutOfMemoryError(CUDA_OOM)
    gpu = torch.device("cuda:0")
    with pytest.raises(NotEnoughMemoryError) as info, friendly_oom("embedding plane 3", "vit_h", gpu):
        raise original
    message = str(info.value)
    assert message.startswith("Not enough GPU memory for embedding plane 3 with model 'vit_h' on cuda:0")
    assert "Tried to allocate 20.00 GiB" in message  # what torch said
    assert "smaller model" in message and "lite_medsam" in message
    assert "device='cpu'" in message and "--workers 1" in message
    assert info.value.__cause__ is original
    # Callers that caught torch's error (a RuntimeError) or Python's MemoryError still do.
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, MemoryError)


def test_friendly_oom_on_the_cpu_does_not_suggest_the_cpu():
    with pytest.raises(NotEnoughMemoryError) as info, friendly_oom("embedding the image", "lite_medsam", "cpu"):
        raise MemoryError()
    message = str(info.value)
    assert message.startswith("Not enough memory for embedding the image with model 'lite_medsam' on cpu")
    assert "device='cpu'" not in message and "smaller model" not in message
    assert "--workers 1" in message


def test_friendly_oom_lets_other_errors_through_unchanged():
    error = RuntimeError("Expected all tensors to be on the same device")
    with pytest.raises(RuntimeError) as info, friendly_oom("embedding", "vit_b", "cuda"):
        raise error
    assert info.value is error
    with pytest.raises(ValueError, match="bad box"), friendly_oom():
        raise ValueError("bad box")


def test_nested_friendly_oom_keeps_the_inner_message():
    with (pytest.raises(NotEnoughMemoryError, match="^Not enough memory for embedding plane 1 "),
          friendly_oom("embedding a stack"), friendly_oom("embedding plane 1", "vit_b", "cpu")):
        raise MemoryError()


@pytest.fixture
def encoder_out_of_memory(lite_predictor, monkeypatch):
    """The real LiteMedSAM whose image encoder runs out of GPU memory."""
    calls = []

    def forward(*args, **kwargs):
        calls.append(1)
        raise torch.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(lite_predictor.model.image_encoder, "forward", forward)
    return calls


def test_engine_embedding_out_of_memory(lite_predictor, encoder_out_of_memory):
    engine = Engine(lite_predictor)
    source = PlaneSource(np.zeros((3, 40, 40), np.uint8))
    with pytest.raises(NotEnoughMemoryError, match=r"embedding a plane with model 'lite_medsam'") as info:
        engine.embedding(source, (1,))
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    assert encoder_out_of_memory  # the encoder really ran
    # The widget's worker path (Engine.run) says the same.
    engine.request(source, (2,))
    with pytest.raises(NotEnoughMemoryError, match="embedding a plane"):
        list(engine.run())


def test_cli_embed_out_of_memory(lite_predictor, encoder_out_of_memory, stack_file, tmp_path, monkeypatch, capsys):
    import napari_sam.model.loading

    monkeypatch.setattr(napari_sam.model.loading, "load_model", lambda *a, **k: lite_predictor.model)
    code = cli.main(["embed", str(stack_file), "-o", str(tmp_path / "s.zarr"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: Not enough memory for embedding a plane" in err
    assert "--workers 1" in err and "Planes written so far are kept" in err
    assert "Traceback" not in err


def test_load_model_out_of_memory(monkeypatch):
    from napari_sam import load_model
    from napari_sam.model.sam import Sam

    def to(self, *args, **kwargs):
        raise torch.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(Sam, "to", to)
    expected = "^Not enough memory for loading the weights with model 'lite_medsam' on cpu"
    with pytest.raises(NotEnoughMemoryError, match=expected):
        load_model("lite_medsam", device="cpu")
