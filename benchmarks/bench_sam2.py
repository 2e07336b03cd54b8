"""SAM 2.1 (Hiera-T, random weights) against the reference ``sam2`` package in the same run:
encoder latency, per-frame tracking by memory, and the memory a long stack costs.

    python benchmarks/bench_sam2.py [--sections 1,2,3] [--threads 1,2] [--frames-speed 12]
                                    [--frames-memory 200] [--memory-threads 1] [--json PATH]

1. The Hiera-T encoder on a 1024^2 input: ours in float32 and on the bf16 fast path (if
   the CPU runs bf16 natively), the reference in float32 and under bf16 autocast (how its
   README runs it on CUDA). Median of ``--repeats`` after a warm-up, at each of ``--threads``.
2. Tracking one click on frame 0 through ``--frames-speed`` frames of a moving nuclei field,
   the encoder left out (every frame's features computed once, beforehand; the reference
   gets ours in float32, which match its own encoder's). Median seconds per frame once the
   memory bank is full (frame >= 7), at the largest of ``--threads``; and how far the fast
   path's masks are from float32's.
3. Peak memory over ``--frames-memory`` frames, ours and the reference each in its own
   process (at the same time, ``--memory-threads`` each), features made per frame from the
   frame number and not kept, as the engine's store serves them.

Both networks get +4 on the object-score head's bias, so that the random network sees the
object on every frame (trained weights would decide).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ARCH = "sam2.1_hiera_t"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
FULL_BANK = 7  # from this frame on, 6 earlier memories and the prompted frame's are attended to
OBJECT_BIAS = 4.0
MB = 2**20


# ---------------------------------------------------------------------- models


def reference_predictor():
    """The reference video predictor, random weights (seed 0), fp32, in eval mode."""
    import sam2.sam2_video_predictor as svp
    import sam2.utils.misc as misc
    from sam2.build_sam import build_sam2_video_predictor

    svp.tqdm = misc.tqdm = lambda it, **_: it  # progress bars would interleave with the figures
    # Without its compiled extension it skips hole filling (so does ours here: fill_hole_area=0).
    warnings.filterwarnings("ignore", message="cannot import name '_C'")
    torch.manual_seed(0)
    return build_sam2_video_predictor(CONFIG, None, device="cpu").eval()


def ours_like(reference, precision: str):
    """This project's Sam2 holding the reference's weights, on ``precision``'s path."""
    from napari_sam.model.checkpoint import load_state_dict
    from napari_sam.model.fast import apply_precision
    from napari_sam.model.loading import build

    model = build(ARCH)
    load_state_dict(model, reference.state_dict(), ARCH)
    return apply_precision(model.eval(), precision)


def see_the_object(*models) -> None:
    with torch.no_grad():
        for m in models:
            m.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(OBJECT_BIAS)


def moving_field(n: int) -> list[np.ndarray]:
    """``n`` frames of the bundled nuclei image drifting (3, 2) px per frame, 256 x 320."""
    import tifffile

    image = tifffile.imread(DATA / "nuclei2d.tif")
    return [np.roll(image, (3 * i, 2 * i), axis=(0, 1))[40:296, 60:380] for i in range(n)]


# ---------------------------------------------------------------------- driving the reference


class FrameIndex:
    """Stands in for the reference's ``state["images"]``: indexing gives the frame (a view)
    and records which was asked for, so that the patched ``forward_image`` answers with
    that frame's precomputed or streamed features."""

    def __init__(self, frames: torch.Tensor) -> None:
        self.frames = frames
        self.last = 0

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> torch.Tensor:
        self.last = int(i)
        return self.frames[i]


def reference_outputs(features: torch.Tensor, high_res: tuple[torch.Tensor, ...],
                      positions: list[torch.Tensor]) -> dict:
    """What the reference's ``forward_image`` returns for one frame (its high-res maps
    already through the decoder's 1x1 convolutions, as ours are)."""
    return {"vision_features": features, "vision_pos_enc": list(positions),
            "backbone_fpn": [high_res[0], high_res[1], features]}


def reference_track(reference, frames: FrameIndex, answer: Callable[[int], dict], h: int, w: int,
                    click_xy: np.ndarray, workdir: str) -> Iterator[tuple[int, torch.Tensor, dict]]:
    """Run the reference video predictor from one click on frame 0; its encoder answers
    from ``answer(frame)``. Yields (frame, (H, W) logits, its inference state)."""
    from PIL import Image

    reference.forward_image = lambda img: answer(frames.last)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(Path(workdir) / "00000.jpg")  # one, not N
    with torch.inference_mode():
        state = reference.init_state(workdir)
        state.update(images=frames, num_frames=len(frames), video_height=h, video_width=w, cached_features={})
        reference.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=click_xy, labels=np.array([1]))
        for i, _, masks in reference.propagate_in_video(state):
            yield i, masks[0, 0], state


def ours_track(model, features: Callable[[int], object], n: int, h: int, w: int,
               click_xy: np.ndarray) -> Iterator[tuple[int, torch.Tensor, object]]:
    """Our MemoryTracker from the same click. Yields (frame, (H, W) logits, the tracker)."""
    from napari_sam.segmentation.memory_propagation import MemoryTracker

    tracker = MemoryTracker(model, features, n, fill_hole_area=0, corrections_condition=False)
    tracker.prompt(0, 1, points=click_xy * [model.img_size / w, model.img_size / h], labels=[1])
    for i, outs in tracker.propagate():
        yield i, F.interpolate(outs[1].mask, (h, w), mode="bilinear", align_corners=False)[0, 0], tracker


def timed_frames(run: Iterator[tuple[int, torch.Tensor, object]]) -> tuple[dict[int, float], dict[int, np.ndarray]]:
    """Seconds from one frame's mask to the next, and the (H, W) bool masks."""
    seconds, masks = {}, {}
    t = time.perf_counter()
    for i, logits, _ in run:
        masks[i] = (logits > 0).cpu().numpy()
        now = time.perf_counter()
        seconds[i], t = now - t, now
    return seconds, masks


# ---------------------------------------------------------------------- 1. encoder


def interleaved_medians(fns: dict[str, Callable[[], object] | None], repeats: int) -> dict[str, float | None]:
    """Median seconds of each function over ``repeats`` rounds, after a warm-up each; one
    call of each per round, so that load from other processes on a shared machine falls
    on all of them alike (``timing.median_time`` runs one function's repeats back to back)."""
    live = {k: f for k, f in fns.items() if f is not None}
    for f in live.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in live}
    for _ in range(repeats):
        for k, f in live.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(times[k]) if k in live else None for k in fns}


def bench_encoder(threads: list[int], repeats: int, results: dict) -> None:
    from napari_sam.imaging import model_input
    from napari_sam.model.fast import bf16_is_fast, encoder_input

    reference = reference_predictor()
    fp32 = ours_like(reference, "fp32")
    fast = bf16_is_fast(torch.device("cpu"))
    bf16 = ours_like(reference, "bf16") if fast else None
    x = model_input(moving_field(1)[0], 1024, "sam", fit="stretch")[0]
    xb = encoder_input(bf16, x) if fast else None

    def autocast_ref() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reference.forward_image(x)

    print(f"\n1. Hiera-T encoder, 1024x1024 input, median of {repeats} after a warm-up "
          f"(bf16 native on this CPU: {fast})")
    print(f"{'threads':>7} | {'ours fp32':>9} | {'ours bf16':>9} | {'ref fp32':>9} | {'ref bf16 autocast':>17} | "
          f"{'fp32 ours/ref':>13} | {'bf16 ours/ref':>13} | {'ours bf16/ref fp32':>18}")
    rows = []
    variants = {"ours_fp32": lambda: fp32.encode(x), "ours_bf16": (lambda: bf16.encode(xb)) if fast else None,
                "ref_fp32": lambda: reference.forward_image(x), "ref_bf16_autocast": autocast_ref}
    for t in threads:
        torch.set_num_threads(t)
        with torch.inference_mode():
            row = {"threads": t, **interleaved_medians(variants, repeats)}
        rows.append(row)
        ob, rb, r32 = row["ours_bf16"], row["ref_bf16_autocast"], row["ref_fp32"]
        fast_cols = f"{ob / rb:13.2f} | {ob / r32:18.2f}" if ob else f"{'-':>13} | {'-':>18}"
        print(f"{t:>7} | {row['ours_fp32']:8.2f}s | " + (f"{ob:8.2f}s" if ob else f"{'-':>9}") +
              f" | {r32:8.2f}s | {rb:16.2f}s | {row['ours_fp32'] / r32:13.2f} | " + fast_cols)
    results["encoder"] = rows


# ---------------------------------------------------------------------- 2. per-frame tracking


def bench_tracking(n: int, threads: int, results: dict) -> None:
    from napari_sam.imaging import model_input
    from napari_sam.metrics import iou
    from napari_sam.model.fast import bf16_is_fast, encoder_input

    if n <= FULL_BANK:
        raise SystemExit(f"--frames-speed must exceed {FULL_BANK} for the memory bank to fill")
    torch.set_num_threads(threads)
    reference = reference_predictor()
    fp32 = ours_like(reference, "fp32")
    fast = bf16_is_fast(torch.device("cpu"))
    bf16 = ours_like(reference, "bf16") if fast else None
    see_the_object(reference, fp32, *([bf16] if fast else []))
    planes = moving_field(n)
    h, w = planes[0].shape
    inputs = torch.cat([model_input(p, 1024, "sam", fit="stretch")[0] for p in planes])
    t0 = time.perf_counter()
    with torch.inference_mode():
        feats32 = [fp32.encode(inputs[i:i + 1]) for i in range(n)]
        feats16 = [bf16.encode(encoder_input(bf16, inputs[i:i + 1])) for i in range(n)] if fast else None
        positions = [p.clone() for p in reference.forward_image(inputs[:1])["vision_pos_enc"]]
    print(f"\n2. Tracking one click on frame 0 through {n} frames ({h}x{w}), {threads} threads, encoder excluded "
          f"(features precomputed in {time.perf_counter() - t0:.0f} s)")
    click = np.array([[150.0, 130.0]])  # (x, y) in plane pixels

    def answer(i: int) -> dict:
        return reference_outputs(feats32[i].features, feats32[i].high_res, positions)

    with tempfile.TemporaryDirectory() as tmp:
        ref_s, ref_m = timed_frames(reference_track(reference, FrameIndex(inputs), answer, h, w, click, tmp))
    ours_s, ours_m = timed_frames(ours_track(fp32, feats32.__getitem__, n, h, w, click))
    runs = {"reference fp32": ref_s, "ours fp32": ours_s}
    if fast:
        fast_s, fast_m = timed_frames(ours_track(bf16, feats16.__getitem__, n, h, w, click))
        runs["ours bf16"] = fast_s
    medians = {k: statistics.median(v[i] for i in v if i >= FULL_BANK) for k, v in runs.items()}
    ref = medians["reference fp32"]
    print(f"median seconds per frame over frames {FULL_BANK}..{n - 1} (memory bank full):")
    for k, m in medians.items():
        print(f"  {k:<15} {m * 1e3:8.1f} ms   ratio to reference fp32 {m / ref:5.2f}")

    def agreement(a: dict, b: dict) -> tuple[float, float]:
        ious = [iou(a[i], b[i]) if (a[i] | b[i]).any() else 1.0 for i in range(n)]
        return float(np.mean(ious)), float(np.mean([(a[i] == b[i]).mean() for i in range(n)]))

    out = {"frames": n, "threads": threads, "plane": [h, w], "median_s_per_frame": medians,
           "per_frame_s": {k: [v[i] for i in range(n)] for k, v in runs.items()}}
    pairs = [("ours fp32 vs reference fp32", ours_m, ref_m)]
    if fast:
        pairs.append(("ours bf16 vs ours fp32", fast_m, ours_m))
    print(f"masks over all {n} frames (object area on frame {n - 1}: ours fp32 {int(ours_m[n - 1].sum())} px):")
    for name, a, b in pairs:
        m_iou, px = agreement(a, b)
        out[name] = {"mean_iou": m_iou, "pixel_agreement": px}
        print(f"  {name:<28} mean IoU {m_iou:.4f}   pixels agreeing {px * 100:.2f} %")
    results["tracking"] = out


# ---------------------------------------------------------------------- 3. memory over a long stack


def streamed(i: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Frame ``i``'s features, made on demand (the same for both runs), never kept."""
    g = torch.Generator().manual_seed(i)
    return torch.randn(1, 256, 64, 64, generator=g), (torch.randn(1, 32, 256, 256, generator=g),
                                                       torch.randn(1, 64, 128, 128, generator=g))


def tensor_bytes(obj, seen: set | None = None) -> int:
    """Bytes of the distinct tensor storages reachable through dicts, lists, tuples and
    dataclass fields of ``obj``."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        s = obj.untyped_storage()
        if s.data_ptr() in seen:
            return 0
        seen.add(s.data_ptr())
        return s.nbytes()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dataclass_fields__"):
        return sum(tensor_bytes(getattr(obj, f), seen) for f in obj.__dataclass_fields__)
    return 0


def held_bytes(who: str, holder) -> int:
    if who == "ours":
        seen: set = set()
        return sum(tensor_bytes(t.prompted, seen) + tensor_bytes(t.tracked, seen) for t in holder.objects.values())
    return tensor_bytes([holder[k] for k in ("output_dict_per_obj", "temp_output_dict_per_obj", "constants")])


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def memory_child(who: str, n: int, threads: int, out_path: str) -> None:
    """One run of section 3 in this process: print RSS along the way, write a JSON summary."""
    torch.set_num_threads(threads)
    h = w = 1024
    click = np.array([[512.0, 512.0]])
    if who == "ours":  # no sam2 import here: its modules would count in our RSS
        from napari_sam.model.loading import build
        from napari_sam.model.sam2 import FrameFeatures

        torch.manual_seed(0)
        model = build(ARCH).eval()
        see_the_object(model)
        run = ours_track(model, lambda i: FrameFeatures(*streamed(i)), n, h, w, click)
    else:
        reference = reference_predictor()
        see_the_object(reference)
        positions = reference_positions(reference)
        one = torch.zeros(1, 3, 1024, 1024).expand(n, 3, 1024, 1024)  # a view: 12 MB, not n x 12 MB
        tmp = tempfile.mkdtemp()
        run = reference_track(reference, FrameIndex(one), lambda i: reference_outputs(*streamed(i), positions),
                              h, w, click, tmp)
    base = rss_now()
    marks = set(range(25, n + 1, 25)) | {n}  # RSS every 25 frames shows growth or flatness
    rows = []
    t0 = time.perf_counter()
    print(f"[{who}] before tracking: rss {base / MB:.0f} MB", flush=True)
    for i, logits, holder in run:
        _ = (logits > 0).numpy()  # the consumer takes the mask, then drops it
        if i + 1 in marks:
            row = {"frames": i + 1, "rss_mb": rss_now() / MB, "peak_rss_mb": rss_peak() / MB,
                   "state_mb": held_bytes(who, holder) / MB, "seconds": time.perf_counter() - t0}
            rows.append(row)
            print(f"[{who}] frame {i + 1:>4}: rss {row['rss_mb']:7.0f} MB   peak {row['peak_rss_mb']:7.0f} MB   "
                  f"state held {row['state_mb']:7.1f} MB   ({row['seconds']:.0f} s)", flush=True)
    Path(out_path).write_text(json.dumps({"who": who, "frames": n, "threads": threads,
                                          "rss_before_mb": base / MB, "marks": rows}))


def reference_positions(reference) -> list[torch.Tensor]:
    """The reference encoder's position codes of its three levels, made by its own neck
    without running the trunk (they depend on the shape only, and are the same for every
    frame: one copy is held, as one encoder call would hold)."""
    code = reference.image_encoder.neck.position_encoding
    with torch.inference_mode():
        return [code(torch.zeros(1, 1, 1, 1).expand(1, 256, s, s)).clone() for s in (256, 128, 64)]


def bench_memory(n: int, threads: int, results: dict) -> None:
    frame_mb = 3 * 1024 * 1024 * 4 / MB
    print(f"\n3. Memory over {n} frames (1024x1024, one click on frame 0, features streamed per frame), "
          f"ours and the reference in separate processes at once, {threads} thread(s) each")
    print(f"the reference's frames in memory: init_state loads every frame as float32 (3, 1024, 1024), "
          f"{frame_mb:.0f} MB each: {n * frame_mb / 1024:.2f} GB for {n} frames, not counted below "
          f"(this run hands it an expanded view of one frame)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        procs = {who: subprocess.Popen([sys.executable, __file__, "--child", who, "--frames-memory", str(n),
                                        "--memory-threads", str(threads), "--child-out", f"{tmp}/{who}.json"])
                 for who in ("ours", "reference")}
        for who, p in procs.items():
            if p.wait() != 0:
                raise SystemExit(f"the {who} memory run failed (exit {p.returncode})")
        runs = {who: json.loads(Path(f"{tmp}/{who}.json").read_text()) for who in procs}
    print(f"{'frames':>6} | {'ours rss':>9} | {'ours peak':>9} | {'ours state':>10} | "
          f"{'ref rss':>9} | {'ref peak':>9} | {'ref state':>10}")
    for a, b in zip(runs["ours"]["marks"], runs["reference"]["marks"]):
        print(f"{a['frames']:>6} | {a['rss_mb']:6.0f} MB | {a['peak_rss_mb']:6.0f} MB | {a['state_mb']:7.1f} MB | "
              f"{b['rss_mb']:6.0f} MB | {b['peak_rss_mb']:6.0f} MB | {b['state_mb']:7.1f} MB")
    print(f"before tracking (model loaded): ours {runs['ours']['rss_before_mb']:.0f} MB, "
          f"reference {runs['reference']['rss_before_mb']:.0f} MB; the reference would add "
          f"{n * frame_mb:.0f} MB of frames")
    results["memory"] = {**runs, "reference_frames_mb": n * frame_mb}


# ---------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="1,2,3")
    ap.add_argument("--threads", default="1,2", help="torch threads for section 1; section 2 runs at the largest")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames-speed", type=int, default=12)
    ap.add_argument("--frames-memory", type=int, default=200)
    ap.add_argument("--memory-threads", type=int, default=1)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        memory_child(args.child, args.frames_memory, args.memory_threads, args.child_out)
        return
    threads = [int(t) for t in args.threads.split(",")]
    sections = {int(s) for s in args.sections.split(",")}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{ARCH} with random weights (the reference's, loaded into ours)")
    results: dict = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    if 1 in sections:
        bench_encoder(threads, args.repeats, results)
    if 2 in sections:
        bench_tracking(args.frames_speed, max(threads), results)
    if 3 in sections:
        bench_memory(args.frames_memory, args.memory_threads, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
