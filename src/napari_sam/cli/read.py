"""Reading the images and stacks the command line is given, the same way for every command.

TIFF/OME-TIFF, ``.npy`` and zarr are read lazily where the format allows. A zarr group
stands for one image only where that image is certain: the full-resolution level of an
OME-Zarr image, or the group's only array. Any other group is refused with the names of its
arrays, since picking one (``raw``? ``labels``?) would be a guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr", ".npy")
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
GROUPS = "a zarr group is read as its OME-Zarr full resolution, or its only array"
EXPECTED = "expected .tif/.tiff, .npy or a zarr array (a folder with a zarr.json or .zarray file)"


def is_zarr(path: Path) -> bool:
    """A folder holding a zarr array or group (whatever its name)."""
    return path.is_dir() and any((path / marker).exists() for marker in ZARR_MARKERS)


def is_image_path(path: Path) -> bool:
    """A path the reader takes: named as an image, or a zarr folder."""
    return path.name.lower().endswith(IMAGE_SUFFIXES) or is_zarr(path)


def stem(path: Path) -> str:
    """The name of an image without its format's suffix (``cells.ome.tif`` -> ``cells``)."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def open_image(path: str | Path) -> Any:
    """An array over the image or stack at ``path`` that reads planes on demand where the
    format allows (a memory map, or a zarr array). Raises FileNotFoundError or ValueError
    with what was expected."""
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if name.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    if name.endswith((".tif", ".tiff")):
        import tifffile

        try:
            return tifffile.memmap(path, mode="r")  # uncompressed, contiguous: no copy at all
        except ValueError:
            import zarr

            return zarr.open(tifffile.imread(path, aszarr=True), mode="r")  # one tile/strip at a time
    if path.is_dir() and not is_zarr(path):
        raise ValueError(f"{path} is a folder, not an image stack: {EXPECTED}")
    if name.endswith(".zarr") or path.is_dir():
        return _open_zarr(path)
    raise ValueError(f"cannot read {path.name}: {EXPECTED}")


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` in memory, without axes of length 1 (an OME file's single
    channel or time point), as automatic segmentation takes it."""
    return np.squeeze(np.asarray(open_image(path)))


def _open_zarr(path: Path) -> Any:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr's errors name its internals, not the user's mistake
        raise ValueError(f"cannot read {path} as a zarr array ({type(exc).__name__}: {exc}); {EXPECTED}") from exc
    return node if hasattr(node, "shape") else _group_image(node, path)


def _group_image(group: Any, path: Path) -> Any:
    """The one array a zarr group stands for (see the module's docstring)."""
    attrs = group.attrs.asdict()
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")  # OME-Zarr 0.4 or 0.5
    try:
        return group[multiscales[0]["datasets"][0]["path"]]  # levels are listed from the finest
    except (TypeError, LookupError):
        pass  # not OME-Zarr, or metadata naming no array: judged by its arrays alone
    arrays = sorted(name for name, _ in group.arrays())
    if len(arrays) == 1:
        return group[arrays[0]]
    if not arrays:
        raise ValueError(f"{path} is a zarr group with no array in it: {EXPECTED}")
    raise ValueError(f"{path} is a zarr group of {len(arrays)} arrays, not one image: pass one of {arrays} "
                     f"as {path}/NAME")
