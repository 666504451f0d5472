"""The import layering of the architecture, checked on the source (every import, module-level or inside a
function): profilers and solvers import nothing from planner, codegen or runtime; the runtime nothing from
solvers, planner or the solver stack; codegen is reached only through a family's entry points; the leaf
packages (core, kernels) import no layer above them; `testbeds` (offline test beds) is a leaf that profilers,
runtime, the planner, benchmarks and tests may import, and solvers never."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "kernels", "testbeds", "profilers", "solvers", "codegen", "runtime", "planner")

# package -> top-level modules it must never import
FORBIDDEN = {
    "core": {"planner", "profilers", "solvers", "codegen", "runtime", "kernels", "testbeds", "torch", "transformers"},
    "kernels": {"planner", "profilers", "solvers", "codegen", "runtime", "testbeds"},
    "profilers": {"planner", "codegen", "runtime"},
    "solvers": {"planner", "codegen", "runtime", "profilers", "kernels", "testbeds", "torch", "transformers"},
    "runtime": {"planner", "solvers", "codegen", "profilers", "ortools", "cvxpy"},
    "codegen": {"solvers", "runtime", "profilers"},
    "testbeds": {"planner", "profilers", "solvers", "codegen", "runtime", "kernels"},
}
# codegen may read the plan records (stdlib leaf modules of planner), nothing else of the planner
CODEGEN_PLANNER_LEAVES = {"planner.schema", "planner.serde"}


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    pkg = path.relative_to(ROOT).with_suffix("").parts[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(pkg[: len(pkg) - node.level + 1])
                out.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                out.add(node.module)
    return out


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(package: str) -> None:
    bad = []
    for path in sources(package):
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in FORBIDDEN[package] and not (package == "codegen" and name in CODEGEN_PLANNER_LEAVES):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
            if package == "codegen" and top == "planner" and name not in CODEGEN_PLANNER_LEAVES:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_codegen_is_reached_only_through_family_entry_points() -> None:
    bad = []
    for package in PACKAGES:
        for path in sources(package):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(("codegen/", "planner/families/")):
                continue
            if any(n.split(".")[0] == "codegen" for n in imports_of(path)):
                bad.append(rel)
    assert bad == []


def test_the_spine_names_no_family() -> None:
    """planner/ outside families/ (and the registry's one line per family) never imports a family's modules."""
    bad = []
    for path in sources("planner"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("planner/families/") or rel == "planner/registry.py":
            continue
        for name in imports_of(path):
            if name.startswith("planner.families.") and name != "planner.families.base":
                bad.append(f"{rel} imports {name}")
            if name.startswith(("solvers.", "codegen.", "runtime.")):
                bad.append(f"{rel} imports {name}")
    assert bad == []
