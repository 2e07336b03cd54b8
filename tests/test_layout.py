"""The layers of the code: the package tree is the layers (model -> predictor and prompt
service -> embeddings -> segmentation -> interactive core -> _qt and cli), each module imports
only its layer and the ones below, nothing outside napari_sam._qt imports Qt, and the
interactive core imports neither Qt nor napari."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


# --------------------------------------------------------------------------- layers

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_sam"

# Each package or module of napari_sam, by layer: a module may import its own layer and the
# ones below it, never one above (at module level, inside functions, or for type checking).
LAYERS = {
    "errors": 0, "device": 0, "files": 0, "values": 0, "imaging": 0, "masks": 0, "metrics": 0, "cache": 0,
    "variants": 0, "model": 0,
    "predictor": 1, "prompting": 1,
    "embeddings": 2,
    "segmentation": 3,
    "interactive": 4,
    "_qt": 5, "cli": 5, "_sample_data": 5, "__init__": 5, "__main__": 5,
}


def imports_of(path: Path) -> set[str]:
    """The napari_sam top-level names (packages or modules) that ``path`` imports."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    if path.name == "__init__.py":
        package = path.relative_to(SRC.parent).parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                parts = [*base, *(node.module.split(".") if node.module else [])]
            else:
                parts = (node.module or "").split(".")
            if parts[0] == "napari_sam" and len(parts) > 1:
                found.add(parts[1])
            elif parts == ["napari_sam"]:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("napari_sam."))
    return found


def test_every_module_imports_only_its_layer_and_the_ones_below():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("").parts
        own = LAYERS[rel[0]]
        for name in imports_of(path):
            if LAYERS.get(name, 5) > own:
                wrong.append(f"{'/'.join(rel)} (layer {own}) imports {name} (layer {LAYERS.get(name)})")
    assert len(list(SRC.rglob("*.py"))) > 60
    assert not wrong, "\n".join(wrong)


def test_the_tree_is_the_layers():
    top = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert top == set(LAYERS), top ^ set(LAYERS)


def test_only_qt_modules_name_a_qt_binding_even_inside_functions():
    bindings = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6")
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] == "_qt":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(SRC)}: {n}" for n in names if n.split(".")[0] in bindings]
    assert not found, found


def _module_graph() -> dict[str, set[str]]:
    """napari_sam's modules -> the modules they import when run (inside functions too;
    imports for type checkers alone left out)."""
    def name(path: Path) -> str:
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and id(node) not in typing_only:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, node.module] if node.module else base)
                deps |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in modules}
        graph[module] = deps - {module}
    return graph


def test_no_import_cycles():
    graph = _module_graph()
    assert len(graph) > 60

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for dep in graph[start] - seen:
            seen.add(dep)
            if dep == goal or reaches(dep, goal, seen):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, set())]
    assert not cycles, cycles
