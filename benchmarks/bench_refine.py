"""Refining existing labels: the real nuclei with their outlines corrupted (each object
shifted, dilated or eroded by up to N px), re-segmented by ``refine_labels`` with the real
LiteMedSAM weights, on the microscope variants.

    python benchmarks/bench_refine.py [--threads N] [--pixels 2 3] [--seeds 3] [--variants native 2x ...]

Prints, per variant and corruption: the mean IoU of each object with its ground truth and
the mSA, as given and after refining; how many of the 20 % truly worst objects after
refining the lowest 20 % by quality (and by predicted IoU alone) hold; the seconds per
plane against one whole-plane embedding in the same run; and the window embeddings made.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_sam import Predictor, load_model, refine_labels
from napari_sam.metrics import iou, mean_segmentation_accuracy
from napari_sam.variants import VARIANTS, corrupted_labels, standard_variants

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--pixels", type=int, nargs="+", default=[2, 3], help="corruption sizes in px")
    parser.add_argument("--seeds", type=int, default=3, help="corruption draws per size")
    parser.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v != "2048"], choices=list(VARIANTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    image = tifffile.imread(ROOT / "tests/data/nuclei2d.tif")
    truth = tifffile.imread(ROOT / "tests/data/nuclei2d_labels.tif")
    predictor = Predictor(load_model("lite_medsam", device="cpu", precision="auto"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; LiteMedSAM on the CPU")
    print("variant     px  IoU given -> refined   mSA given -> refined   worst 20% held (quality / IoU)   "
          "s per plane (x one embedding)   windows")
    for name, var_image, var_truth in standard_variants(image, truth, args.variants):
        t = time.perf_counter()
        predictor.embed(var_image)
        one_embedding = time.perf_counter() - t
        for px in args.pixels:
            rows = []
            for seed in range(args.seeds):
                given = corrupted_labels(var_truth, pixels=px, seed=seed)
                service = predictor.prompts()
                calls = service.encoder_calls
                t = time.perf_counter()
                refined = refine_labels(predictor, var_image, given)
                seconds = time.perf_counter() - t
                before = np.mean([iou(var_truth == k, given == k) for k in refined.ids])
                after = np.array([iou(var_truth == k, refined.labels == k) for k in refined.ids])
                n = round(0.2 * len(refined.ids))
                worst = set(np.argsort(after, kind="stable")[:n])
                held = [len(set(np.argsort(q, kind="stable")[:n]) & worst) for q in (refined.quality, refined.predicted_iou)]
                rows.append((before, after.mean(), mean_segmentation_accuracy(var_truth, given),
                             mean_segmentation_accuracy(var_truth, refined.labels), *held, n, seconds,
                             service.encoder_calls - calls))
            r = np.array(rows)
            # The first draw embeds the windows; later draws of the same plane reuse them.
            print(f"{name:10s} {px:3d}  {r[:, 0].mean():.3f} -> {r[:, 1].mean():.3f} ({r[:, 1].min():.3f}-{r[:, 1].max():.3f})"
                  f"   {r[:, 2].mean():.3f} -> {r[:, 3].mean():.3f}        {r[:, 4].mean():4.1f} / {r[:, 5].mean():4.1f} of {int(r[0, 6])}"
                  f" (min {int(r[:, 4].min())})        {r[0, 7]:5.1f} ({r[0, 7] / one_embedding:.0f}x)"
                  f"                {int(r[0, 8])}", flush=True)


if __name__ == "__main__":
    main()
