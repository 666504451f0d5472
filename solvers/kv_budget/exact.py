"""The reference for kv-budget: the oracle keep sets (the union of the nucleus sets of the actual
teacher-forced decoding queries). No predictor that keeps what the decoding queries need can hold less at the
same nucleus mass, so their mean bytes bound the plan from below; recall of the oracle set says how much of
what was needed a method kept."""
from __future__ import annotations

from solvers.kv_budget.problem import KvBudgetProblem


def oracle_mean_bytes(problem: KvBudgetProblem) -> float:
    """Mean KV bytes of the oracle keep sets over the calibration requests."""
    return float(problem.oracle_bytes.mean())
