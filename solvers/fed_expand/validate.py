"""Every constraint of a fed-expand assignment, checked without a solver."""
from __future__ import annotations

import numpy as np

from solvers.fed_expand.cost import evaluate
from solvers.fed_expand.problem import FedExpandProblem, FedExpandSolution


def validate(problem: FedExpandProblem, solution: FedExpandSolution, allow_sit_out: bool = False) -> list[str]:
    """Violations: shape, memory or deadline of any client, an uncovered block, an idle client (unless allowed)."""
    a = np.asarray(solution.assign, dtype=bool)
    if a.shape != (problem.num_clients, problem.num_added):
        return [f"assignment has shape {a.shape}, expected {(problem.num_clients, problem.num_added)}"]
    m = evaluate(problem, a)
    bad = [f"client {problem.client_ids[c]} exceeds its memory or round deadline"
           for c in np.flatnonzero(~m.within_budgets)]
    bad += [f"added block {j} has no trainer" for j in m.uncovered]
    if not allow_sit_out:
        bad += [f"client {problem.client_ids[c]} trains no block" for c in np.flatnonzero(~a.any(axis=1))]
    return bad
