"""The package's shape, kept: no import cycle (imports inside functions count, ``TYPE_CHECKING`` blocks do not),
no module over 500 lines, no class over 20 methods, and nothing below the engine imports it (the layers under
``run/`` read only its record types)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest_emguard

ROOT = Path(pytest_emguard.__file__).parent
BELOW_THE_ENGINE = ("config", "decide", "checks", "backends", "judge")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules ``name`` imports anywhere but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text("utf-8"))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [s for s in subs if s in MODULES] or [node.module]
        else:
            continue
        for target in names:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above is not vacuous: the package itself imports ``api``, which imports the engine."""
    assert "pytest_emguard.api" in GRAPH["pytest_emguard"]
    assert "pytest_emguard.run.engine" in GRAPH["pytest_emguard.api"]
    assert "pytest_emguard.run.records" in GRAPH["pytest_emguard.decide.gate"]


def test_no_module_over_500_lines_and_no_class_over_20_methods() -> None:
    long = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text("utf-8").splitlines())) > 500
    }
    assert not long
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ClassDef):
                methods = [b for b in node.body if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))]
                assert len(methods) <= 20, f"{name}.{node.name} has {len(methods)} methods"


def test_nothing_below_the_engine_imports_it() -> None:
    for name, targets in GRAPH.items():
        layer = name.split(".")[1] if name.count(".") >= 1 else ""
        if layer not in BELOW_THE_ENGINE:
            continue
        engine = sorted(
            t for t in targets if t.startswith("pytest_emguard.run.") and t != "pytest_emguard.run.records"
        )
        assert not engine, f"{name} imports the engine: {engine}"
