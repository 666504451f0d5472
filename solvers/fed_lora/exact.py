"""Exact references for fed-lora (docs/fed-lora.md, "Algorithm"), over every fitting (d, q) of every device — not the
greedy's frontiers — so they check the frontier reduction as well as the peeling.

A device with at least one fitting option must take one (as in the greedy); a device with none sits out.

(a) `Enumeration`: every combination (product of option counts ≤ 200 000), R computed directly,
    coverage checked directly.
(b) `CpSat`: for a threshold T*, booleans x_{i,c} over the options with T_{i,c} ≤ T*, Σ_c x_{i,c} = 1,
    coverage Σ_i Σ_{c: d_c ≥ k} w_i·x_{i,c} ≥ κ, maximise Σ w_i·u_c·x_{i,c} (integers, 10⁹ scale).
    The optimum is max over thresholds of U(T*)/T*; thresholds are tried in decreasing order of the
    coverage-free bound U₀(T*)/T* and the search stops once the bound cannot beat the best R
    (branch and bound, so usually a handful of CP-SAT solves). n ≤ 50.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from solvers.common import InfeasibleError, Status, Stopwatch, TraceEvent
from solvers.cpsat_params import deterministic_time_used, make_deterministic
from solvers.fed_lora.cost import evaluate, grid
from solvers.fed_lora.problem import FedLoraProblem, FedLoraSolution

MAX_COMBINATIONS = 200_000
MAX_ENUMERATE_DEVICES = 12
MAX_CPSAT_DEVICES = 50
SCALE = 10**9


def _options(problem: FedLoraProblem) -> list[list[tuple[int, int, float, float]]]:
    """Per device, every fitting (d, q, T, u)."""
    fits, T, u, _ = grid(problem)
    out = []
    for i in range(problem.num_devices):
        ds, qs = np.nonzero(fits[i])
        out.append([(int(d), int(q), float(T[i, d, q]), float(u[d, q])) for d, q in zip(ds, qs)])
    return out


def _needs(problem: FedLoraProblem) -> list[int]:
    if problem.coverage_kappa <= 0 or problem.coverage_blocks <= 0:
        return []
    return list(range(1, problem.coverage_blocks + 1))


def _finish(problem: FedLoraProblem, depth: np.ndarray, quant: np.ndarray, status: Status, watch: Stopwatch,
            name: str, trace: list[TraceEvent], bound: float | None, params: dict) -> FedLoraSolution:
    m = evaluate(problem, depth, quant)
    return FedLoraSolution(status=status, objective=m.progress_rate, metrics=m, bound=bound,
                           wall_time_s=watch.elapsed(), trace=tuple(trace), depth=depth, quant_blocks=quant,
                           params={"method": name, **params})


class Enumeration:
    """Brute force over every combination of fitting options (tiny instances)."""

    name = "enumeration"

    def unsupported(self, problem: FedLoraProblem) -> str | None:
        """Too many combinations to enumerate?"""
        if problem.num_devices > MAX_ENUMERATE_DEVICES:
            return f"{problem.num_devices} devices exceed the enumeration limit of {MAX_ENUMERATE_DEVICES}"
        total = 1
        for o in _options(problem):
            total *= max(1, len(o))
            if total > MAX_COMBINATIONS:
                return f"more than {MAX_COMBINATIONS} combinations (the enumeration limit)"
        return None

    def solve(self, problem: FedLoraProblem, time_limit_s: float = 60.0) -> FedLoraSolution:
        """The best R over every combination; ties: larger Σ d, then smaller Σ q."""
        watch = Stopwatch()
        reason = self.unsupported(problem)
        if reason:
            raise ValueError(reason)
        opts = _options(problem)
        n = problem.num_devices
        if all(not o for o in opts):
            raise InfeasibleError("no device fits any LoRA depth", "give devices more memory")
        w = np.asarray(problem.weights, dtype=float)
        table = [o if o else [(0, 0, 0.0, 0.0)] for o in opts]
        combos = np.array(list(itertools.product(*[range(len(t)) for t in table])), dtype=int).reshape(-1, n)
        cols = [np.asarray(table[i], dtype=float)[combos[:, i]] for i in range(n)]   # (C, 4) per device
        D, Q, T, U = (np.stack([c[:, k] for c in cols], axis=1) for k in range(4))
        R = (U * w).sum(axis=1) / T.max(axis=1)
        ok = np.ones(len(R), dtype=bool)
        for need in _needs(problem):
            ok &= ((D >= need) * w).sum(axis=1) >= problem.coverage_kappa * (1 - 1e-12)
        if not ok.any():
            raise InfeasibleError("no combination meets the coverage target", "lower the coverage target")
        key = np.lexsort((Q.sum(axis=1), -D.sum(axis=1), -np.where(ok, R, -np.inf)))
        best = int(key[0])
        return _finish(problem, D[best].astype(int), Q[best].astype(int), Status.OPTIMAL, watch, self.name, [],
                       float(R[best]), {"combinations": int(len(R))})


class CpSat:
    """CP-SAT per round-time threshold with bound pruning (n ≤ 50)."""

    name = "cp-sat"

    def unsupported(self, problem: FedLoraProblem) -> str | None:
        """More than 50 devices?"""
        if problem.num_devices > MAX_CPSAT_DEVICES:
            return f"{problem.num_devices} devices exceed the CP-SAT reference limit of {MAX_CPSAT_DEVICES}"
        return None

    def solve(self, problem: FedLoraProblem, time_limit_s: float = 60.0) -> FedLoraSolution:
        """Exact R (OPTIMAL), or the best found with `bound` when the time limit stops the search."""
        from ortools.sat.python import cp_model

        watch = Stopwatch()
        reason = self.unsupported(problem)
        if reason:
            raise ValueError(reason)
        opts = _options(problem)
        n = problem.num_devices
        part = [i for i in range(n) if opts[i]]
        if not part:
            raise InfeasibleError("no device fits any LoRA depth", "give devices more memory")
        w = np.asarray(problem.weights, dtype=float)
        needs = _needs(problem)
        # Every threshold at which all participants have an option; bound U0/T* without coverage.
        floor_t = max(min(o[2] for o in opts[i]) for i in part)
        cands = sorted({o[2] for i in part for o in opts[i] if o[2] >= floor_t})
        bounds = []
        for t in cands:
            u0 = sum(w[i] * max(o[3] for o in opts[i] if o[2] <= t) for i in part)
            bounds.append((u0 / t, t))
        bounds.sort(key=lambda b: (-b[0], b[1]))
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        trace: list[TraceEvent] = []
        status = Status.OPTIMAL
        solves = 0
        spent = 0.0
        open_bound = None
        for k, (ub, t_star) in enumerate(bounds):
            if best is not None and ub <= best[0] * (1 + 1e-12):
                break
            remaining = time_limit_s - spent      # deterministic seconds, so the result does not depend on load
            if remaining <= 0:
                status, open_bound = Status.TIME_LIMIT, ub
                break
            model = cp_model.CpModel()
            x: dict[tuple[int, int], object] = {}
            for i in part:
                choices = [c for c, o in enumerate(opts[i]) if o[2] <= t_star]
                for c in choices:
                    x[i, c] = model.new_bool_var(f"x_{i}_{c}")
                # [Constraint] one option per participating device
                model.add_exactly_one(x[i, c] for c in choices)
            for need in needs:
                # [Constraint] coverage of the block needing depth `need`
                model.add(sum(int(round(w[i] * SCALE)) * v for (i, c), v in x.items() if opts[i][c][0] >= need)
                          >= int(math.ceil(problem.coverage_kappa * SCALE)) - n)
            model.maximize(sum(int(round(w[i] * opts[i][c][3] * SCALE)) * v for (i, c), v in x.items()))
            solver = cp_model.CpSolver()
            make_deterministic(solver, max(0.1, remaining))
            res = solver.solve(model)
            spent += deterministic_time_used(solver)
            solves += 1
            if res not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                if res == cp_model.UNKNOWN:
                    status, open_bound = Status.TIME_LIMIT, ub
                continue
            if res == cp_model.FEASIBLE:
                status = Status.TIME_LIMIT
            depth = np.zeros(n, dtype=int)
            quant = np.zeros(n, dtype=int)
            for (i, c), v in x.items():
                if solver.value(v):
                    depth[i], quant[i] = opts[i][c][0], opts[i][c][1]
            r = evaluate(problem, depth, quant).progress_rate
            trace.append(TraceEvent("threshold", k, {"T_star_s": t_star, "bound": ub, "R": r}))
            if best is None or r > best[0] * (1 + 1e-12) or (
                    r >= best[0] * (1 - 1e-12) and (depth.sum(), -quant.sum()) > (best[1].sum(), -best[2].sum())):
                best = (r, depth, quant)
        if best is None:
            raise InfeasibleError("no assignment meets the coverage target", "lower the coverage target")
        bound = best[0] if status == Status.OPTIMAL else max(best[0], open_bound or best[0])
        return _finish(problem, best[1], best[2], status, watch, self.name, trace, bound,
                       {"cp_sat_solves": solves, "thresholds": len(bounds)})
