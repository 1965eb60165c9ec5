"""The package's import graph has no cycles (module-level and function-level imports alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import bec_jax

ROOT = Path(bec_jax.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: bec_jax modules it imports}. ``from a.b import c`` is an edge to ``a.b.c`` when that is a
    module, else to ``a.b``; in a module that calls ``importlib.import_module``, a string naming a module
    is an edge too (a module run as ``python -m`` in a subprocess is not);
    parent packages are not edges (importing ``a.b.c`` runs ``a.b``'s
    ``__init__``, but an ``__init__`` that only re-exports is not a dependency of its children)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        source = path.read_text()
        dynamic = "import_module" in source  # then module names in strings are imported (cli's subcommands)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif dynamic and isinstance(node, ast.Constant) and isinstance(node.value, str):
                targets = [node.value]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (c := visit(t)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_is_acyclic():
    graph = import_graph()
    assert "bec_jax.gpe.groundstate" in graph and graph["bec_jax.gpe.groundstate"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
