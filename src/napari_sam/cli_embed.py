"""``napari-sam embed``: precompute the embeddings of a stack into a zarr store."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .registry import DEFAULT_MODEL


def add_embed_command(subparsers: argparse._SubParsersAction) -> None:
    """``napari-sam embed INPUT -o STORE.zarr``: precompute a stack's embeddings on disk."""
    from .cli import device_argument, model_argument

    parser = subparsers.add_parser(
        "embed",
        help="precompute the embeddings of every plane of a stack into a zarr store",
        description="Embed every 2D plane of INPUT (TIFF, .npy or a zarr array) into STORE.zarr, one "
        "plane at a time. Planes already in the store with the same content, model and "
        "preprocessing are reused, so a second run only checks them. A store made from another image, "
        "model or preprocessing is left alone unless --overwrite is given.",
    )
    parser.add_argument("input", metavar="INPUT", help="image stack: .tif/.tiff, .npy, or a zarr array")
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
    parser.set_defaults(handler=run_embed)


ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
STACK_SUFFIXES = (".tif", ".tiff", ".npy", ".zarr")


def _store_name(source: Path) -> Path:
    """Where the store of ``source`` goes by default: ``stack_embeddings.zarr`` next to it."""
    name = source.name
    for suffix in (".ome.tiff", ".ome.tif", *STACK_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return source.parent / f"{name}_embeddings.zarr"


def check_output(source: str | Path, output: str | Path, overwrite: bool = False) -> None:
    """Everything about ``output`` that can be checked before a model is loaded: it is not
    the input (nor inside it, nor around it), it holds nothing but a store that may be
    written to (see :func:`napari_sam.store.check_store_path`), and files can be created
    there. Raises ValueError or OSError with what to do; writes nothing."""
    from .batch import check_writable_folder, path_within, same_path
    from .store import check_store_path

    relation = ("is the input" if same_path(output, source) else "lies inside the input" if path_within(output, source)
                else "contains the input" if path_within(source, output) else "")
    if relation:
        raise ValueError(f"the output {output} {relation} {source}: the embeddings must never be written over, "
                         f"into or around the image. Choose another output, e.g. -o {_store_name(Path(source))}")
    check_store_path(output, str(Path(source).expanduser().resolve()), overwrite)
    check_writable_folder(output)


def open_stack(path: str | Path) -> object:
    """An array-like over a stack file that reads planes on demand where the format allows."""
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if name.endswith(".npy"):
        import numpy as np

        return np.load(path, mmap_mode="r")
    if name.endswith((".tif", ".tiff")):
        import tifffile

        try:
            return tifffile.memmap(path, mode="r")  # uncompressed, contiguous: no copy at all
        except ValueError:
            import zarr

            return zarr.open(tifffile.imread(path, aszarr=True), mode="r")  # one tile/strip at a time
    if path.is_dir() and not any((path / marker).exists() for marker in ZARR_MARKERS):
        images = sorted(p.name for p in path.iterdir() if p.name.lower().endswith(STACK_SUFFIXES))
        what = (f"It holds {len(images)} image file(s): embed each on its own, e.g. napari-sam embed "
                f"{path / images[0]} -o {_store_name(path / images[0])}" if images else "It holds no image file.")
        raise ValueError(f"{path} is a folder, not an image stack: embed takes one stack, a .tif/.tiff or .npy "
                         f"file or a zarr array (a folder with a zarr.json or .zarray file). {what}")
    if name.endswith(".zarr") or path.is_dir():
        import zarr

        try:
            node = zarr.open(str(path), mode="r")
        except Exception as exc:  # noqa: BLE001 - zarr's errors name its internals, not the user's mistake
            raise ValueError(f"cannot read {path} as a zarr array ({type(exc).__name__}: {exc}); embed takes "
                             "a .tif/.tiff or .npy file or a zarr array") from exc
        if hasattr(node, "shape"):
            return node
        arrays = [name for name, _ in node.arrays()]
        raise ValueError(f"{path} is a zarr group, not an array: pass one of {arrays} as {path}/NAME")
    raise ValueError(f"cannot read {path.name}: expected .tif/.tiff, .npy or a zarr array")


class PlaneProgress:
    """The CLI's :class:`~napari_sam.cli.TerminalProgress`, counting planes instead of bytes."""

    def __init__(self, label: str) -> None:
        from .cli import TerminalProgress

        self.bar = TerminalProgress(label)
        self.bar._line = self._line  # type: ignore[method-assign]
        self.hits = 0

    def __call__(self, item: object) -> None:
        self.hits += bool(getattr(item, "hit", False))
        self.bar(int(getattr(item, "done")), int(getattr(item, "total")))

    def _line(self, done: int, total: int | None) -> str:
        elapsed = max(time.monotonic() - self.bar._start, 1e-6)
        total = total or 0
        fraction = min(done / total, 1.0) if total else 0.0
        filled = int(fraction * self.bar.width)
        bar = "#" * filled + "-" * (self.bar.width - filled)
        return f"{self.bar.label} [{bar}] {done}/{total} planes  {elapsed / max(done, 1):.2f} s/plane"


def run_embed(args: argparse.Namespace) -> int:
    # The input and the output are checked before torch is imported or the model loaded.
    if args.object_size is not None and not args.object_size > 0:
        print(f"error: --object-size must be a positive number of pixels, got {args.object_size}", file=sys.stderr)
        return 2
    try:
        data = open_stack(args.input)
        check_output(args.input, args.output, args.overwrite)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .errors import NotEnoughMemoryError
    from .loading import load_model
    from .predictor import Predictor
    from .store import embed_stack
    from .weights import WeightsError

    try:
        predictor = Predictor(load_model(args.model, device=args.device))
    except (OSError, ValueError, KeyError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = PlaneProgress("embed")
    source = str(Path(args.input).expanduser().resolve())
    try:
        hits, total = embed_stack(predictor, data, args.output, args.channel_axis, args.rgb, progress=progress,
                                  overwrite=args.overwrite, source=source, tiles=args.tiles,
                                  object_size=args.object_size)
    except NotEnoughMemoryError as exc:
        progress.bar.finish()
        print(f"error: {exc} Planes written so far are kept.", file=sys.stderr)
        return 1
    except (ValueError, TypeError, IndexError) as exc:
        progress.bar.finish()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        progress.bar.finish()
        print(f"error writing {args.output}: {exc}. Planes written so far are kept.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.bar.finish()
        print("interrupted; planes written so far are kept.", file=sys.stderr)
        return 130
    progress.bar.finish()
    print(f"cache hit: {hits}/{total} planes")
    print(args.output)
    return 0
