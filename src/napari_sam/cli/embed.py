"""``napari-sam embed``: precompute the embeddings of a stack into a zarr store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model.registry import DEFAULT_MODEL
from .arguments import Subparsers, add_command, device_argument, model_argument
from .outputs import check_writable_folder, path_within, same_path
from .progress import TerminalProgress
from .read import EXPECTED, GROUPS, is_image_path, is_zarr, open_image, stem


def add_embed_command(subparsers: Subparsers) -> None:
    """``napari-sam embed INPUT -o STORE.zarr``: precompute a stack's embeddings on disk."""
    parser = add_command(
        subparsers, "embed", run_embed, "precompute the embeddings of every plane of a stack into a zarr store",
        "Embed every 2D plane of INPUT (TIFF, .npy or a zarr array) into STORE.zarr, one "
        "plane at a time. Planes already in the store with the same content, model and "
        "preprocessing are reused, so a second run only checks them. A store made from another image, "
        "model or preprocessing is left alone unless --overwrite is given.",
    )
    parser.add_argument("input", metavar="INPUT", help=f"image stack: .tif/.tiff, .npy or zarr ({GROUPS})")
    parser.add_argument("-o", "--output", required=True, metavar="STORE.zarr", help="the embedding store")
    parser.add_argument("--model", default=DEFAULT_MODEL, type=model_argument,
                        help=f"registry name or checkpoint path (default {DEFAULT_MODEL})")
    parser.add_argument("--channel-axis", type=int, default=None, metavar="N",
                        help="axis holding 1-3 channels to use as colours")
    parser.add_argument("--rgb", action="store_true", help="the last axis holds RGB(A) colours")
    parser.add_argument("--device", default="auto", type=device_argument, help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a store made from another image, model or preprocessing (otherwise refused)")
    parser.add_argument("--tiles", action="store_true",
                        help="also store each plane's zoomed tiles, the windows the widget answers prompts from "
                             "(many per plane: a 512x512 plane of 25 px nuclei has 49)")
    parser.add_argument("--object-size", type=float, default=None, metavar="PX",
                        help="with --tiles: the objects' diameter in pixels, which sets the zoom "
                             "(default: measured on the first plane)")


def _store_name(source: Path) -> Path:
    """Where the store of ``source`` goes by default: ``stack_embeddings.zarr`` next to it."""
    return source.parent / f"{stem(source)}_embeddings.zarr"


def check_output(source: str | Path, output: str | Path, overwrite: bool = False) -> None:
    """Everything about ``output`` that can be checked before a model is loaded: it is not
    the input (nor inside it, nor around it), it holds nothing but a store that may be
    written to (see :func:`napari_sam.embeddings.store.check_store_path`), and files can be created
    there. Raises ValueError or OSError with what to do; writes nothing."""
    from ..embeddings.store import check_store_path

    relation = ("is the input" if same_path(output, source) else "lies inside the input" if path_within(output, source)
                else "contains the input" if path_within(source, output) else "")
    if relation:
        raise ValueError(f"the output {output} {relation} {source}: the embeddings must never be written over, "
                         f"into or around the image. Choose another output, e.g. -o {_store_name(Path(source))}")
    check_store_path(output, str(Path(source).expanduser().resolve()), overwrite)
    check_writable_folder(output)


def run_embed(args: argparse.Namespace) -> int:
    # The input and the output are checked before torch is imported or the model loaded.
    if args.object_size is not None and not args.object_size > 0:
        print(f"error: --object-size must be a positive number of pixels, got {args.object_size}", file=sys.stderr)
        return 2
    source = Path(args.input)
    if source.is_dir() and not is_zarr(source):
        print(f"error: {_not_a_stack(source)}", file=sys.stderr)
        return 2
    try:
        data = open_image(source)
        check_output(args.input, args.output, args.overwrite)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..errors import NotEnoughMemoryError
    from ..model.loading import load_model
    from ..predictor import Predictor
    from ..embeddings.store import embed_stack
    from ..model.weights import WeightsError

    try:
        predictor = Predictor(load_model(args.model, device=args.device))
    except (OSError, ValueError, KeyError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with TerminalProgress("embed", unit="plane") as bar:
            hits, total = embed_stack(predictor, data, args.output, args.channel_axis, args.rgb,
                                      progress=lambda plane: bar(plane.done, plane.total), overwrite=args.overwrite,
                                      source=str(source.expanduser().resolve()), tiles=args.tiles,
                                      object_size=args.object_size)
    except NotEnoughMemoryError as exc:
        print(f"error: {exc} Planes written so far are kept.", file=sys.stderr)
        return 1
    except (ValueError, TypeError, IndexError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error writing {args.output}: {exc}. Planes written so far are kept.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; planes written so far are kept.", file=sys.stderr)
        return 130
    print(f"cache hit: {hits}/{total} planes")
    print(args.output)
    return 0


def _not_a_stack(folder: Path) -> str:
    """Why a plain folder cannot be embedded, and what to run instead."""
    images = sorted(p for p in folder.iterdir() if is_image_path(p))
    what = (f"It holds {len(images)} image file(s): embed each on its own, e.g. napari-sam embed {images[0]} "
            f"-o {_store_name(images[0])}" if images else "It holds no image file.")
    return f"{folder} is a folder, not an image stack: embed takes one stack; {EXPECTED}. {what}"
