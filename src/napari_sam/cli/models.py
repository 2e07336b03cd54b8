"""``napari-sam models`` and ``napari-sam download``: the registry and its weights."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..model.registry import DEFAULT_MODEL, ModelSpec, get_spec, list_models
from ..model.weights import WeightsError, cache_dir, checkpoint_status, download, download_url, locate_bundled
from .arguments import Subparsers, add_command
from .progress import TerminalProgress


def add_models_command(subparsers: Subparsers) -> None:
    """``napari-sam models``: the registry as a table with where each model's weights are."""
    add_command(
        subparsers, "models", run_models, "list the known models and whether their weights are available",
        "List every registered model: size, prompts it answers well, and whether its "
        "weights are bundled with a package, cached, or still need a download.",
    )


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
    """Print the registry table and where weights are cached."""
    print(models_table(list_models()))
    print()
    print(f"* default model.  Cache folder: {cache_dir()}")
    print("Fetch weights ahead of time with: napari-sam download NAME")
    return 0


# --------------------------------------------------------------------------- download


def add_download_command(subparsers: Subparsers) -> None:
    """``napari-sam download NAME``: fetch and verify weights ahead of time."""
    parser = add_command(
        subparsers, "download", run_download, "download and verify model weights ahead of time",
        "Download weights into the cache folder and check their size and SHA-256. "
        "Set NAPARI_SAM_MIRROR to fetch from an institute mirror, NAPARI_SAM_CACHE to move the cache.",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="model name or alias (see `napari-sam models`)")
    parser.add_argument("--force", action="store_true", help="download again even if a verified copy exists")
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")


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
    try:
        with TerminalProgress(spec.name) as bar:
            path = download(spec, progress=bar, timeout=timeout, force=force)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{spec.name}: interrupted; nothing was saved.", file=sys.stderr)
        return 130
    print(f"{spec.name}: verified weights in the cache folder.", file=sys.stderr)
    print(path)
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Download each named model in turn; stops at an interrupt."""
    status = 0
    for name in args.names:
        code = _download_one(name, args.force, args.timeout)
        if code == 130:
            return code
        status = status or code
    return status
