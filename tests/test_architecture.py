"""The import graph the design promises (DESIGN.md, "Architecture"), read from the source with ``ast``.

diffusion imports none of the packages above it; unlearn and attacks never import each other; reports reads only
the results document (nothing from audit, unlearn or attacks); no module imports itself through a circle, function-
level imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("diffusion", "unlearn", "attacks", "audit", "reports", "erasediff")
FORBIDDEN = {
    "diffusion": {"unlearn", "attacks", "audit", "reports", "erasediff"},
    "unlearn": {"attacks", "audit", "reports", "erasediff"},
    "attacks": {"unlearn", "audit", "reports", "erasediff"},
    "reports": {"unlearn", "attacks", "audit", "erasediff"},
    "audit": {"erasediff"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports (relative imports resolved; ``from x import y`` counts x.y when y is a
    module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t.split(".")[0] in PACKAGES}
    return found - {name}


def _graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): {m for m in _imports(p, modules) if m in modules} for p in files}


def test_layers_import_only_downward():
    wrong = [(module, target) for module, targets in _graph().items() for target in targets
             if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], set())]
    assert not wrong, wrong


def test_no_module_imports_itself_through_a_circle():
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(module: str, stack: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if target.startswith(f"{module}.") or module.startswith(f"{target}."):
                continue  # a package and its own submodules
            if state.get(target) == 1:
                return [*stack, module, target]
            if target not in state and (cycle := visit(target, [*stack, module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle)
