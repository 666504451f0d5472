"""CP-SAT references stop on deterministic time, so a stopped search ends at the same point on any machine load."""
from __future__ import annotations

import threading

import numpy as np

from solvers.cpsat_params import WALL_BACKSTOP_MIN_S, deterministic_time_used, make_deterministic


def test_parameters_are_one_worker_a_seed_and_a_deterministic_limit() -> None:
    from ortools.sat.python import cp_model

    s = cp_model.CpSolver()
    make_deterministic(s, 2.5, seed=3)
    p = s.parameters
    assert (p.num_workers, p.random_seed, p.max_deterministic_time) == (1, 3, 2.5)
    assert p.max_time_in_seconds >= WALL_BACKSTOP_MIN_S


def _hard_knapsack(solver_limit: float) -> tuple[int, float, list[int]]:
    from ortools.sat.python import cp_model

    rng = np.random.default_rng(5)
    n = 400
    w = rng.integers(1_000, 100_000, n)
    v = w + rng.integers(-500, 500, n)          # values close to weights: a hard instance
    m = cp_model.CpModel()
    x = [m.new_bool_var(f"x{i}") for i in range(n)]
    m.add(sum(int(a) * b for a, b in zip(w, x)) <= int(w.sum() // 2))
    m.maximize(sum(int(a) * b for a, b in zip(v, x)))
    s = cp_model.CpSolver()
    make_deterministic(s, solver_limit)
    status = s.solve(m)
    return int(status), deterministic_time_used(s), [int(s.value(b)) for b in x]


def test_a_stopped_search_gives_the_same_answer_with_and_without_a_busy_machine() -> None:
    from ortools.sat.python import cp_model

    quiet = _hard_knapsack(0.01)                 # stopped before optimality (0.0125 needed)
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            sum(i * i for i in range(10_000))

    hog = threading.Thread(target=burn, daemon=True)
    hog.start()
    try:
        busy = _hard_knapsack(0.01)
    finally:
        stop.set()
        hog.join()
    assert quiet[0] == busy[0] == int(cp_model.FEASIBLE) and quiet[2] == busy[2]
    assert 0 < quiet[1] <= 0.01 + 1e-3
