"""Baselines on the same table: the full cache, and each kvpress press at the fixed ratio that meets the same
accuracy target at the least memory (its best fixed budget for this workload), plus its accuracy at the
ratio whose memory matches the plan's."""
from __future__ import annotations

from solvers.common import Baseline, Solution, Status
from solvers.kv_budget.cost import metrics
from solvers.kv_budget.gvote import KvBudgetSolution, pick
from solvers.kv_budget.problem import FULL, GVOTE, KvBudgetProblem

DESCRIPTIONS = {
    "full": "full KV cache (nothing evicted)",
    "snapkv": "kvpress SnapKVPress: observation-window attention scores, fixed ratio",
    "adakv": "kvpress AdaKVPress(SnapKV): head-adaptive budgets under a fixed total ratio",
    "pyramidkv": "kvpress PyramidKVPress: layer-decreasing budgets under a fixed ratio",
    "streamingllm": "kvpress StreamingLLMPress: sinks + recent window, fixed ratio",
    "expected_attention": "kvpress ExpectedAttentionPress: expected future attention, fixed ratio",
}


def full_cache(problem: KvBudgetProblem) -> Solution:
    r = problem.full_index
    m = metrics(problem, r)
    return KvBudgetSolution(status=Status.FEASIBLE, objective=m.mean_kv_bytes, row=r, metrics=m,
                            params=dict(problem.configs[r]))


def press_at_target(name: str):
    """The press's least-memory fixed ratio meeting the accuracy target (INFEASIBLE if no ratio does)."""
    def solve(problem: KvBudgetProblem) -> Solution:
        return pick(problem, problem.rows(name), name)
    return solve


def press_at_memory(problem: KvBudgetProblem, name: str, mean_kv_bytes: float) -> int | None:
    """The press's row with the most memory not above `mean_kv_bytes` (matched memory), or None."""
    rows = [r for r in problem.rows(name) if metrics(problem, r).mean_kv_bytes <= mean_kv_bytes * (1 + 1e-9)]
    return max(rows, key=lambda r: (metrics(problem, r).mean_kv_bytes, -r)) if rows else None


def baselines(problem: KvBudgetProblem) -> list[Baseline]:
    """Every baseline the table holds rows for."""
    out = [Baseline(FULL, DESCRIPTIONS[FULL], full_cache)]
    for name in dict.fromkeys(problem.methods):
        if name in (FULL, GVOTE):
            continue
        out.append(Baseline(name, DESCRIPTIONS.get(name, name), press_at_target(name),
                            params={"ratios": [problem.configs[r]["ratio"] for r in problem.rows(name)]}))
    return out
