"""The layering docs/architecture.md promises, checked on the source: no import circle
anywhere in the package (counting imports inside functions and under ``TYPE_CHECKING``:
a type-only circle is still two modules that cannot be understood apart), and protocol
cores that know nothing of data, models, features or jobs."""

from __future__ import annotations

import ast
from pathlib import Path

import medtransfer

PACKAGE = Path(medtransfer.__file__).resolve().parent
#: What the pure protocol cores (``medtransfer.protocols``) may not import.
NOT_IN_PROTOCOLS = (
    "medtransfer.data",
    "medtransfer.models",
    "medtransfer.features",
    "medtransfer.jobs",
)


def _module_name(path: Path) -> str:
    parts = ("medtransfer", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` (module ``name``) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, name, modules) for name, path in paths.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_the_circle_finder_finds_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_around_a_circle() -> None:
    graph = _graph()
    assert len(graph) > 100 and "medtransfer.jobs.common" in graph
    assert _circles(graph) == []


def test_protocol_cores_know_nothing_of_data_models_features_or_jobs() -> None:
    graph = _graph()
    protocols = {
        name: deps for name, deps in graph.items() if name.startswith("medtransfer.protocols")
    }
    assert protocols
    offending = {
        name: sorted(dep for dep in deps if dep.startswith(NOT_IN_PROTOCOLS))
        for name, deps in protocols.items()
    }
    assert {name: deps for name, deps in offending.items() if deps} == {}
