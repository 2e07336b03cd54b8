"""Time per image of automatic segmentation (each method) and of propagation through a
stack, on the real nucleus data with the real LiteMedSAM weights, with their quality.

    python benchmarks/bench_automatic.py [--threads N] [--workers N]
    python benchmarks/bench_automatic.py --variants native,2x,3x,low_photon,inverted,rgb [--precision auto] [--model M]

Prints, per method, the wall time for the 512 x 512 nucleus image and the instance F1 at
IoU 0.5 and mean segmentation accuracy (mSA, IoU 0.5 to 0.95) against its ground truth; for
the 31 x 61 x 57 nucleus volume, the time, 3D F1 and 3D mSA of each stack method (3D seeds
carried through the stack, the default; each plane on its own, linked by overlap), of the
default on the volume upsampled 2x in z, and for
propagation the time per object and the mean 3D IoU (one ground-truth box on each nucleus's
middle slice). With ``--workers N`` it also times the
volume on a dask LocalCluster of N workers (files and seed groups as tasks, as
``napari-sam segment --scheduler local`` runs them) and checks its labels against the serial run's.
The grid method needs a point-trained model: with box-trained LiteMedSAM it is refused.

With ``--variants`` it prints instead, for each named image variant of the nuclei
(:mod:`napari_sam.variants`), the default method's time, its seconds per 512 x 512 plane
against one whole-plane embedding in the same run, the objects found, F1 and mSA.

With ``--random-weights vit_b`` it times the box method on the 512 x 512 image with a
randomly initialised model of that architecture instead, against its whole-plane
embedding: what the method costs with a model whose input is 1024 px, where one window
shows a 512 px plane at 2x (LiteMedSAM's 256 px input needs 49 windows for that). Random
weights find no objects, so the refinement of found objects is not in this time; the
boxes proposed and decoded are the same.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi
from skimage.measure import regionprops

from napari_sam.metrics import f1, iou, mean_segmentation_accuracy

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=0, help="also time the volume on a LocalCluster of N workers")
    parser.add_argument("--variants", default="", help="comma-separated image variants: time and quality per variant only")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or auto (default fp32)")
    parser.add_argument("--model", default="lite_medsam",
                        help="with --variants: registry name or checkpoint path (default lite_medsam)")
    parser.add_argument("--random-weights", default="", metavar="ARCH",
                        help="time the box method with a randomly initialised ARCH (e.g. vit_b) only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_weights:
        random_weights_time(args.random_weights)
        return
    if args.variants:
        variant_table(args.variants.split(","), args.precision, args.model)
        return
    from napari_sam import Predictor, load_model, propagate
    from napari_sam.segmentation.propagation import CARRIES, PropagationParams
    from napari_sam.segmentation.automatic import AutoParams, run_with_progress, segment_everything, segment_planes_steps
    from napari_sam.segmentation.automatic_volume import segment_volume

    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, lite_medsam on cpu")
    predictor = Predictor(load_model("lite_medsam", device="cpu", precision="fp32"))
    image = tifffile.imread(ROOT / "tests/data/nuclei2d.tif")
    truth = tifffile.imread(ROOT / "tests/data/nuclei2d_labels.tif")
    print("automatic grid: refused for box-trained LiteMedSAM (it needs a point-trained model)")
    for method, params in [("boxes", AutoParams(method="boxes"))]:
        t0 = time.perf_counter()
        labels = segment_everything(predictor, image, params)
        elapsed = time.perf_counter() - t0
        print(f"automatic {method:<11} 512x512: {elapsed:7.1f} s/image  {labels.max():4d} objects  "
              f"F1@0.5 {f1(truth, labels):.3f}  mSA {mean_segmentation_accuracy(truth, labels):.3f}")

    volume = tifffile.imread(ROOT / "tests/data/nuclei3d.tif")
    vlabels = tifffile.imread(ROOT / "tests/data/nuclei3d_labels.tif")
    for method, run in [("3D seeds", lambda: segment_volume(predictor, volume)),
                        ("planes+link", lambda: run_with_progress(segment_planes_steps(predictor, volume), None))]:
        t0 = time.perf_counter()
        labels = run()
        elapsed = time.perf_counter() - t0
        print(f"stack {method:<12} 31x61x57: {elapsed:7.1f} s/volume  {labels.max():4d} objects  "
              f"3D F1@0.5 {f1(vlabels, labels):.3f}  3D mSA {mean_segmentation_accuracy(vlabels, labels):.3f}")
        if method == "3D seeds":
            serial = labels
    # The same volume sampled twice as finely in z (nuclei then about 14 slices deep).
    fine = ndi.zoom(volume.astype(np.float32), (2, 1, 1), order=1)
    fine_truth = ndi.zoom(vlabels, (2, 1, 1), order=0)
    t0 = time.perf_counter()
    labels = segment_volume(predictor, fine)
    elapsed = time.perf_counter() - t0
    print(f"stack 3D seeds     {'x'.join(map(str, fine.shape))} (z upsampled 2x): {elapsed:7.1f} s/volume  "
          f"{labels.max():4d} objects  3D F1@0.5 {f1(fine_truth, labels):.3f}  "
          f"3D mSA {mean_segmentation_accuracy(fine_truth, labels):.3f}")
    if args.workers:
        print(f"stack 3D seeds, {args.workers} dask workers: "
              f"{_distributed_volume(volume, serial, args.workers):7.1f} s/volume (cluster start and model load excluded)")
    t0 = time.perf_counter()
    embeddings = [predictor.embed(volume[k]) for k in range(volume.shape[0])]
    t_embed = time.perf_counter() - t0
    objects = regionprops(vlabels)
    for carry in CARRIES:
        scores, t0 = [], time.perf_counter()
        for region in objects:
            mid = (region.bbox[0] + region.bbox[3] - 1) // 2
            obj = vlabels == region.label
            rows, cols = np.flatnonzero(obj[mid].any(1)), np.flatnonzero(obj[mid].any(0))
            out = propagate(predictor, volume, mid, box=[rows[0], cols[0], rows[-1], cols[-1]],
                            embed=embeddings.__getitem__, params=PropagationParams(carry=carry))
            scores.append(iou(out, obj))
        t_prop = time.perf_counter() - t0
        print(f"propagate, carry={carry}: {len(objects)} nuclei, {t_prop / len(objects):.2f} s/object (slice "
              f"embeddings, {t_embed / volume.shape[0] * 1e3:.0f} ms/slice, made beforehand); mean 3D IoU "
              f"{np.mean(scores):.3f} (median {np.median(scores):.3f})")


def random_weights_time(arch: str) -> None:
    """The box method's time per 512 x 512 plane with a random-weight ``arch``, in units of
    its own whole-plane embedding (see the module's docstring)."""
    from napari_sam import Predictor
    from napari_sam.model.loading import build
    from napari_sam.segmentation.automatic import AutoParams, segment_everything

    torch.manual_seed(0)
    predictor = Predictor(build(arch).eval())
    image = tifffile.imread(ROOT / "tests/data/nuclei2d.tif")
    embed = min(_timed(lambda: predictor.embed(image)) for _ in range(3))
    service = predictor.prompts()
    calls = service.encoder_calls
    elapsed = _timed(lambda: segment_everything(predictor, image, AutoParams(method="boxes")))
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; {arch} "
          f"({predictor.model.img_size} px input), random weights, fp32 on cpu")
    print(f"whole-plane embedding of the 512x512 image: {embed:.1f} s; box method: {elapsed:.1f} s "
          f"= {elapsed / embed:.1f} whole-plane embeddings, {service.encoder_calls - calls} window(s) embedded")


def _timed(run) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def variant_table(names: list[str], precision: str, model: str = "lite_medsam") -> None:
    """The default automatic method on each image variant: time and quality, with ``model``
    (a registry name or a checkpoint path)."""
    from napari_sam import Predictor, load_model
    from napari_sam.segmentation.automatic import segment_everything
    from napari_sam.variants import standard_variants

    predictor = Predictor(load_model(model, device="cpu", precision=precision))
    image = tifffile.imread(ROOT / "tests/data/nuclei2d.tif")
    truth = tifffile.imread(ROOT / "tests/data/nuclei2d_labels.tif")
    predictor.embed(image)
    whole = []
    for _ in range(5):
        t0 = time.perf_counter()
        predictor.embed(image)
        whole.append(time.perf_counter() - t0)
    one = float(np.median(whole))
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {predictor.model_name} "
          f"{predictor.model.precision}; one whole-plane embedding of the 512x512 image: {one:.2f} s (median of 5)")
    for name, var_image, var_truth in standard_variants(image, truth, names):
        predictor.prompts().cache.clear()  # each variant embeds its own windows
        t0 = time.perf_counter()
        labels = segment_everything(predictor, var_image)
        elapsed = time.perf_counter() - t0
        per_plane = elapsed / (var_image.shape[0] * var_image.shape[1] / 512**2)
        print(f"{name:<11} {var_image.shape[0]}x{var_image.shape[1]}: {elapsed:6.1f} s ({per_plane:5.1f} s per 512^2 "
              f"= {per_plane / one:4.0f} whole-plane embeddings)  {labels.max():4d} objects  "
              f"F1@0.5 {f1(var_truth, labels):.3f}  mSA {mean_segmentation_accuracy(var_truth, labels):.3f}", flush=True)


def _distributed_volume(volume: np.ndarray, serial: np.ndarray, workers: int) -> float:
    """Seconds to segment the volume on a warm LocalCluster; fails if its labels differ from ``serial``."""
    import tempfile

    from napari_sam.segmentation.automatic import AutoParams
    from napari_sam.cli.batch import plan_jobs, run_jobs_distributed

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "volume.tif"
        tifffile.imwrite(source, volume)
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            warm = plan_jobs(source, Path(tmp) / "warm.tif")  # starts the workers and loads the model
            run_jobs_distributed(warm, AutoParams(), "lite_medsam", cluster.scheduler_address, precision="fp32")
            client.run(torch.set_num_threads, max(1, (torch.get_num_threads()) // workers))
            jobs = plan_jobs(source, Path(tmp) / "labels.tif")
            t0 = time.perf_counter()
            run_jobs_distributed(jobs, AutoParams(), "lite_medsam", cluster.scheduler_address, precision="fp32")
            elapsed = time.perf_counter() - t0
        assert np.array_equal(tifffile.imread(jobs[0].target), serial), "distributed labels differ from serial"
    return elapsed


if __name__ == "__main__":
    main()
