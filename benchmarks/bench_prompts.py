"""Box and click quality on the image variants of one annotated field, through the
zoomed prompt service (what the widget and Predictor.segment both use) and through the
whole-plane path the widget used before (issue #16).

    python benchmarks/bench_prompts.py [--objects 20] [--background 10] [--variants native,2x,...] [--threads 1]

For each variant of the real 512 x 512 nuclei (napari_sam.variants: native, 2x, 3x, a 2048
px field, low photon, inverted, RGB stain) and for up to ``--objects`` nuclei (a fixed
random sample of those not touching the border), with LiteMedSAM (a box-only model):

* box: the nucleus's bounding box (inclusive pixels, padded by ``--pad`` px) through
  ``plane``, the old widget path (``predict`` on the whole-plane embedding, computed once
  per variant), and through ``segment``, the prompt service as the widget calls it
  (``Engine.segment``: zoomed windows, object size measured from the image); the mean IoU of the best-scored candidate with the
  nucleus, how many fall under IoU 0.5, and the two paths' agreement (IoU of their masks);
* click: one click on the nucleus pixel nearest its centroid. ``plane`` turns it into a
  box with the widget's click->box policy (``box_from_click``; None, no object, counts
  IoU 0) and predicts on the whole-plane embedding; ``segment`` gets the point (and, for
  the box-only model, turns it into a box at the measured object size). Mean IoU,
  clicks that gave no box, and clicks whose mask is another nucleus (IoU > 0.5 with it);
* background: ``--background`` clicks farther than 15 px (times the magnification) from
  any nucleus; the fraction that offered a mask;
* the median wall time per box and per click prompt (window embeddings included for
  ``segment``, each phase with an empty cache: see bench_widget.py for prompts on tiles
  embedded ahead), the time of one whole-plane embedding and
  the number of window embeddings ``segment`` computed.

Nearly every ``segment`` prompt embeds a new window (about 1 s on one CPU thread in bf16),
so the defaults (20 objects, 10 background clicks, 7 variants) take about 6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]


def _box_from_click():
    """The widget's click->box policy."""
    from napari_sam.prompting.click_box import box_from_click

    return box_from_click


@dataclass
class PathResult:
    box_iou: list[float] = field(default_factory=list)
    click_iou: list[float] = field(default_factory=list)
    click_wrong: int = 0
    click_none: int = 0
    background_offers: int = 0
    box_ms: list[float] = field(default_factory=list)
    click_ms: list[float] = field(default_factory=list)
    windows: int = 0


class Truth:
    """Instance labels with per-object areas, for the IoU of a mask with every object it overlaps."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.areas = np.bincount(labels.ravel().astype(np.int64))

    def ious(self, mask: np.ndarray) -> dict[int, float]:
        ids, inter = np.unique(self.labels[mask], return_counts=True)
        size = int(mask.sum())
        return {int(k): c / (size + self.areas[k] - c) for k, c in zip(ids, inter) if k}

    def score(self, mask: np.ndarray | None, target: int) -> tuple[float, bool]:
        """(IoU with ``target``, whether the mask is another object: IoU > 0.5 with it)."""
        if mask is None or not mask.any():
            return 0.0, False
        ious = self.ious(mask)
        wrong = any(v > 0.5 for k, v in ious.items() if k != target)
        return ious.get(target, 0.0), wrong


def sample_objects(labels: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, tuple[slice, slice]]]:
    """Up to ``n`` objects not touching the plane's border, a fixed random sample, by id."""
    h, w = labels.shape
    inner = [(k + 1, sl) for k, sl in enumerate(ndi.find_objects(labels)) if sl is not None
             and sl[0].start > 0 and sl[1].start > 0 and sl[0].stop < h and sl[1].stop < w]
    pick = rng.choice(len(inner), size=min(n, len(inner)), replace=False)
    return [inner[i] for i in sorted(pick)]


def object_prompts(labels: np.ndarray, k: int, sl: tuple[slice, slice], pad: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The padded inclusive box of object ``k`` and its pixel nearest its centroid."""
    h, w = labels.shape
    box = np.array([max(sl[0].start - pad, 0), max(sl[1].start - pad, 0),
                    min(sl[0].stop - 1 + pad, h - 1), min(sl[1].stop - 1 + pad, w - 1)], dtype=np.float32)
    rr, cc = np.nonzero(labels[sl] == k)
    d = (rr - rr.mean()) ** 2 + (cc - cc.mean()) ** 2
    i = int(np.argmin(d))
    return box, (int(rr[i] + sl[0].start), int(cc[i] + sl[1].start))


def background_clicks(labels: np.ndarray, n: int, distance: float, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` pixels farther than ``distance`` from every object."""
    far = np.argwhere(ndi.distance_transform_edt(labels == 0) > distance)
    if len(far) == 0:
        return far
    return far[np.sort(rng.choice(len(far), size=min(n, len(far)), replace=False))]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1e3


def run_variant(pred, name: str, image: np.ndarray, labels: np.ndarray, native_area: float,
                args: argparse.Namespace) -> tuple[dict[str, PathResult], dict[str, float]]:
    from napari_sam.cache import EmbeddingCache

    box_from_click = _box_from_click()
    rng = np.random.default_rng(args.seed)
    truth = Truth(labels)
    areas = truth.areas[1:][truth.areas[1:] > 0]
    scale = float(np.sqrt(np.median(areas) / native_area))
    objects = sample_objects(labels, args.objects, rng)
    bg = background_clicks(labels, args.background, 15 * scale, rng)
    emb, embed_ms = timed(lambda: pred.embed(image))
    res = {"plane": PathResult(), "segment": PathResult()}
    agree = []

    def plane_mask(box):
        cand = pred.predict(emb, box=box)
        return cand.masks[cand.best]

    from napari_sam.embeddings.engine import Engine, PlaneSource

    source = PlaneSource(image, rgb=image.ndim == 3)

    def segment_mask(engine, **prompt):
        cand = engine.segment(source, (), **prompt)
        return cand.masks[cand.best]

    cache = EmbeddingCache()
    engine = Engine(pred, cache)
    for k, sl in objects:
        box, _ = object_prompts(labels, k, sl, args.pad)
        a, ms = timed(lambda: plane_mask(box))
        res["plane"].box_ms.append(ms)
        res["plane"].box_iou.append(truth.score(a, k)[0])
        b, ms = timed(lambda: segment_mask(engine, box=box))
        res["segment"].box_ms.append(ms)
        res["segment"].box_iou.append(truth.score(b, k)[0])
        agree.append(truth_iou(a, b))
        if args.details:
            print(f"    {name} object {k} area {truth.areas[k]} box {box.astype(int).tolist()}: "
                  f"plane {res['plane'].box_iou[-1]:.2f}  segment {res['segment'].box_iou[-1]:.2f}")
    res["segment"].windows += cache.misses

    cache = EmbeddingCache()
    engine = Engine(pred, cache)
    for k, sl in objects:
        _, (r, c) = object_prompts(labels, k, sl, args.pad)

        def plane_click():
            box = box_from_click(image, (r, c))
            return None if box is None else plane_mask(box)

        a, ms = timed(plane_click)
        res["plane"].click_ms.append(ms)
        res["plane"].click_none += a is None
        b, ms = timed(lambda: segment_mask(engine, points=[[r, c]], labels=[1]))
        res["segment"].click_ms.append(ms)
        for path, mask in (("plane", a), ("segment", b)):
            score, wrong = truth.score(mask, k)
            res[path].click_iou.append(score)
            res[path].click_wrong += wrong
        if args.details:
            print(f"    {name} click ({r}, {c}) on {k} (area {truth.areas[k]}): plane {res['plane'].click_iou[-1]:.2f}"
                  f"{' no box' if a is None else f' area {a.sum()}'}  segment {res['segment'].click_iou[-1]:.2f} "
                  f"area {b.sum()}")
    res["segment"].windows += cache.misses

    cache = EmbeddingCache()
    engine = Engine(pred, cache)
    for r, c in bg:
        box = box_from_click(image, (float(r), float(c)))
        res["plane"].background_offers += box is not None and bool(plane_mask(box).any())
        res["segment"].background_offers += bool(segment_mask(engine, points=[[r, c]], labels=[1]).any())
    res["segment"].windows += cache.misses
    info = {"objects": len(objects), "background": len(bg), "scale": scale, "embed_ms": embed_ms,
            "agree": float(np.mean(agree)) if agree else float("nan"), "shape": image.shape}
    return res, info


def truth_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def main() -> None:
    from napari_sam.variants import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20, help="nuclei per variant (default 20)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--background", type=int, default=10, help="background clicks per variant (default 10)")
    parser.add_argument("--pad", type=int, default=2, help="pixels added to each side of a box (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--precision", default="auto", help="load_model precision (default auto)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--details", action="store_true", help="print every prompt's IoU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from napari_sam import Predictor, load_model
    from napari_sam.variants import standard_variants

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    model = load_model("lite_medsam", device="cpu", precision=args.precision)
    pred = Predictor(model)
    dtype = next(model.image_encoder.parameters()).dtype
    print(f"{platform.machine()} {platform.processor() or ''} ({os.cpu_count()} cpus), torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads; lite_medsam on cpu, precision {args.precision} ({dtype})")
    print(f"{args.objects} objects per variant (not touching the border), {args.background} background clicks, "
          f"boxes padded {args.pad} px, seed {args.seed}")
    image = tifffile.imread(ROOT / "tests/data/nuclei2d.tif")
    labels = tifffile.imread(ROOT / "tests/data/nuclei2d_labels.tif")
    counts = np.bincount(labels.ravel())[1:]
    native_area = float(np.median(counts[counts > 0]))
    pred.embed(image)  # warm-up

    head = (f"{'variant':<11} {'path':<8} {'box mIoU':>8} {'box<.5':>6} {'agree':>5} {'click mIoU':>10} "
            f"{'wrong':>5} {'nobox':>5} {'bg offers':>9} {'box ms':>7} {'click ms':>8} {'embeds':>6}")
    rows = []
    t_start = time.perf_counter()
    for name, var_image, var_labels in standard_variants(image, labels, names):
        t0 = time.perf_counter()
        res, info = run_variant(pred, name, var_image, var_labels, native_area, args)
        n, nb = info["objects"], info["background"]
        print(f"{name}: {'x'.join(map(str, info['shape']))}, object scale {info['scale']:.2f}, {n} objects, "
              f"{nb} background clicks, whole-plane embedding {info['embed_ms']:.0f} ms; {time.perf_counter() - t0:.0f} s")
        for path, r in res.items():
            embeds = "1" if path == "plane" else str(r.windows)
            rows.append(
                f"{name:<11} {path:<8} {np.mean(r.box_iou):8.3f} {sum(v < 0.5 for v in r.box_iou):6d} "
                f"{info['agree']:5.2f} {np.mean(r.click_iou):10.3f} {r.click_wrong:5d} "
                f"{(r.click_none if path == 'plane' else 0):5d} {f'{r.background_offers}/{nb}':>9} "
                f"{statistics.median(r.box_ms):7.0f} {statistics.median(r.click_ms):8.0f} {embeds:>6}")
    print()
    print(head)
    print("\n".join(rows))
    print(f"total {time.perf_counter() - t_start:.0f} s.  box<.5: boxes under IoU 0.5; agree: mean IoU of the two "
          "paths' masks for the same box; wrong: clicks whose mask is another nucleus; nobox: clicks the "
          "click->box policy found no object under; embeds: embeddings computed (segment: windows)")


if __name__ == "__main__":
    main()
