"""The layers of the code: nothing outside napari_sam._qt imports Qt, and the interactive
core imports neither Qt nor napari."""

from __future__ import annotations

import subprocess
import sys

IMPORT_ALL = """
import importlib, pkgutil, sys

def walk(package):
    # pkgutil.walk_packages would import napari_sam._qt itself to look inside it
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if info.name.endswith(("._qt", "__main__")):
            continue
        module = importlib.import_module(info.name)
        yield info.name
        if info.ispkg:
            yield from walk(module)

names = list(walk(importlib.import_module(PACKAGE)))
gui = sorted({m.split(".")[0] for m in sys.modules} & {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari"})
print(len(names), " ".join(gui))
"""


def imported(package: str) -> tuple[int, set[str]]:
    """(modules imported, GUI packages loaded) after importing every module of ``package``
    but napari_sam._qt, in a fresh interpreter."""
    script = f"PACKAGE = {package!r}\n" + IMPORT_ALL
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), set(out[1:])


def test_no_module_outside_qt_imports_a_qt_binding():
    count, gui = imported("napari_sam")
    assert count > 20 and not gui & {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6"}, gui


def test_the_interactive_core_imports_neither_qt_nor_napari():
    count, gui = imported("napari_sam.interactive")
    assert count >= 6 and gui == set(), gui
