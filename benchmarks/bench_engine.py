"""Embedding memory and speed per slice, and Predictor.segment latency per prompt, on the
real nuclei data and the real LiteMedSAM weights.

    python benchmarks/bench_engine.py [--model lite_medsam] [--repeats 5] [--prompts 40]

Prints: bytes per cached slice in memory (float16) and on disk (zarr store, compressed),
the median time to embed one slice, and the time per box prompt through segment() on the
512 x 512 nuclei plane, cold (every window embedded) and warm (every window cached).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from timing import median_time

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def gt_boxes(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    from skimage.measure import regionprops

    return [(r.label, np.array([r.bbox[0], r.bbox[1], r.bbox[2] - 1, r.bbox[3] - 1])) for r in regionprops(labels)]


def bench_slices(predictor, repeats: int) -> None:
    from napari_sam.embeddings.store import embed_stack

    volume = tifffile.imread(DATA / "nuclei3d.tif")
    plane = volume[volume.shape[0] // 2]
    emb = predictor.embed(plane)
    half = emb.features.half()
    print(f"features per slice: {tuple(emb.features.shape)}")
    print(f"  in memory, float32     {emb.nbytes / 1e6:8.2f} MB")
    print(f"  in memory, float16     {half.element_size() * half.nelement() / 1e6:8.2f} MB")
    n = min(6, volume.shape[0])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        embed_stack(predictor, volume[:n], Path(tmp) / "s.zarr")
        first = time.perf_counter() - t0
        import zarr

        disk = zarr.open_group(str(Path(tmp) / "s.zarr"), mode="r")["features"].nbytes_stored() / n
        t0 = time.perf_counter()
        hits, _ = embed_stack(predictor, volume[:n], Path(tmp) / "s.zarr")
        second = time.perf_counter() - t0
    print(f"  on disk, float16 + zstd {disk / 1e6:7.2f} MB   ({n} slices)")
    t = median_time(lambda: predictor.embed(plane), repeats)
    print(f"embed one {plane.shape[0]}x{plane.shape[1]} slice: median {t * 1e3:.0f} ms of {repeats}")
    print(f"store: {n} slices embedded in {first:.1f} s ({first / n * 1e3:.0f} ms/slice); "
          f"rerun {second * 1e3:.0f} ms with {hits}/{n} reused")


def bench_segment(predictor, n_prompts: int) -> None:
    from napari_sam.cache import EmbeddingCache
    from napari_sam.prompting.service import PromptService

    image = tifffile.imread(DATA / "nuclei2d.tif")
    labels = tifffile.imread(DATA / "nuclei2d_labels.tif")
    boxes = gt_boxes(labels)[:n_prompts]
    zoom = PromptService(predictor, EmbeddingCache())
    t0 = time.perf_counter()
    for _, box in boxes:
        zoom.segment(image, box=box, multimask=False)
    cold = time.perf_counter() - t0
    windows = zoom.encoder_calls
    times = []
    for _, box in boxes:
        t1 = time.perf_counter()
        zoom.segment(image, box=box, multimask=False)
        times.append(time.perf_counter() - t1)
    print(f"segment() on 512x512, {len(boxes)} box prompts: cold {cold:.1f} s total "
          f"({windows} window embeddings, {cold / len(boxes) * 1e3:.0f} ms/prompt); "
          f"warm median {statistics.median(times) * 1e3:.0f} ms/prompt")
    emb = predictor.embed(image)
    t = median_time(lambda: predictor.predict(emb, box=boxes[0][1], multimask=False), 10)
    print(f"predict() on a cached whole-plane embedding: median {t * 1e3:.0f} ms/prompt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lite_medsam")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=40)
    args = parser.parse_args(argv)

    from napari_sam import Predictor, load_model

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, model {args.model} on {args.device}")
    predictor = Predictor(load_model(args.model, device=args.device))
    bench_slices(predictor, args.repeats)
    bench_segment(predictor, args.prompts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
