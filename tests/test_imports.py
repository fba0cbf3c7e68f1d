"""The package's import structure: no import cycles (module-level or inside functions), and every
module imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sem_fast"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The sem_fast module an imported name refers to (its longest prefix that is a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the sem_fast modules it imports anywhere in its body (functions included).

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``;
    relative imports are resolved against the importing module's package.
    """
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            edges.update(t for t in map(_resolve, targets) if t is not None and t != module)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_and_function_level_imports_are_edges():
    graph = import_graph()
    assert "sem_fast.ops.native" in graph["sem_fast.ops.registry"]  # imported inside a function
    assert "sem_fast.ops.schema" in graph["sem_fast.ops.triton.utils"]


def test_no_module_imports_itself_back_through_others():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _import_alone(name: str) -> str | None:
    try:
        __import__(name)
    except Exception as error:  # noqa: BLE001 - reported by name
        return f"{name}: {type(error).__name__}: {error}"
    return None


@pytest.mark.skipif(sys.platform != "linux", reason="forks the test process (torch imported, sem_fast not)")
def test_every_module_imports_alone_in_a_fresh_interpreter():
    """Each module in its own child forked from an interpreter that has imported torch (slow to
    import) and no sem_fast module."""
    script = (
        "import sys, multiprocessing as mp\n"
        "from tests.test_imports import MODULES, _import_alone\n"
        "import torch\n"
        "assert not [m for m in sys.modules if m.startswith('sem_fast')]\n"
        "with mp.get_context('fork').Pool(2, maxtasksperchild=1) as pool:\n"
        "    errors = [e for e in pool.map(_import_alone, sorted(MODULES), chunksize=1) if e]\n"
        "print('\\n'.join(errors)); sys.exit(1 if errors else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
