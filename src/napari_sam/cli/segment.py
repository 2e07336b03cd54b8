"""``napari-sam segment``: automatic instance segmentation of files and folders."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..segmentation.auto_params import AutoParams, UserField, check_method, user_fields
from .arguments import Subparsers, add_command, add_model_arguments, registry_spec
from .outputs import check_writable_folder
from .progress import TerminalProgress
from .read import GROUPS

if TYPE_CHECKING:  # the batch runner imports dask where it is installed: only `segment` needs it
    from .batch import Result

def add_segment_command(subparsers: Subparsers) -> None:
    """``napari-sam segment INPUT -o OUTPUT``: label everything in an image, a stack or a folder."""
    p = add_command(
        subparsers, "segment", run_segment,
        "segment everything in images (TIFF, OME-TIFF, zarr, .npy, or a folder of them)",
        "Automatic instance segmentation. INPUT is an image file or a folder; OUTPUT a label "
        "TIFF (uint16, or uint32 when needed) or a folder of them. Finished outputs are skipped on a rerun; "
        "an output that is an input, or an output folder that is the input folder, is refused.",
    )
    p.add_argument("input", help=f"image file (.tif/.tiff, .npy or zarr; {GROUPS}) or a folder of them")
    p.add_argument("-o", "--output", required=True, help="label TIFF, or a folder for folder inputs")
    add_model_arguments(p)
    for f in user_fields():  # the AutoParams a user sets, with AutoParams' help and defaults
        default = "by method" if f.default is None else f"{f.default:g}" if f.kind is not str else f.default
        p.add_argument("--" + f.option.replace("_", "-"), dest=f.name, type=_in_range(f), choices=f.choices,
                       metavar=None if f.choices else f.option.upper(), help=f"{f.help} (default {default})")
    p.add_argument("--overwrite", action="store_true", help="redo files whose output exists")
    p.add_argument("--scheduler", default=None, help="'local' for a dask LocalCluster, or a dask scheduler address; "
                   "files and the seeds of each stack run as tasks, with the serial run's labels")
    p.add_argument("--workers", type=int, default=2, help="workers of a local cluster")


def _in_range(f: UserField) -> Callable[[str], Any]:
    """argparse's type for ``f``: its kind, refused outside its range."""
    def parse(text: str) -> Any:
        value = f.kind(text)
        if f.low is not None and value < f.low:
            raise argparse.ArgumentTypeError(f"{text} is below {f.low:g}")
        if f.high is not None and value > f.high:
            raise argparse.ArgumentTypeError(f"{text} is above {f.high:g}")
        return value

    parse.__name__ = f.kind.__name__  # argparse names the type in "invalid int value" errors
    return parse


def params_from_args(args: argparse.Namespace) -> AutoParams:
    """AutoParams from the options the user set; the others keep AutoParams' defaults."""
    return AutoParams(**{f.name: getattr(args, f.name) for f in user_fields() if getattr(args, f.name) is not None})


def run_segment(args: argparse.Namespace) -> int:
    # Everything that can be wrong with the arguments is found before torch is imported,
    # the model loaded or an image read: at once, and with nothing written.
    from .batch import iter_summary, plan_jobs

    try:
        jobs = plan_jobs(args.input, args.output)
        spec = registry_spec(args.model, args.model_type)
        for folder in dict.fromkeys(job.target.parent for job in jobs):
            check_writable_folder(folder)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .batch import run_jobs, run_jobs_distributed

    try:
        params = params_from_args(args)
        if spec is not None:
            check_method(params.method, spec.box_only, spec.name)
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.monotonic()
    total = len(jobs)
    done = [0]
    bar: TerminalProgress | None = None

    def on_result(result: Result) -> None:
        if bar is not None:
            bar.finish()
        done[0] += 1
        extra = f"{result.objects} objects" if result.status == "done" else result.status
        if result.status == "failed":
            extra = "FAILED: " + result.error.splitlines()[0]
        print(f"[{done[0]}/{total}] {result.job.source.name} -> {result.job.target} ({extra})", file=sys.stderr)

    if args.scheduler:
        results = run_jobs_distributed(
            jobs, params, args.model, args.scheduler, args.workers, model_type=args.model_type,
            device=args.device if args.device != "auto" else "cpu",
            precision=args.precision, overwrite=args.overwrite, on_result=on_result)
    else:
        from ..model.loading import load_model
        from ..predictor import Predictor

        predictor = Predictor(load_model(args.model, model_type=args.model_type, device=args.device,
                                         precision=args.precision))
        try:  # a checkpoint file's model is known only now
            params.resolve(predictor)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"model {predictor.model_name} on {predictor.device}; {total} file(s)", file=sys.stderr)
        if total == 1:  # its tiles or seeds get a bar; with more files, a line per file is progress enough
            bar = TerminalProgress(jobs[0].source.name, unit="step")
        results = run_jobs(predictor, jobs, params, args.overwrite, on_result, progress=bar)
    for line in iter_summary(results):
        print(line, file=sys.stderr)
    print(f"finished in {time.monotonic() - start:.1f} s", file=sys.stderr)
    return 1 if any(r.status == "failed" for r in results) else 0

