"""The ``napari-sam`` command line.

Each subcommand is one ``add_<name>_command(subparsers)`` function that builds its parser
and sets ``handler``, a function taking the parsed arguments and returning an exit status.
To add a subcommand, write such a function and append it to :data:`SUBCOMMANDS`.

The modules: :mod:`.arguments` (what the subcommands share in parsing), :mod:`.progress`
(the one progress bar), :mod:`.read` (the one reader of images and stacks),
:mod:`.outputs` (where outputs may go), :mod:`.models`, :mod:`.embed`, :mod:`.segment`
and :mod:`.refine` (the commands) and :mod:`.batch` (the serial and dask runner behind ``segment``).
Nothing is imported here that needs torch, Qt or napari.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import DeviceUnavailableError, NotEnoughMemoryError, QtBindingError
from ..model.weights import WeightsError
from .arguments import ArgumentParser, Handler, Subparsers
from .embed import add_embed_command
from .models import add_download_command, add_models_command
from .progress import TerminalProgress
from .refine import add_refine_command
from .segment import add_segment_command

__all__ = ["SUBCOMMANDS", "TerminalProgress", "build_parser", "main"]

SUBCOMMANDS: list[Callable[[Subparsers], None]] = [add_models_command, add_download_command, add_segment_command,
                                                    add_embed_command, add_refine_command]


def build_parser() -> ArgumentParser:
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
