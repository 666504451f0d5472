"""The exact reference for FedBE's allocation: a CP-SAT assignment (docs/fed-expand.md, "Exact reference").

Booleans x[c, j] (client c trains added block j) and y[c, j] (j is c's lowest trained block):
    # [Constraint] one lowest block:      Σ_j y[c, j] ≤ 1, and = Σ_j x[c, j] > 0
    # [Constraint] lowest is trained:     y[c, j] ≤ x[c, j]
    # [Constraint] nothing below lowest:  x[c, j] ≤ Σ_{i ≤ j} y[c, i]
    # [Constraint] memory and deadline:   Σ_j x[c, j] ≤ max_count[c, j] + P·(1 − y[c, j])
    # [Constraint] coverage:              Σ_c x[c, j] ≥ 1
    maximise Σ n_c·(1 + bonus·home_cj)·x[c, j]   (integers: values scaled by 10^6)
`max_count` is exact because, for a fixed lowest block, time and memory grow with the count only.
"""
from __future__ import annotations

import numpy as np

from solvers.common import InfeasibleError, Status, Stopwatch
from solvers.fed_expand.cost import evaluate, max_count
from solvers.fed_expand.problem import FedExpandProblem, FedExpandSolution

MAX_CPSAT_CLIENTS = 64
SCALE = 10**6


class CpSat:
    """CP-SAT over the assignment (n ≤ 64)."""

    name = "cp-sat"

    def unsupported(self, problem: FedExpandProblem) -> str | None:
        """Why this reference does not apply (None when it does)."""
        if problem.num_clients > MAX_CPSAT_CLIENTS:
            return f"{problem.num_clients} clients (CP-SAT reference up to {MAX_CPSAT_CLIENTS})"
        return None

    def solve(self, problem: FedExpandProblem, time_limit_s: float = 30.0) -> FedExpandSolution:
        """Optimal (or time-limited) assignment; InfeasibleError when coverage cannot be met."""
        from ortools.sat.python import cp_model

        watch = Stopwatch()
        p = problem
        n, P = p.num_clients, p.num_added
        caps = max_count(p)
        value = p.value()
        scale = SCALE / max(float(value.max()), 1e-12) if value.size else 1.0
        m = cp_model.CpModel()
        x = [[m.new_bool_var(f"x{c}_{j}") for j in range(P)] for c in range(n)]
        y = [[m.new_bool_var(f"y{c}_{j}") for j in range(P)] for c in range(n)]
        for c in range(n):
            # [Constraint] one lowest block
            m.add(sum(y[c]) <= 1)
            for j in range(P):
                m.add(x[c][j] <= sum(y[c]))
                # [Constraint] lowest is trained
                m.add(y[c][j] <= x[c][j])
                # [Constraint] nothing below lowest
                m.add(x[c][j] <= sum(y[c][: j + 1]))
                # [Constraint] memory and deadline
                if caps[c, j] <= 0:
                    m.add(y[c][j] == 0)
                else:
                    m.add(sum(x[c]) <= int(caps[c, j]) + P * (1 - y[c][j]))
        for j in range(P):
            # [Constraint] coverage
            m.add(sum(x[c][j] for c in range(n)) >= 1)
        m.maximize(sum(int(round(value[c, j] * scale)) * x[c][j] for c in range(n) for j in range(P)))
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = float(time_limit_s)
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = 0
        status = solver.solve(m)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            raise InfeasibleError("the CP-SAT reference finds no assignment that trains every added block",
                                  "add fewer blocks or raise client memory or the deadline")
        assign = np.array([[bool(solver.value(x[c][j])) for j in range(P)] for c in range(n)], dtype=bool)
        metrics = evaluate(p, assign)
        total = float(np.sum(p.samples)) or 1.0
        bound = float(solver.best_objective_bound) / scale / total
        return FedExpandSolution(status=Status.OPTIMAL if status == cp_model.OPTIMAL else Status.TIME_LIMIT,
                                 objective=metrics.utility, metrics=metrics, bound=max(bound, metrics.utility),
                                 wall_time_s=watch.elapsed(), assign=assign, params={"method": "cp-sat"})
