"""The shape of the code base: a straight descent, no module pair importing each other, and the
inference path's lower floors never reaching up (an AST scan of every import, lazy ones too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "colorcli"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """module -> the colorcli modules it imports anywhere (top level or inside functions)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                # `from colorcli.inference import render` imports the submodule render
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t.startswith("colorcli") and t != name:
                    found.add(t)
        graph[name] = found
    return graph


GRAPH = _imports()


def test_no_two_modules_import_each_other():
    pairs = sorted({tuple(sorted((a, b))) for a, deps in GRAPH.items() for b in deps
                    if a in GRAPH.get(b, set()) and not (a == "colorcli" or b == "colorcli")})
    # A package's __init__ re-exporting its submodules is the one allowed back edge.
    pairs = [(a, b) for a, b in pairs if not (b.startswith(a + ".") or a.startswith(b + "."))]
    assert pairs == []


@pytest.mark.parametrize(("module", "floor"), [
    # Each module of the inference path may import only what is below it.
    ("colorcli.inference.settings", {"colorcli.errors", "colorcli.sizing", "colorcli.steer"}),
    ("colorcli.inference.render", {"colorcli.color", "colorcli.sizing"}),
    ("colorcli.inference.backends", {"colorcli.bounds", "colorcli.errors", "colorcli.sizing", "colorcli.paths", "colorcli.models",
                                     "colorcli.models.base", "colorcli.weights"}),
    ("colorcli.inference.colorizer", {"colorcli.errors", "colorcli.sizing", "colorcli.paths", "colorcli.inference",
                                      "colorcli.inference.render", "colorcli.inference.backends",
                                      "colorcli.inference.settings", "colorcli.steer"}),
    ("colorcli.color", set()),
    ("colorcli.paths", set()),
    ("colorcli.sizing", {"colorcli.errors"}),
])
def test_lower_floors_never_reach_up(module, floor):
    assert GRAPH[module] <= floor, GRAPH[module] - floor


def test_removed_modules_stay_removed():
    """One path: the old second and third ones are gone, and nothing imports them."""
    for gone in ("colorcli.pipeline", "colorcli.onnx_runtime", "colorcli.refine"):
        assert gone not in GRAPH
        assert not [m for m, deps in GRAPH.items() if gone in deps]
