"""Time to embed a plane's zoomed tiles (what the widget embeds ahead of the prompts),
against one whole-plane embedding, for a 512 x 512 and a 2048 x 2048 field.

    python benchmarks/bench_tiles.py [--threads 1] [--sample 24]

The fields are the real nuclei plane and the same nuclei tiled into a 2048 px field
(napari_sam.variants.tile). The engine measures the object size, picks the tile level
(window side >= 3 object diameters, on a grid of half that stride) and embeds the tiles.
For the 2048 px field only ``--sample`` tiles are embedded, and the total is their median
time times the tile count (every tile is the same model input size, so the same work).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from napari_sam import Predictor, load_model
    from napari_sam.embeddings.engine import Engine, PlaneSource
    from napari_sam.variants import tile

    image, labels = tifffile.imread(DATA / "nuclei2d.tif"), tifffile.imread(DATA / "nuclei2d_labels.tif")
    predictor = Predictor(load_model("lite_medsam", device="cpu", precision="auto"))
    predictor.embed(image)  # warm-up
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; lite_medsam, "
          f"precision auto; {args.threads} torch thread(s)")
    for name, plane in (("512x512", image), ("2048x2048", tile(image, labels, 2048)[0])):
        engine = Engine(predictor)
        source = PlaneSource(plane)
        start = time.perf_counter()
        engine.embedding(source, ())
        whole = time.perf_counter() - start
        tiles = engine.tiles(source, ())
        limits = engine.prompts.plane_limits(plane, engine.key(source, ()))
        times = []
        for win in tiles[: args.sample if len(tiles) > 2 * args.sample else len(tiles)]:
            start = time.perf_counter()
            engine.prompts.window_embedding(plane, win, engine.key(source, ()), limits)
            times.append(time.perf_counter() - start)
        per_tile = statistics.median(times)
        total = sum(times) if len(times) == len(tiles) else per_tile * len(tiles)
        how = "measured" if len(times) == len(tiles) else f"{len(times)} measured, the rest at their median"
        print(f"{name}: object size {engine.object_size(source, ()):.0f} px -> {len(tiles)} tiles of "
              f"{tiles[0].shape[0]} px; one whole-plane embedding {whole:.2f} s; all tiles {total:.1f} s "
              f"({how}; median {per_tile:.2f} s per tile, {total / whole:.0f}x the whole plane)")


if __name__ == "__main__":
    main()
