"""Rule 6 of the house: the runtime imports only torch, pyyaml, its transport (and the model's own
transformers code), never the solver stack or the planner."""
from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
FORBIDDEN = ("solvers", "planner", "profilers", "codegen", "ortools", "cvxpy", "networkx")


def test_runtime_never_imports_the_solver_stack() -> None:
    offenders = []
    for path in sorted(RUNTIME.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(RUNTIME)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
