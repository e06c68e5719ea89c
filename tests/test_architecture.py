"""The package's shape: no import circle between its modules, counting the imports made inside
functions too (a deferred import hides a circle from the interpreter, not from a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sa_profiler"


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    deps.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    graph = import_graph()
    assert "sa_profiler.attention.backends" in graph["sa_profiler.attention.routing"]
    graph["sa_profiler.attention.backends"].add("sa_profiler.attention.routing")  # the circle there was
    assert ["sa_profiler.attention.backends", "sa_profiler.attention.routing"] in circles(graph)


def test_the_architecture_map_names_what_exists():
    """ARCHITECTURE.md: every path it names exists, every module imports, every object is there."""
    import importlib
    import re

    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`(sa_profiler[\w./:]*)`", text))
    assert len(named) > 30
    for name in sorted(named):
        if "/" in name:
            assert (PACKAGE.parent / name).exists(), name
            continue
        module, _, attr = name.partition(":")
        imported = importlib.import_module(module)
        if attr:
            assert hasattr(imported, attr), name
    for path in re.findall(r"`((?:tests|sa_profiler)/[\w./]+\.py)`", text):
        assert (PACKAGE.parent / path).is_file(), path
