"""Verification-batch selection each cycle: the LP relaxation + rounding, and the exact ILP by CP-SAT.

    max Σ_r x_r · w_r · E[n_r]          (w_r: deadline priority, ≥ 1; E[n_r] expected tokens of r's draft)
    s.t. Σ_r x_r · c_r ≤ T_budget        [balance] verifier seconds ≈ the drafters' cycle
         Σ_r x_r · k_r ≤ K               [capacity] verifier tokens (γ_r + 1) per batch
         x_r ∈ [0, 1]  (LP)  or  {0, 1}  (ILP)
Rounding: take requests by decreasing x_r while both constraints hold (CoSine's "round by largest x_r"), then
fill what still fits by value density. At least one request is always verified (the verifier never stalls on a
budget smaller than one request's cost).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np



@dataclass(frozen=True)
class BatchChoice:
    """Chosen requests (indices), the objective, the LP bound, wall seconds."""

    chosen: tuple[int, ...]
    objective: float
    lp_bound: float
    wall_time_s: float


def _lp(value: np.ndarray, cost: np.ndarray, tokens: np.ndarray, budget: float, cap: float) -> tuple[np.ndarray, float]:
    from scipy.optimize import linprog

    res = linprog(-value, A_ub=np.vstack([cost, tokens]), b_ub=[budget, cap], bounds=[(0.0, 1.0)] * len(value),
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"the batch LP failed ({res.message})")
    return np.clip(res.x, 0.0, 1.0), float(-res.fun)


def select_lp(value: Sequence[float], cost: Sequence[float], tokens: Sequence[float], budget: float,
              cap: float) -> BatchChoice:
    """LP relaxation + rounding by largest x (then by density)."""
    t0 = time.perf_counter()
    v, c, k = (np.asarray(x, dtype=float) for x in (value, cost, tokens))
    if len(v) == 0:
        return BatchChoice((), 0.0, 0.0, 0.0)
    x, bound = _lp(v, c, k, budget, cap)
    order = sorted(range(len(v)), key=lambda r: (-round(float(x[r]), 9), -v[r] / max(c[r], 1e-12), r))
    chosen: list[int] = []
    used_c = used_k = 0.0
    for r in order:
        if used_c + c[r] <= budget + 1e-12 and used_k + k[r] <= cap + 1e-12:
            chosen.append(r)
            used_c += c[r]
            used_k += k[r]
    if not chosen:
        chosen = [int(np.argmax(v / np.maximum(c, 1e-12)))]
    return BatchChoice(tuple(sorted(chosen)), float(v[chosen].sum()), bound, time.perf_counter() - t0)


def select_exact(value: Sequence[float], cost: Sequence[float], tokens: Sequence[float], budget: float,
                 cap: float, time_limit_s: float = 10.0, scale: float = 1e6) -> BatchChoice:
    """The 0/1 ILP by CP-SAT (coefficients scaled to integers; exact up to 1/scale)."""
    from ortools.sat.python import cp_model

    t0 = time.perf_counter()
    v, c, k = (np.asarray(x, dtype=float) for x in (value, cost, tokens))
    m = cp_model.CpModel()
    x = [m.new_bool_var(f"x{r}") for r in range(len(v))]
    # [Constraint] balance: verifier seconds within the budget (rounded up: never looser than the real one)
    m.add(sum(int(np.ceil(c[r] * scale)) * x[r] for r in range(len(v))) <= int(np.floor(budget * scale)))
    # [Constraint] capacity: verifier tokens per batch
    m.add(sum(int(k[r]) * x[r] for r in range(len(v))) <= int(np.floor(cap)))
    m.maximize(sum(int(round(v[r] * scale)) * x[r] for r in range(len(v))))
    s = cp_model.CpSolver()
    s.parameters.max_time_in_seconds = time_limit_s
    s.parameters.num_workers = 1
    s.parameters.random_seed = 0
    st = s.solve(m)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError("CP-SAT found no batch")
    chosen = tuple(r for r in range(len(v)) if s.value(x[r]))
    if not chosen:       # same rule as the LP rounding: at least one request
        r = int(np.argmax(v / np.maximum(c, 1e-12)))
        chosen = (r,)
    return BatchChoice(chosen, float(v[list(chosen)].sum()), float(s.best_objective_bound) / scale,
                       time.perf_counter() - t0)
