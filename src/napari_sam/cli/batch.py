"""Batch segmentation of image files and folders, serially or on a dask cluster.

The CLI's ``segment`` command is a thin layer over :func:`plan_jobs` and :func:`run_jobs`.
Each output is written to a temporary file and renamed, so an interrupted run leaves no
half-written labels and a rerun skips what is finished. No output may land on an input:
:func:`plan_jobs` refuses such a plan, and :func:`run_job` such a job. Planning imports no
torch (the model code is imported when a job runs), so that path errors come at once.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..files import part_file
from .outputs import path_identities, paths_overlap, same_path
from .read import IMAGE_SUFFIXES, is_image_path, read_image, stem

if TYPE_CHECKING:  # imported where used: they pull in torch
    from ..segmentation.automatic import AutoParams
    from ..segmentation.automatic_volume import Seed
    from ..segmentation.propagation import Piece


@dataclass(frozen=True)
class Job:
    """One input file and the label TIFF it becomes."""

    source: Path
    target: Path


@dataclass(frozen=True)
class Result:
    """What became of a job, with the objects found or the error."""

    job: Job
    status: str  # "done", "skipped" or "failed"
    objects: int = 0
    error: str = ""


def plan_jobs(source: str | Path, output: str | Path) -> list[Job]:
    """Jobs for a file (output: a .tif path) or a folder (output: a folder).

    Raises ValueError, before anything is read or written, for a plan that would write
    over an input (see :func:`check_jobs`) or an output folder that is the input folder."""
    source, output = Path(source), Path(output)
    if not source.exists():
        raise FileNotFoundError(f"input not found: {source}")
    if source.is_dir() and not is_image_path(source):
        files = sorted(p for p in source.iterdir() if is_image_path(p))
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {source}")
        if output.suffix.lower() in (".tif", ".tiff"):
            raise ValueError(f"input {source} is a folder: the output must be a folder, not {output.name}")
        if same_path(output, source):
            raise ValueError(
                f"the output folder {output} is the input folder: the labels would be written among the "
                f"images, over those named *.tif, and read as images by the next run. Choose another output "
                f"folder, e.g. -o {_suggest(source)}")
        jobs = [Job(f, output / (stem(f) + ".tif")) for f in files]
    else:
        if not is_image_path(source):
            raise ValueError(f"unsupported input {source.name}: expected one of {', '.join(IMAGE_SUFFIXES)} "
                             "or a folder")
        if output.suffix.lower() not in (".tif", ".tiff"):
            output = output / (stem(source) + ".tif")
        jobs = [Job(source, output)]
    check_jobs(jobs)
    return jobs


def check_jobs(jobs: Sequence[Job]) -> None:
    """Raise ValueError if an output would land on an input (the same file, or inside an
    input .zarr folder) or two inputs would be written to the same output."""
    _identities = functools.lru_cache(maxsize=None)(path_identities)  # the output folder: once, not per job
    inputs: dict[tuple, Path] = {}
    folders: dict[tuple, Path] = {}  # inputs that are folders (.zarr): nothing may be written inside them
    for job in jobs:
        inputs.update(dict.fromkeys(_identities(str(job.source)), job.source))
        if job.source.is_dir():
            folders.update(dict.fromkeys(_identities(str(job.source)), job.source))
    written: dict[tuple, Path] = {}
    for job in jobs:
        target = job.target.expanduser().absolute()
        for place in (target, *target.parents):
            within = inputs if place == target else folders
            source = next((within[key] for key in _identities(str(place)) if key in within), None)
            if source is not None:
                what = "is the input" if place == target else "would be written inside the input"
                raise ValueError(
                    f"the output {job.target} {what} {source}: labels are never written over or into an image. "
                    f"Choose another output, e.g. -o {_suggest(source)}")
        for key in _identities(str(target)):
            if key in written:
                raise ValueError(f"{written[key].name} and {job.source.name} would both be written to "
                                 f"{job.target}: rename one of them, or segment them into separate folders")
            written[key] = job.source


def _suggest(source: Path) -> Path:
    """A place for the labels of ``source`` next to it: ``cells_sam_labels`` or
    ``cells_sam_labels.tif`` (not ``cells_labels``: often a lab's ground truth)."""
    if source.is_dir() and not is_image_path(source):
        return source.parent / f"{source.name}_sam_labels"
    return source.parent / f"{stem(source)}_sam_labels.tif"


def is_plane(image: np.ndarray) -> bool:
    """A 2D plane (H, W) or an RGB(A) one (H, W, 3|4), rather than a (Z, H, W) stack."""
    return image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))


def segment_array(predictor, image: np.ndarray, params: AutoParams,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """2D planes (H, W) / RGB (H, W, 3|4) -> 2D labels; stacks (Z, H, W) -> 3D labels."""
    from ..segmentation.automatic import segment_everything
    from ..segmentation.automatic_volume import segment_volume

    if is_plane(image):
        return segment_everything(predictor, image, params, progress)
    if image.ndim == 3:
        return segment_volume(predictor, image, params, progress)
    raise ValueError(
        f"cannot segment an image of shape {image.shape}: expected (H, W), (H, W, RGB) or (Z, H, W); "
        "split channels or time points into separate files first"
    )


def write_labels(path: Path, labels: np.ndarray) -> None:
    """Write labels as uint16 (or uint32 when needed) TIFF, atomically, with the permissions
    of any new file (0o666 less the umask)."""
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = part_file(path)
    os.close(fd)
    try:
        import tifffile

        tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_job(predictor, job: Job, params: AutoParams, overwrite: bool = False,
            progress: Callable[[int, int], None] | None = None, segment: Callable = segment_array) -> Result:
    """Segment one file with ``segment(predictor, image, params, progress)``; failures are
    returned, not raised, so a batch carries on. A job whose output is its input fails
    without touching it."""
    if paths_overlap(job.target, job.source):
        return Result(job, "failed", error=f"ValueError: refusing to write the labels over the input {job.source}")
    if job.target.exists() and not overwrite:
        return Result(job, "skipped")
    try:
        labels = segment(predictor, read_image(job.source), params, progress)
        write_labels(job.target, labels)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - reported per file, the batch goes on
        detail = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, (ValueError, TypeError, OSError)):
            detail += "\n" + traceback.format_exc(limit=3)
        return Result(job, "failed", error=detail)
    return Result(job, "done", objects=len(np.unique(labels)) - 1)


def run_jobs(predictor, jobs: Sequence[Job], params: AutoParams, overwrite: bool = False,
             on_result: Callable[[Result], None] | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[Result]:
    """Run jobs one after the other in this process."""
    results = []
    for job in jobs:
        result = run_job(predictor, job, params, overwrite, progress)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


# --------------------------------------------------------------------------- dask


try:  # dask is optional; without it only serial runs are possible
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - exercised where distributed is absent
    _WorkerPlugin = object  # type: ignore[assignment,misc]


class _ModelOnWorker(_WorkerPlugin):
    """A dask worker plugin that loads the model once per worker process.

    Models are kept per (model, type, device, precision) on the worker, so a long-lived
    cluster that runs batch after batch loads each model once, not once per run."""

    name = "napari-sam-model"

    def __init__(self, key: tuple, threads: int | None) -> None:
        self.key, self.threads = key, threads

    def setup(self, worker) -> None:
        import torch

        from .. import Predictor, load_model

        # Workers share the cores: more torch threads than cores makes each far slower.
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        if not hasattr(worker, "napari_sam_predictors"):
            worker.napari_sam_predictors = {}
        if self.key not in worker.napari_sam_predictors:
            model, model_type, device, precision = self.key
            worker.napari_sam_predictors[self.key] = Predictor(
                load_model(model, model_type=model_type, device=device, precision=precision))


def _worker_predictor(key: tuple):
    from distributed import get_worker

    return get_worker().napari_sam_predictors[key]


# Seeds of a stack carried by one task: enough work (~1 s a seed on a CPU) to be worth a
# task, few enough that a stack of a few dozen objects still spreads over the workers.
SEEDS_PER_TASK = 8


def _run_on_worker(job: Job, params: AutoParams, overwrite: bool, key: tuple) -> Result:
    return run_job(_worker_predictor(key), job, params, overwrite, segment=partial(_segment_spread, key=key))


def _segment_spread(predictor, image: np.ndarray, params: AutoParams, progress=None, *, key: tuple) -> np.ndarray:
    """:func:`segment_array` for a task on a dask worker: a stack's seeds are carried by
    tasks of their own, spread over the cluster, and numbered here in seed order as the
    serial run numbers them, so the labels are the same."""
    if is_plane(image) or image.ndim != 3:
        return segment_array(predictor, image, params, progress)
    from distributed import worker_client

    from ..segmentation.automatic import run_with_progress
    from ..segmentation.automatic_volume import assemble_steps, checked_volume, plan_seeds

    volume = checked_volume(image)
    planned = plan_seeds(volume, params)
    todo = [i for i, seed in enumerate(planned) if seed.box is not None]
    groups = [todo[k : k + SEEDS_PER_TASK] for k in range(0, len(todo), SEEDS_PER_TASK)]
    with worker_client() as client:  # secedes from the worker's thread pool while it waits
        shared = client.scatter(volume, hash=False)
        futures = [client.submit(_carry_on_worker, shared, [planned[i] for i in group], key, pure=False)
                   for group in groups]
        pieces = {i: piece for group, done in zip(groups, client.gather(futures)) for i, piece in zip(group, done)}
    return run_with_progress(assemble_steps(volume.shape, planned, pieces.__getitem__, params.min_area), progress)


def _carry_on_worker(volume: np.ndarray, group: list[Seed], key: tuple) -> list[Piece]:
    from ..segmentation.automatic_volume import carry_seed

    predictor = _worker_predictor(key)
    return [carry_seed(predictor, volume, seed) for seed in group]


def run_jobs_distributed(
    jobs: Sequence[Job], params: AutoParams, model: str, scheduler: str, workers: int = 2,
    model_type: str | None = None, device: str = "cpu", precision: str = "fp32",
    overwrite: bool = False, on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run jobs on dask.distributed: ``scheduler="local"`` starts a LocalCluster of
    ``workers`` single-threaded processes, anything else is a scheduler address. Files run
    as tasks, and so do groups of a stack's seeds (see :func:`_segment_spread`). Jobs are
    checked as :func:`plan_jobs` checks them: none may write over an input."""
    check_jobs(jobs)
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ImportError("distributed runs need dask: pip install 'napari-sam-kit[distributed]'") from exc
    cluster = None
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1)) if scheduler == "local" else None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        key = (model, model_type, device, precision)
        client.register_plugin(_ModelOnWorker(key, threads))
        futures = {client.submit(_run_on_worker, job, params, overwrite, key, pure=False): job for job in jobs}
        results = {}
        for future in as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            if on_result is not None:
                on_result(result)
        return [results[job] for job in jobs]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def iter_summary(results: Sequence[Result]) -> Iterator[str]:
    """Lines that summarise a batch for a terminal."""
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    yield f"{counts['done']} segmented, {counts['skipped']} skipped (already done), {counts['failed']} failed"
    for r in results:
        if r.status == "failed":
            yield f"FAILED {r.job.source}: {r.error}"
