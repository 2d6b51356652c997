"""The layout rules of docs/design.md, checked from the code's own imports (lazy ones included).

harness/ holds only a few top-level modules; packages import only packages below them
(devices <- telemetry <- sweep -> records <- readers <- planner/fleet, the CLI on top); no two
modules import each other, directly or round a longer circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: top-level modules allowed in harness/ besides the packages
TOP_MODULES = {"__init__", "cli", "errors", "profiles", "knobs"}

#: each part's rank: a part imports only parts of a lower rank (or itself)
RANK = {
    "harness": 0,  # harness/__init__.py (version)
    "harness.errors": 0,
    "harness.knobs": 1,
    "harness.devices": 2,
    "harness.telemetry": 3,
    "workloads": 3,
    "harness.profiles": 4,
    "harness.records": 4,
    "harness.sweep": 5,
    "harness.readers": 5,
    "harness.planner": 6,
    "harness.fleet": 7,
    "harness.govern": 7,
    "harness.testing": 7,
    "harness.render": 8,
    "harness.cli": 9,
}


def _modules() -> dict[str, Path]:
    out = {}
    for base in ("harness", "workloads"):
        for p in (ROOT / base).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules a file imports anywhere in it (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n:
                found.add(n)
    return found


def _part(module: str) -> str:
    for p in sorted(RANK, key=len, reverse=True):
        if module == p or module.startswith(p + "."):
            return p
    raise AssertionError(f"{module} belongs to no part of the layout; add it to RANK and docs/design.md")


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_harness_top_level_holds_only_the_cli_errors_profiles_and_knobs():
    top = {p.stem for p in (ROOT / "harness").glob("*.py")}
    assert top <= TOP_MODULES, f"unexpected top-level modules: {sorted(top - TOP_MODULES)}"


def test_imports_point_down_the_layers():
    bad = []
    for mod, deps in _graph().items():
        for d in deps:
            a, b = _part(mod), _part(d)
            if a != b and RANK[b] >= RANK[a] and b != "harness":
                bad.append(f"{mod} imports {d}")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = _graph()
    # a package's __init__ importing its own modules is not a circle between concerns
    for m in graph:
        graph[m] = {d for d in graph[m] if not m.startswith(d + ".") and not d.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))
