"""What the subcommands share in parsing: usage errors on one line, and the ``--model`` and
``--device`` checks.

Light on purpose: nothing here imports torch, so that a typo is reported in a fraction of a
second, before any model work.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from collections.abc import Callable
from pathlib import Path

from ..model.registry import ARCHITECTURES, DEFAULT_MODEL, ModelSpec, get_spec, list_models

# argparse has no public name for the object add_subparsers() returns.
Subparsers = argparse._SubParsersAction
Handler = Callable[[argparse.Namespace], int]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
DEVICE_NAMES = "auto, cpu, cuda, cuda:N (N = 0, 1, ...), mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def add_command(subparsers: Subparsers, name: str, handler: Handler, summary: str,
                description: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``, run by ``handler``; the caller adds its arguments.
    ``summary`` is its line in ``napari-sam --help``."""
    parser = subparsers.add_parser(name, help=summary, description=description)
    parser.set_defaults(handler=handler)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--model-type``, ``--device`` and ``--precision``, as the commands that
    load a model for segmentation take them."""
    parser.add_argument("--model", default=DEFAULT_MODEL, type=model_argument,
                        help=f"registry name or checkpoint path (default {DEFAULT_MODEL})")
    parser.add_argument("--model-type", default=None, choices=ARCHITECTURES,
                        help="architecture of a checkpoint path (vit_b, vit_t, ...)")
    parser.add_argument("--device", default="auto", type=device_argument, help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])


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
