"""Every constraint of a kv-budget solution, checked without a solver."""
from __future__ import annotations

from solvers.kv_budget.cost import meets, metrics
from solvers.kv_budget.gvote import KvBudgetSolution
from solvers.kv_budget.problem import KvBudgetProblem


def validate(problem: KvBudgetProblem, sol: KvBudgetSolution) -> list[str]:
    """Violations (empty when valid)."""
    bad = []
    if not 0 <= sol.row < len(problem.configs):
        return [f"row {sol.row} is not in the table"]
    if not meets(problem, sol.row):
        bad.append(f"row {sol.row} loses {100 * metrics(problem, sol.row).accuracy_drop:.2f} points, above the "
                   f"allowed {100 * problem.max_accuracy_drop:g}")
    if abs(metrics(problem, sol.row).mean_kv_bytes - sol.objective) > 1e-6 * max(1.0, sol.objective):
        bad.append("objective is not the row's mean KV bytes")
    if dict(problem.configs[sol.row]) != dict(sol.params):
        bad.append("params are not the row's knobs")
    return bad
