"""The package graph: imports (function-level ones included) only go down the layers, and the
top-level packages form no cycle. docs/architecture.md draws the same layers."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "facesphere"

# Lowest first; a module may import its own layer or the ones below it.
LAYERS: list[set[str]] = [
    {"__init__", "errors", "cards", "registry", "paths", "device", "defaults"},
    {"io", "align"},
    {"pretrained"},
    {"models"},
    {"detect", "landmarks", "recognize"},
    {"pipeline"},
    {"gallery", "eval", "train", "video", "cluster", "export", "demo"},
    {"serve"},
    {"cli", "__main__"},
]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}

Edge = tuple[str, str, str]  # (importing module, imported module, where: file:line)


def top_level(module: str) -> str:
    """`facesphere.detect.mmod` -> `detect`; the package itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[Edge]:
    """Every facesphere import in `path`, at any depth (function bodies included)."""
    module = module_name(path)
    is_package = path.name == "__init__.py"
    found: list[Edge] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            targets = [target]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "facesphere" or target.startswith("facesphere."):
                found.append((module, target, f"{path.name}:{node.lineno}"))
    return found


def package_edges(edges: list[Edge]) -> dict[str, dict[str, list[str]]]:
    """Top-level package -> imported top-level package -> the imports that make the edge."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for source, target, where in edges:
        a, b = top_level(source), top_level(target)
        if a != b:
            graph[a][b].append(f"{source} imports {target} ({where})")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of the package graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_violations(graph: dict[str, dict[str, list[str]]]) -> list[str]:
    """Imports from a lower layer into a higher one, and packages without a layer."""
    problems = []
    names = set(graph) | {b for targets in graph.values() for b in targets}
    problems += [f"package {n!r} has no layer in LAYERS" for n in sorted(names - set(LAYER_OF))]
    for a, targets in sorted(graph.items()):
        for b, why in sorted(targets.items()):
            if a in LAYER_OF and b in LAYER_OF and LAYER_OF[b] > LAYER_OF[a]:
                problems.append(
                    f"{a} (layer {LAYER_OF[a]}) imports {b} (layer {LAYER_OF[b]}): {why[0]}"
                )
    return problems


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, list[str]]]:
    edges = [edge for path in sorted(PACKAGE.rglob("*.py")) for edge in imports_of(path)]
    assert len(edges) > 100  # the walk found the package
    return package_edges(edges)


def test_no_cycle_between_top_level_packages(graph) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, (
        " -> ".join(cycle or [])
        + "\n"
        + "\n".join(graph[a][b][0] for a, b in zip(cycle or [], (cycle or [])[1:]))
    )


def test_lower_layers_never_import_higher_ones(graph) -> None:
    assert layer_violations(graph) == []


def test_every_package_and_module_is_placed(graph) -> None:
    on_disk = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    on_disk |= {p.stem for p in PACKAGE.glob("*.py")}
    assert on_disk - set(LAYER_OF) == set()


def test_the_checks_catch_a_cycle_and_an_upward_import() -> None:
    edges = [
        ("facesphere.io.image", "facesphere.pipeline.analyzer", "image.py:1"),
        ("facesphere.pipeline.analyzer", "facesphere.io.image", "analyzer.py:1"),
        ("facesphere.gallery.store", "facesphere.gallery.index", "store.py:1"),
    ]
    graph = package_edges(edges)
    assert find_cycle(graph) in (["io", "pipeline", "io"], ["pipeline", "io", "pipeline"])
    assert layer_violations(graph) == [
        "io (layer 1) imports pipeline (layer 5): facesphere.io.image imports "
        "facesphere.pipeline.analyzer (image.py:1)"
    ]


def test_function_level_and_relative_imports_are_seen() -> None:
    heads = PACKAGE / "models" / "heads" / "__init__.py"
    targets = {target for _, target, _ in imports_of(heads)}
    assert "facesphere.models.heads.adaface" in targets  # `from .adaface import ...`
    verbs = PACKAGE / "cli" / "pipeline_cmd.py"  # imports inside the command functions
    assert "facesphere.io.draw" in {target for _, target, _ in imports_of(verbs)}
