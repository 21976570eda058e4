"""No import cycles in prodlens: the module-level imports of every module form a DAG.

Imports inside functions and under ``TYPE_CHECKING`` are left out: the first run only when
called (never at import), the second never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "prodlens"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else \
        _module_name(path).rsplit(".", 1)[0]
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node) if isinstance(node, (ast.Try, ast.If)) else [node]:
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - child.level + 1]
                                    + ([base] if base else []))
                # ``from package import submodule`` depends on the submodule, not on the
                # package's __init__ (which Python has already started importing).
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in child.names]
            else:
                continue
            found.update(name for name in names if name in modules)
    return found


def test_no_import_cycles():
    paths = {_module_name(p): p for p in SRC.rglob("*.py")}
    modules = set(paths)
    graph = {name: _top_level_imports(path, modules) - {name} for name, path in paths.items()}
    # A package imports its own __init__ implicitly: only the edges written count here.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle.extend([*stack[stack.index(target):], node, target] if target in stack
                             else [node, target])
                return True
            if target not in state and visit(target, [*stack, node]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if name not in state and visit(name, []):
            break
    assert not cycle, " -> ".join(cycle)
