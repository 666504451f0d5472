"""Exact references for fed-compress (docs/fed-compress.md, "Algorithm").

(a) Batches of one round: `sweep_batches` finds the grid assignment with the most samples per second
    `τ·Σβ_i / max_i M_i(β_i)` exactly, for any N, in O(E log E) over the E = N·|grid| values
    M_i(β): between two consecutive values the assignment is constant and the ratio falls, so the
    optimum sits at one of them (at least max_i M_i(β_min)). `brute_force_batches` enumerates the
    product of the grids for N ≤ 6 (a check of the sweep).
(b) Budgeted download: the multiple-choice knapsack in CP-SAT (one-hot x_{i,c} over the ratio grid,
    Σ bytes·x ≤ B_down, minimise integer-scaled Σ Dev·x).
(c) Rule mode has nothing to optimise; its check is exact reproduction of the formulas (tests).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from solvers.common import InfeasibleError, Status, Stopwatch
from solvers.cpsat_params import make_deterministic
from solvers.fed_compress.problem import BudgetSolution, DownloadBudgetProblem

MAX_BRUTE_FORCE_DEVICES = 6
MAX_CPSAT_CELLS = 200_000   # devices × ratio-grid entries
DEV_SCALE = 1e9             # Dev (a relative squared error) in integer units of 1e-9


def _times(problem, idx: np.ndarray, fixed_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grid = np.asarray(problem.batch_grid, dtype=float)
    a = np.asarray(problem.iter_fixed_s, dtype=float)[idx]
    b = np.asarray(problem.iter_per_sample_s, dtype=float)[idx]
    return grid, problem.local_iters * (a[:, None] + b[:, None] * grid[None, :]) + np.asarray(fixed_s)[:, None]


def sweep_batches(problem, idx: np.ndarray, fixed_s: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """The exact samples-per-second optimum over the batch grid (ties: the shorter round)."""
    grid, m = _times(problem, idx, fixed_s)                       # m: (n, G)
    n = len(idx)
    allowed = grid[None, :] <= np.asarray(cap)[:, None]
    allowed[:, 0] = True
    t_lo = float(m[:, 0].max())
    # Events: device i may step from its previous allowed grid value to grid[c] once T ≥ m[i, c].
    rows, cols = np.nonzero(allowed[:, 1:])
    cols = cols + 1
    prev = cols - 1               # allowed columns form a prefix of the ascending grid
    at = m[rows, cols]
    delta = grid[cols] - grid[prev]
    order = np.lexsort((cols, rows, at))
    at, delta = at[order], delta[order]
    base = float(grid[0]) * n
    before = at <= t_lo
    s_lo = base + float(delta[before].sum())
    best_ratio, best_t = s_lo / t_lo, t_lo
    at, delta = at[~before], delta[~before]
    if at.size:
        cum = s_lo + np.cumsum(delta)
        last_of_tie = np.r_[at[1:] != at[:-1], True]
        ratio = cum[last_of_tie] / at[last_of_tie]
        j = int(np.argmax(ratio))
        if ratio[j] > best_ratio * (1 + 1e-12):
            best_ratio, best_t = float(ratio[j]), float(at[last_of_tie][j])
    ok = (m <= best_t * (1 + 1e-12)) & allowed
    ok[:, 0] = True
    last = ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)
    return grid[last].astype(np.int64)


def brute_force_batches(problem, idx: np.ndarray, fixed_s: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Every combination of grid batches (N ≤ 6): the most samples per second, then the shorter round."""
    if len(idx) > MAX_BRUTE_FORCE_DEVICES:
        raise ValueError(f"brute force is limited to {MAX_BRUTE_FORCE_DEVICES} devices, got {len(idx)}")
    grid, m = _times(problem, idx, fixed_s)
    choices = [[c for c in range(len(grid)) if c == 0 or grid[c] <= cap[i]] for i in range(len(idx))]
    best = None
    for combo in itertools.product(*choices):
        t = max(m[i, c] for i, c in enumerate(combo))
        ratio = sum(grid[c] for c in combo) / t
        key = (-round(ratio, 9), round(t, 12))
        if best is None or key < best[0]:
            best = (key, combo)
    assert best is not None
    return np.array([grid[c] for c in best[1]], dtype=np.int64)


def samples_per_s(problem, idx: np.ndarray, fixed_s: np.ndarray, batch: np.ndarray) -> float:
    """τ·Σβ / max M_i(β_i) of an assignment."""
    a = np.asarray(problem.iter_fixed_s, dtype=float)[idx]
    b = np.asarray(problem.iter_per_sample_s, dtype=float)[idx]
    t = float((problem.local_iters * (a + b * batch) + fixed_s).max())
    return problem.local_iters * float(np.sum(batch)) / t


class BudgetCpSat:
    """Exact budgeted download (multiple-choice knapsack) in CP-SAT for one round."""

    name = "cpsat_budget"

    def unsupported(self, problem: DownloadBudgetProblem) -> str | None:
        """Why the instance is too large for CP-SAT here, or None."""
        cells = int(problem.deviation.size)
        return f"{cells} device-ratio cells exceed {MAX_CPSAT_CELLS}" if cells > MAX_CPSAT_CELLS else None

    def solve(self, problem: DownloadBudgetProblem, time_limit_s: float = 10.0) -> BudgetSolution:
        """Minimal Σ Dev under Σ bytes ≤ budget (θ = 0 forced where `forced_full`)."""
        from ortools.sat.python import cp_model

        reason = self.unsupported(problem)
        if reason:
            raise ValueError(reason)
        watch = Stopwatch()
        n, g = problem.deviation.shape
        bytes_of = problem.bytes_per_theta()
        dev = np.rint(problem.deviation * DEV_SCALE).astype(np.int64)
        model = cp_model.CpModel()
        x = [[model.new_bool_var(f"x_{i}_{c}") for c in range(g)] for i in range(n)]
        for i in range(n):
            # [Constraint] one ratio per device; no previous model: the full model
            model.add_exactly_one(x[i])
            if problem.forced_full[i]:
                model.add(x[i][0] == 1)
        # [Constraint] downlink budget
        model.add(sum(int(bytes_of[c]) * x[i][c] for i in range(n) for c in range(g))
                  <= int(math.floor(problem.budget_bytes)))
        model.minimize(sum(int(dev[i, c]) * x[i][c] for i in range(n) for c in range(g)))
        solver = cp_model.CpSolver()
        make_deterministic(solver, time_limit_s)
        code = solver.solve(model)
        if code == cp_model.INFEASIBLE:
            raise InfeasibleError(f"the downlink budget of {problem.budget_bytes:.0f} B cannot carry this round",
                                  f"raise down_budget_bytes to at least {math.ceil(problem.min_bytes())}")
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            raise RuntimeError(f"CP-SAT ended with {solver.status_name(code)} after {watch.elapsed():.1f} s")
        pick = np.array([next(c for c in range(g) if solver.value(x[i][c])) for i in range(n)], dtype=np.int64)
        status = Status.OPTIMAL if code == cp_model.OPTIMAL else Status.TIME_LIMIT
        return problem.solution(pick, status, watch.elapsed(), bound=solver.best_objective_bound / DEV_SCALE)
