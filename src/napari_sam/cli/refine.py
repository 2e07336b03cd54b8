"""``napari-sam refine``: re-segment the objects of an existing label image with SAM."""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

from .arguments import Subparsers, add_command, add_model_arguments, registry_spec
from .outputs import OutputError, check_writable_folder, same_path
from .progress import TerminalProgress
from .read import read_image


def add_refine_command(subparsers: Subparsers) -> None:
    """``napari-sam refine IMAGE LABELS -o OUTPUT``: the objects of LABELS redrawn by SAM."""
    p = add_command(
        subparsers, "refine", run_refine,
        "re-segment the objects of a label image (Cellpose, StarDist, an older run) with SAM",
        "Each object of LABELS (a 2D label image of IMAGE) is prompted with its box and redrawn "
        "under its id. OUTPUT is the new label TIFF; --report writes a CSV of every object's "
        "predicted IoU, stability, agreement with the given outline and quality, worst first. "
        "An output that is an input is refused; an existing output needs --overwrite.",
    )
    p.add_argument("image", help="the 2D image (.tif/.tiff, .npy or zarr)")
    p.add_argument("labels", help="its label image, the same height and width")
    p.add_argument("-o", "--output", required=True, help="the refined label TIFF")
    p.add_argument("--report", default=None, help="a CSV of the objects' scores, worst first")
    add_model_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _check_outputs(args: argparse.Namespace) -> list[Path]:
    """The files to write, refused (before any model work) when one is an input, they
    collide, one exists without --overwrite, or its folder cannot be written."""
    outputs = [Path(args.output)] + ([Path(args.report)] if args.report else [])
    for out in outputs:
        for given in (args.image, args.labels):
            if same_path(out, given):
                raise OutputError(f"output {out} is the input {given}: choose another name (inputs are never "
                                  "written)")
        if out.exists() and not args.overwrite:
            raise OutputError(f"{out} exists: pass --overwrite to replace it")
        check_writable_folder(out.parent)
    if len(outputs) == 2 and same_path(*outputs):
        raise OutputError("--output and --report name the same file")
    return outputs


def run_refine(args: argparse.Namespace) -> int:
    try:
        _check_outputs(args)
        registry_spec(args.model, args.model_type)
        image, labels = read_image(args.image), read_image(args.labels)
        plane_shape = image.shape[:2] if image.ndim == 3 and image.shape[-1] in (3, 4) else image.shape
        if labels.ndim != 2 or image.ndim not in (2, 3) or tuple(plane_shape) != labels.shape:
            raise ValueError(f"expected a 2D image (or RGB) and 2D labels of the same size, got {image.shape} "
                             f"and {labels.shape}")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..model.loading import load_model
    from ..predictor import Predictor
    from ..segmentation.refine_labels import refine_labels
    from .batch import write_labels

    start = time.monotonic()
    predictor = Predictor(load_model(args.model, model_type=args.model_type, device=args.device,
                                     precision=args.precision))
    bar = TerminalProgress(Path(args.labels).name, unit="object")
    try:
        refined = refine_labels(predictor, image, labels, progress=bar)
    except (TypeError, ValueError) as exc:
        bar.finish()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.finish()
    write_labels(Path(args.output), refined.labels)
    if args.report:
        write_report(Path(args.report), refined)
    doubtful = int((refined.quality < 0.5).sum())
    print(f"{len(refined.ids)} objects refined into {args.output} ({doubtful} with quality under 0.5) "
          f"in {time.monotonic() - start:.1f} s", file=sys.stderr)
    return 0


def write_report(path: Path, refined) -> None:  # type: ignore[no-untyped-def]
    """The objects' scores as CSV, worst first, written whole or not at all."""
    order = {int(k): i for i, k in enumerate(refined.ids)}
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "quality", "predicted_iou", "stability", "agreement", "kept_as_given"])
        for label in refined.worst_first():
            i = order[int(label)]
            out.writerow([int(label), f"{refined.quality[i]:.4f}", f"{refined.predicted_iou[i]:.4f}",
                          f"{refined.stability[i]:.4f}", f"{refined.agreement[i]:.4f}", int(refined.kept[i])])
    os.replace(tmp, path)
