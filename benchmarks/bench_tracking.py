"""Tracking through movies of real nuclei moving 1-5 px per frame: mean per-frame IoU of
:func:`napari_sam.segmentation.tracking.track` against the intensity carry of :func:`napari_sam.propagate`,
and seconds per object per frame against one embedding of a frame, in the same run.

    python benchmarks/bench_tracking.py [--speeds 1,3,5] [--objects 30] [--frames 10] [--threads 1] [--crop]

One box per nucleus on frame 0 (its ground-truth box); nuclei smaller than 30 px are
left out. The movie is made by :func:`napari_sam.variants.moving` from the bundled 512^2
image (a 256^2 crop with ``--crop``, whose cut nuclei make poor starts): objects move,
turn, and pass over each other, so even a ground-truth box on every frame ("oracle") does
not reach IoU 1.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_sam import Predictor, load_model, propagate
from napari_sam.metrics import iou
from napari_sam.segmentation.tracking import ArrayFrames, track
from napari_sam.variants import moving

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def box_of(mask: np.ndarray) -> np.ndarray:
    r, c = np.nonzero(mask)
    return np.array([r.min(), c.min(), r.max(), c.max()], np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speeds", default="1,3,5")
    ap.add_argument("--objects", type=int, default=30)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--crop", action="store_true", help="a 256^2 crop, not the whole 512^2 image")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    image = tifffile.imread(DATA / "nuclei2d.tif")
    labels = tifffile.imread(DATA / "nuclei2d_labels.tif")
    if args.crop:
        image, labels = image[:256, :256], labels[:256, :256]
    predictor = Predictor(load_model("lite_medsam", device="cpu"))
    embed_s = statistics.median(_timed(lambda: predictor.embed(image)) for _ in range(3))
    print(f"threads {args.threads}; one whole-frame embedding ({image.shape[0]}^2): {embed_s:.2f} s")
    print("speed px/frame | track IoU | intensity carry IoU | oracle IoU | stopped early | s/object/frame")
    for speed in (float(s) for s in args.speeds.split(",")):
        movie, truth = moving(image, labels, frames=args.frames, speed_px=speed, seed=1)
        service = predictor.prompts()
        frames = ArrayFrames(service, movie)
        ids = [k for k in np.unique(truth[0]) if k and (truth[0] == k).sum() > 30]
        ids = sorted(np.random.default_rng(0).choice(ids, size=min(args.objects, len(ids)), replace=False))
        ours, carried, oracle, early, seconds = [], [], [], 0, 0.0
        for k in ids:
            obj = truth == k
            t0 = time.perf_counter()
            start = service.segment(movie[0], box=box_of(obj[0]))
            result = track(frames, 0, start.masks[start.best])
            seconds += time.perf_counter() - t0
            ours.append(np.mean([iou(result.mask(t), obj[t]) for t in range(args.frames)]))
            early += result.span[1] < args.frames - 1
            carried.append(np.mean([iou(m, o) for m, o in zip(propagate(predictor, movie, 0, box=box_of(obj[0])), obj)]))
            oracle.append(np.mean([_oracle(service, movie[t], obj[t]) for t in range(args.frames)]))
        per = seconds / len(ids) / args.frames
        print(f"{speed:14.0f} | {np.mean(ours):9.3f} | {np.mean(carried):19.3f} | {np.mean(oracle):10.3f} | "
              f"{early:>5d} of {len(ids):<3d} | {per:.2f} ({per / embed_s:.2f} embeddings)")


def _oracle(service, plane: np.ndarray, truth: np.ndarray) -> float:
    if not truth.any():
        return 0.0
    cand = service.segment(plane, box=box_of(truth))
    return iou(cand.masks[cand.best], truth)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
