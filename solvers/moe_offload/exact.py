"""Exact references for the moe-offload problem (docs/moe-offload.md §7).

(a) `solve_scan_merge`: the exact inner scan over every theta (and prefetch on/off) for every budget,
    then the full min-plus merge: exact over the discretised problem.
(b) `solve_enumerate`: every (x_i, theta_i, prefetch_i) tuple with sum x_i <= G, for tiny instances.
(c) `solve_cpsat`: OR-tools CP-SAT with integer x_i and an element constraint on each layer's
    flattened (x, theta, prefetch) cost table, costs scaled to integer nanoseconds.
"""
from __future__ import annotations

import itertools

import numpy as np

from solvers.common import Status, Stopwatch
from solvers.moe_offload.cost import capacity, evaluate, time_at_hit
from solvers.moe_offload.moepic import MoEpicConfig, solve
from solvers.moe_offload.problem import MoeOffloadProblem, MoeOffloadSolution


def solve_scan_merge(problem: MoeOffloadProblem, policy: str = "lcp") -> MoeOffloadSolution:
    """Exact inner scan + divide-and-conquer merge."""
    return solve(problem, MoEpicConfig(inner="scan", policy=policy))


def cost_table(problem: MoeOffloadProblem, layer: int, policy: str = "lcp") -> tuple[np.ndarray, np.ndarray]:
    """T_i for every (x, theta index, prefetch): shape (G_i+1, |Theta|, 2); and the capacities."""
    grid = problem.thetas()
    x = np.arange(problem.layer_units + 1)
    b = x[:, None, None] * problem.budget_unit_bytes
    th = grid[None, :, None]
    pf = np.array([False, True])[None, None, :]
    cap = capacity(problem, b, th)
    cap = np.broadcast_to(cap, (len(x), len(grid), 2))
    h = problem.envelope(policy)[layer][cap]
    t = time_at_hit(problem, layer, h, th, pf)
    if problem.k_prefetch == 0 or problem.recall[layer] <= 0:
        t[:, :, 1] = np.inf
    return t, cap


def _solution(problem: MoeOffloadProblem, picks: list[tuple[int, int, int]], policy: str, status: Status,
              watch: Stopwatch) -> MoeOffloadSolution:
    grid = problem.thetas()
    units = np.array([p[0] for p in picks], dtype=np.int64)
    thetas = np.array([grid[p[1]] for p in picks])
    caps = np.array([int(capacity(problem, p[0] * problem.budget_unit_bytes, grid[p[1]])) for p in picks])
    pref = np.array([bool(p[2]) for p in picks])
    m = evaluate(problem, thetas, caps, pref, policy)
    return MoeOffloadSolution(status=status, budget_units=units, thetas=thetas, capacities=caps, prefetch=pref, policy=policy,
                              objective=m.tpot_s, metrics=m, wall_time_s=watch.elapsed())


def solve_enumerate(problem: MoeOffloadProblem, policy: str = "lcp", max_states: int = 5_000_000) -> MoeOffloadSolution:
    """Brute force over every tuple; refuses instances with more than `max_states` tuples."""
    watch = Stopwatch()
    tables = [cost_table(problem, i, policy)[0] for i in range(problem.num_layers)]
    per_layer = [t.size for t in tables]
    if np.prod(np.array(per_layer, dtype=float)) > max_states:
        raise ValueError("instance too large to enumerate")
    G = problem.total_units
    best, best_pick = np.inf, None
    options = [list(itertools.product(range(t.shape[0]), range(t.shape[1]), range(2))) for t in tables]
    for pick in itertools.product(*options):
        if sum(p[0] for p in pick) > G:
            continue
        v = sum(float(tables[i][p]) for i, p in enumerate(pick))
        if v < best - 1e-15:
            best, best_pick = v, pick
    assert best_pick is not None
    return _solution(problem, list(best_pick), policy, Status.OPTIMAL, watch)


def solve_cpsat(problem: MoeOffloadProblem, policy: str = "lcp", time_limit_s: float = 30.0,
                workers: int = 2) -> MoeOffloadSolution:
    """CP-SAT cross-check over the same discretised problem (integer nanoseconds)."""
    from ortools.sat.python import cp_model

    watch = Stopwatch()
    model = cp_model.CpModel()
    G = problem.total_units
    xs, costs, keys = [], [], []
    for i in range(problem.num_layers):
        t, _cap = cost_table(problem, i, policy)
        flat = t.reshape(-1)
        finite = np.isfinite(flat)
        big = int(np.nanmax(np.where(finite, flat, np.nan)) * 1e9) * 4 + 1
        table = [int(round(v * 1e9)) if f else big for v, f in zip(flat, finite)]
        x_of = [int(j // (t.shape[1] * 2)) for j in range(flat.size)]
        # [Variable] flattened choice index of layer i
        v = model.new_int_var(0, flat.size - 1, f"choice_{i}")
        c = model.new_int_var(0, max(table), f"cost_{i}")
        x = model.new_int_var(0, t.shape[0] - 1, f"units_{i}")
        # [Constraint] cost and units follow the choice
        model.add_element(v, table, c)
        model.add_element(v, x_of, x)
        xs.append(x)
        costs.append(c)
        keys.append((v, t.shape))
    # [Constraint] the layers share the budget
    model.add(sum(xs) <= G)
    model.minimize(sum(costs))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = 0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError(f"CP-SAT returned {solver.status_name(status)}")
    picks = []
    for v, shape in keys:
        j = int(solver.value(v))
        picks.append((j // (shape[1] * 2), (j // 2) % shape[1], j % 2))
    st = Status.OPTIMAL if status == cp_model.OPTIMAL else Status.TIME_LIMIT
    return _solution(problem, picks, policy, st, watch)
