"""GVote's knob choice: the setting that meets the accuracy target at the least mean KV memory.

Every setting on the grid was run through the real model on the calibration sample (the problem's table),
so the choice is an exhaustive search over measured rows: OPTIMAL for the grid as posed. Ties go to the
smaller p95, then to the earlier row (deterministic).
"""
from __future__ import annotations

from dataclasses import dataclass

from solvers.common import InfeasibleError, Solution, Status, Stopwatch, TraceEvent
from solvers.kv_budget.cost import KvMetrics, meets, metrics
from solvers.kv_budget.problem import GVOTE, KvBudgetProblem


@dataclass(frozen=True)
class GVoteConfig:
    """Which rows the search may pick (the method's own)."""

    method: str = GVOTE


@dataclass(frozen=True, kw_only=True)
class KvBudgetSolution(Solution):
    """The chosen row (its knobs in `params`) and its metrics."""

    row: int = -1
    metrics: KvMetrics | None = None


def pick(problem: KvBudgetProblem, rows: list[int], name: str) -> KvBudgetSolution:
    """The least-mean-memory row of `rows` that meets the target (INFEASIBLE solution when none does)."""
    clock = Stopwatch()
    trace = []
    best = None
    for it, r in enumerate(rows):
        m = metrics(problem, r)
        ok = meets(problem, r)
        trace.append(TraceEvent("grid", it, {"row": r, "mean_kv_bytes": round(m.mean_kv_bytes, 1),
                                             "accuracy": round(m.accuracy, 6), "meets": ok}))
        key = (m.mean_kv_bytes, m.p95_kv_bytes, r)
        if ok and (best is None or key < best[0]):
            best = (key, r, m)
    if best is None:
        return KvBudgetSolution(status=Status.INFEASIBLE, objective=float("inf"), wall_time_s=clock.elapsed(),
                                trace=tuple(trace), params={"method": name})
    _, r, m = best
    return KvBudgetSolution(status=Status.OPTIMAL, objective=m.mean_kv_bytes, row=r, metrics=m,
                            wall_time_s=clock.elapsed(), trace=tuple(trace), params=dict(problem.configs[r]))


def reachable_drop(problem: KvBudgetProblem, rows: list[int]) -> float:
    """The smallest accuracy drop (fraction) any of `rows` achieves."""
    return min(metrics(problem, r).accuracy_drop for r in rows)


def solve(problem: KvBudgetProblem, config: GVoteConfig = GVoteConfig()) -> KvBudgetSolution:
    """GVote's knobs meeting `max_accuracy_drop` at the least mean KV bytes; InfeasibleError when none does."""
    rows = problem.rows(config.method)
    if not rows:
        raise ValueError("the table has no GVote rows")
    sol = pick(problem, rows, config.method)
    if sol.status == Status.INFEASIBLE:
        best = reachable_drop(problem, rows)
        raise InfeasibleError(
            f"no GVote setting keeps accuracy within {100 * problem.max_accuracy_drop:g} points of the full cache "
            f"on the calibration sample (the best loses {100 * best:.2f} points)",
            f"allow --max-accuracy-drop {100 * best + 0.005:.2f}% or more, or add higher --p-nuc values")
    return sol
