"""One box per nucleus on the real nucleus volume of the tests, propagated through each of
its axes: mean 3D IoU and seconds per object, with and without the voxel size.

    python benchmarks/bench_volume_axes.py [--threads 1] [--axes z,y,x]

The volume (31 x 61 x 57) is sampled about twice as coarsely in z as in y and x (its nuclei
are 7 slices deep and 15 px wide). Each nucleus is prompted with its true box on the middle
plane of its extent along the axis, then:

- ``plane to plane``: :func:`napari_sam.propagate` with no voxel size (the intensity carry);
- ``with spacing``: the same given ``spacing`` (z twice y and x), which crosses to z when
  propagating through y or x (:mod:`napari_sam.segmentation.crossing`);
- ``oracle``: SAM given the true box on every plane of the nucleus (the prompt service at
  zoom), the ceiling of any plane-by-plane method.

Seconds are per object and per plane it spans, against one embedding of a plane.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
NAMES = "zyx"


def box(mask: np.ndarray) -> np.ndarray:
    r, c = np.nonzero(mask)
    return np.array([r.min(), c.min(), r.max(), c.max()], np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--axes", default="z,y,x")
    args = parser.parse_args()
    import tifffile
    import torch
    from skimage.measure import regionprops

    from napari_sam import Predictor, load_model, propagate
    from napari_sam.metrics import iou

    torch.set_num_threads(args.threads)
    volume = tifffile.imread(DATA / "nuclei3d.tif").astype(np.float32)
    labels = tifffile.imread(DATA / "nuclei3d_labels.tif")
    predictor = Predictor(load_model("lite_medsam", device="cpu"))
    service = predictor.prompts()
    spacing = (2.0, 1.0, 1.0)
    print(f"torch {torch.__version__}, {args.threads} thread(s); lite_medsam, precision {predictor.model.precision}")
    print(f"{'through':8s} {'plane to plane':>15s} {'with spacing':>13s} {'oracle':>7s}   s/object (s/plane, embeddings)")
    for name in args.axes.split(","):
        axis = NAMES.index(name)
        order = [axis] + [a for a in range(3) if a != axis]
        v, lab = np.moveaxis(volume, axis, 0), np.moveaxis(labels, axis, 0)
        sp = tuple(spacing[a] for a in order)
        start = time.perf_counter()
        predictor.embed(v[len(v) // 2])
        embed_s = time.perf_counter() - start
        plain, crossed, oracle, seconds, planes = [], [], [], [], []
        for region in regionprops(lab):
            mid = (region.bbox[0] + region.bbox[3] - 1) // 2
            truth = lab == region.label
            start = time.perf_counter()  # first, so no embedding comes from the cache
            crossed.append(iou(propagate(predictor, v, mid, box=box(truth[mid]), spacing=sp), truth))
            seconds.append(time.perf_counter() - start)
            plain.append(iou(propagate(predictor, v, mid, box=box(truth[mid])), truth))
            best = np.zeros_like(truth)
            for k in np.flatnonzero(truth.any((1, 2))):
                cand = service.segment(v[k], box=box(truth[k]))
                best[k] = cand.masks[cand.best]
            oracle.append(iou(best, truth))
            planes.append(int(truth.any((1, 2)).sum()))
        per_object = float(np.median(seconds))
        per_plane = float(np.median(np.array(seconds) / np.array(planes)))
        print(f"{name:8s} {np.mean(plain):15.2f} {np.mean(crossed):13.2f} {np.mean(oracle):7.2f}   "
              f"{per_object:.2f} ({per_plane:.3f}, {per_plane / embed_s:.2f})   {len(seconds)} nuclei, spacing {sp}")


if __name__ == "__main__":
    main()
