"""The ``napari-sam`` command line.

Each subcommand is one ``add_<name>_command(subparsers)`` function that builds its parser
and sets ``handler``, a function taking the parsed arguments and returning an exit
status. To add a subcommand (``segment``, ``embed``, ...), write such a function and
append it to :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from . import __version__
from .cli_embed import add_embed_command
from .cli_segment import add_segment_command
from .errors import DeviceUnavailableError, NotEnoughMemoryError, QtBindingError
from .registry import DEFAULT_MODEL, ModelSpec, get_spec, list_models
from .weights import WeightsError, cache_dir, checkpoint_status, download, download_url, locate_bundled

# argparse has no public name for the object add_subparsers() returns.
Subparsers = argparse._SubParsersAction
Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- arguments and outputs
#
# Shared by the subcommands, and light: nothing here imports torch, so that a typo or an
# unwritable output is reported in a fraction of a second, before any model work.

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
DEVICE_NAMES = "auto, cpu, cuda, cuda:N (N = 0, 1, ...), mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``napari-sam segment: error: ...``), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def model_argument(value: str) -> str:
    """argparse type of ``--model``: a registry name or alias, or an existing checkpoint file."""
    if Path(value).expanduser().is_file():
        return value
    try:
        get_spec(value)
    except KeyError as exc:
        if Path(value).suffix.lower() in CHECKPOINT_SUFFIXES or os.sep in value:
            raise argparse.ArgumentTypeError(f"checkpoint file {value} not found") from None
        names = [s.name for s in list_models()] + [a for s in list_models() for a in s.aliases]
        close = difflib.get_close_matches(value.strip().lower(), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise argparse.ArgumentTypeError(f"{exc.args[0]}{hint}") from None
    return value


def device_argument(value: str) -> str:
    """argparse type of ``--device``: auto, cpu, cuda, cuda:N or mps (any case)."""
    key = value.strip().lower()
    if not _DEVICE.match(key):
        raise argparse.ArgumentTypeError(f"unknown device {value!r}; choose one of: {DEVICE_NAMES}")
    return key


def registry_spec(model: str, model_type: str | None = None) -> ModelSpec | None:
    """The registry entry ``--model`` names (None for a checkpoint file), checked against
    ``--model-type``; a ValueError says what contradicts what."""
    if Path(model).expanduser().is_file():
        return None
    spec = get_spec(model)
    if model_type is not None and model_type != spec.arch:
        raise ValueError(f"model {spec.name!r} is a {spec.arch}; --model-type {model_type} contradicts it "
                         "(--model-type is for checkpoint files)")
    return spec


# --------------------------------------------------------------------------- progress bar


class TerminalProgress:
    """A plain progress bar on stderr, usable as the ``progress`` callback of downloads.

    On a terminal it redraws one line; in a log file it writes a line every 10 %.
    """

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= 0.1 or (total is not None and done >= total):
                self._last_draw = now
                self.stream.write("\r" + self._line(done, total))
                self.stream.flush()
                self._drawn = True
        elif total:
            decile = min(10, done * 10 // total)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self._line(done, total) + "\n")
                self.stream.flush()

    def finish(self) -> None:
        """End the bar's line so that later output starts on a fresh one."""
        if self._tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _line(self, done: int, total: int | None) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        speed = f"{done / elapsed / 1e6:6.1f} MB/s"
        if not total:
            return f"{self.label} {done / 1e6:8.1f} MB  {speed}"
        fraction = min(done / total, 1.0)
        filled = int(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        return f"{self.label} [{bar}] {fraction:4.0%} {done / 1e6:.1f}/{total / 1e6:.1f} MB  {speed}"


# --------------------------------------------------------------------------- models


def add_models_command(subparsers: Subparsers) -> None:
    """``napari-sam models``: the registry as a table with where each model's weights are."""
    parser = subparsers.add_parser(
        "models",
        help="list the known models and whether their weights are available",
        description="List every registered model: size, prompts it answers well, and whether its "
        "weights are bundled with a package, cached, or still need a download.",
    )
    parser.set_defaults(handler=run_models)


def _size_text(spec: ModelSpec, status: str, path: Path) -> str:
    size = spec.size_bytes
    if size is None and status != "needs download":
        size = path.stat().st_size
    return "?" if size is None else f"{size / 1e6:.0f}"


def _location_text(spec: ModelSpec, status: str, path: Path) -> str:
    if status != "needs download":
        return str(path)
    return download_url(spec) or "(no URL known: copy the file into the cache folder)"


def models_table(specs: Sequence[ModelSpec]) -> str:
    """Format ``specs`` as a plain-text table (one row per model)."""
    header = ("NAME", "TITLE", "SIZE MB", "PROMPTS", "STATUS", "PATH OR URL")
    rows = [header]
    for spec in specs:
        status, path = checkpoint_status(spec)
        name = spec.name + (" *" if spec.name == DEFAULT_MODEL else "")
        rows.append(
            (
                name,
                spec.title,
                _size_text(spec, status, path),
                ",".join(spec.prompts),
                status,
                _location_text(spec, status, path),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def run_models(args: argparse.Namespace) -> int:
    print(models_table(list_models()))
    print()
    print(f"* default model.  Cache folder: {cache_dir()}")
    print("Fetch weights ahead of time with: napari-sam download NAME")
    return 0


# --------------------------------------------------------------------------- download


def add_download_command(subparsers: Subparsers) -> None:
    """``napari-sam download NAME``: fetch and verify weights ahead of time."""
    parser = subparsers.add_parser(
        "download",
        help="download and verify model weights ahead of time",
        description="Download weights into the cache folder and check their size and SHA-256. "
        "Set NAPARI_SAM_MIRROR to fetch from an institute mirror, NAPARI_SAM_CACHE to move the cache.",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="model name or alias (see `napari-sam models`)")
    parser.add_argument("--force", action="store_true", help="download again even if a verified copy exists")
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    parser.set_defaults(handler=run_download)


def _download_one(name: str, force: bool, timeout: float) -> int:
    try:
        spec = get_spec(name)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    bundled = locate_bundled(spec)
    if bundled is not None:
        print(f"{spec.name}: weights ship with an installed package, nothing to download.", file=sys.stderr)
        print(bundled)
        return 0
    bar = TerminalProgress(spec.name)
    try:
        path = download(spec, progress=bar, timeout=timeout, force=force)
    except WeightsError as exc:
        bar.finish()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.finish()
        print(f"{spec.name}: interrupted; nothing was saved.", file=sys.stderr)
        return 130
    bar.finish()
    print(f"{spec.name}: verified weights in the cache folder.", file=sys.stderr)
    print(path)
    return 0


def run_download(args: argparse.Namespace) -> int:
    status = 0
    for name in args.names:
        code = _download_one(name, args.force, args.timeout)
        if code == 130:
            return code
        status = status or code
    return status


# --------------------------------------------------------------------------- entry point

SUBCOMMANDS: list[Callable[[Subparsers], None]] = [add_models_command, add_download_command, add_segment_command,
                                                    add_embed_command]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand in :data:`SUBCOMMANDS`."""
    parser = ArgumentParser(
        prog="napari-sam",
        description="Segment Anything for microscopy: manage models and run segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add_command in SUBCOMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except (WeightsError, DeviceUnavailableError, NotEnoughMemoryError, QtBindingError) as exc:
        # Errors whose message already says what to do: no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
