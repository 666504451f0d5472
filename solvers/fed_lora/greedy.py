"""FedQuad's planner (docs/fed-lora.md, "Algorithm"): per-device efficient (depth, quantised blocks) frontiers, straggler peeling,
then coverage repair.

Step 1 — frontier: for each depth d, the fewest quantised blocks that fit memory, q_min(d) (more
quantisation at the same depth only adds time and error); keep the Pareto front on (T ↑, u ↓),
sorted by round time. A device with an empty front sits out.
Step 2 — peeling: every device starts at its highest-utility entry; repeatedly record
R = Σ w·u / max T, then move the slowest device one entry down its front; stop when the slowest is at
its first entry. The best recorded state wins (ties: larger Σ d, then smaller Σ q). Without coverage
this is exact: for every threshold T* the peel passes through the state where each device holds its
best entry under T*, and the optimum's round time is one of those thresholds.
Step 3 — coverage repair (κ > 0): while a block in the top D_cov lacks data weight κ, raise the device
whose move to a deep-enough entry raises T_round least (then the smallest ΔT_i, then the lowest index).

Complexity O(n·L·log n); 10 000 devices × 12 blocks solve well under a second.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.common import InfeasibleError, Status, Stopwatch, TraceEvent
from solvers.fed_lora.cost import evaluate, grid
from solvers.fed_lora.problem import FedLoraProblem, FedLoraSolution

REL_TIE = 1e-12


@dataclass(frozen=True)
class Frontier:
    """Per device, its efficient entries sorted by round time, padded to L entries: `depth`, `quant`,
    `time`, `util` are (n, L) arrays whose first `count[i]` columns are device i's front (ascending time,
    strictly ascending utility); a device with count 0 cannot participate."""

    depth: np.ndarray
    quant: np.ndarray
    time: np.ndarray
    util: np.ndarray
    count: np.ndarray

    def entries(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Device i's (depth, quant, time, util) arrays."""
        k = int(self.count[i])
        return self.depth[i, :k], self.quant[i, :k], self.time[i, :k], self.util[i, :k]


def frontiers(problem: FedLoraProblem, allow_quant: bool = True) -> Frontier:
    """Step 1: q_min per depth, then the Pareto front on (T ascending, u strictly increasing); vectorised."""
    fits, T, u, _ = grid(problem)
    L = problem.num_blocks
    if not allow_quant:
        fits = fits & (np.arange(L + 1) == 0)[None, None, :]
    fits = fits[:, 1:, :]                                        # depths 1..L
    any_fit = fits.any(axis=2)                                   # (n, L)
    qmin = np.argmax(fits, axis=2)                               # first fitting q per depth
    n = problem.num_devices
    rows = np.arange(n)[:, None]
    ds = np.arange(1, L + 1)[None, :]
    Tq = np.where(any_fit, T[rows, ds, qmin], np.inf)            # (n, L)
    uq = np.where(any_fit, u[ds, qmin], -np.inf)
    # Order each row by time, then by higher utility (stable sorts: utility first, then time).
    by_u = np.argsort(-uq, axis=1, kind="stable")
    order = np.take_along_axis(by_u, np.argsort(np.take_along_axis(Tq, by_u, axis=1), axis=1, kind="stable"), axis=1)
    t_s = np.take_along_axis(Tq, order, axis=1)
    u_s = np.take_along_axis(uq, order, axis=1)
    prev_best = np.concatenate([np.full((n, 1), -np.inf), np.maximum.accumulate(u_s, axis=1)[:, :-1]], axis=1)
    keep = np.isfinite(t_s) & (u_s > prev_best + 1e-12)
    count = keep.sum(axis=1)
    # Compact the kept entries to the left of each row (stable: keeps their time order).
    pack = np.argsort(~keep, axis=1, kind="stable")
    sel = np.take_along_axis(order, pack, axis=1)
    valid = np.arange(L)[None, :] < count[:, None]
    depth = np.where(valid, sel + 1, 0)
    quant = np.where(valid, np.take_along_axis(qmin, sel, axis=1), 0)
    time = np.where(valid, np.take_along_axis(Tq, sel, axis=1), np.inf)
    util = np.where(valid, np.take_along_axis(uq, sel, axis=1), -np.inf)
    return Frontier(depth.astype(int), quant.astype(int), time, util, count.astype(int))


def peel(problem: FedLoraProblem, front: Frontier) -> tuple[np.ndarray, int, list[TraceEvent]]:
    """Step 2, vectorised: entry index per device (−1 = sits out) of the best state, the moves made, a trace.

    Moving the slowest device one entry down, again and again, visits the front entries in decreasing
    round time (ties: lower device index first, as a heap on (−T, i) would), and stops at the first
    entry that is a device's fastest. After m moves the round time is the (m+1)-th entry's time and the
    utility changes by the moved entries' differences, so every visited state's R is a cumulative sum.
    """
    n = problem.num_devices
    w = np.asarray(problem.weights, dtype=float)
    cnt = front.count
    active = cnt > 0
    if not active.any():
        return np.full(n, -1, dtype=int), 0, []
    dev, k = np.nonzero(np.arange(front.time.shape[1])[None, :] < cnt[:, None])
    t = front.time[dev, k]
    order = np.lexsort((dev, -t))
    dev, k, t = dev[order], k[order], t[order]
    stop = int(np.argmax(k == 0))                 # moves possible before the first fastest entry leads
    top = cnt[active] - 1
    ia = np.flatnonzero(active)
    s_u0 = float(np.dot(w[ia], front.util[ia, top]))
    s_d0 = int(front.depth[ia, top].sum())
    s_q0 = int(front.quant[ia, top].sum())
    md, mk = dev[:stop], k[:stop]
    du = w[md] * (front.util[md, mk - 1] - front.util[md, mk])
    dd = front.depth[md, mk - 1] - front.depth[md, mk]
    dq = front.quant[md, mk - 1] - front.quant[md, mk]
    s_u = s_u0 + np.concatenate([[0.0], np.cumsum(du)])
    s_d = s_d0 + np.concatenate([[0], np.cumsum(dd)])
    s_q = s_q0 + np.concatenate([[0], np.cumsum(dq)])
    t_round = t[: stop + 1]                        # after m moves the slowest is entry m
    r = s_u / t_round
    near = r >= r.max() * (1 - REL_TIE)
    cand = np.flatnonzero(near)
    best_m = int(cand[np.lexsort((cand, s_q[cand], -s_d[cand]))[0]])
    pos = cnt - 1
    moved = np.bincount(md[:best_m], minlength=n)
    pos = np.where(active, pos - moved, -1)
    step = max(1, stop // 100)
    trace = [TraceEvent("peel", int(m), {"R": float(r[m]), "T_round_s": float(t_round[m])})
             for m in range(0, stop + 1, step)]
    trace.append(TraceEvent("peel-best", best_m, {"R": float(r[best_m]), "T_round_s": float(t_round[best_m])}))
    return pos.astype(int), stop, trace


def repair_coverage(problem: FedLoraProblem, front: Frontier, pos: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], int]:
    """Step 3: raise devices until each of the top D_cov blocks has data weight ≥ κ; returns the entry
    index per device, the blocks that could not be covered (0-based), and the number of raises.
    The entry a raised device takes is its fastest one deep enough (later entries only add time)."""
    if problem.coverage_kappa <= 0 or problem.coverage_blocks <= 0:
        return pos, (), 0
    L = problem.num_blocks
    w = np.asarray(problem.weights, dtype=float)
    pos = pos.copy()
    n = problem.num_devices
    raises = 0

    def depth_of(i: int) -> int:
        return int(front.depth[i][pos[i]]) if pos[i] >= 0 else 0

    def t_of(i: int, k: int) -> float:
        return float(front.time[i][k])

    uncovered: list[int] = []
    # Blocks from the output down: block l (0-based) needs depth ≥ L − l.
    for need in range(1, problem.coverage_blocks + 1):
        block = L - need
        while True:
            depths = np.array([depth_of(i) for i in range(n)])
            if w[depths >= need].sum() >= problem.coverage_kappa * (1 - 1e-12):
                break
            t_round = max((t_of(i, pos[i]) for i in range(n) if pos[i] >= 0), default=0.0)
            best = None
            for i in range(n):
                if depths[i] >= need or pos[i] < 0:
                    continue
                deep = np.flatnonzero(front.depth[i, : front.count[i]] >= need)
                if deep.size == 0:
                    continue
                k = int(deep[np.argmin(front.time[i][deep])])
                new_t = t_of(i, k)
                key = (max(t_round, new_t) - t_round, new_t - t_of(i, pos[i]), i)
                if best is None or key < best[0]:
                    best = (key, i, k)
            if best is None:
                uncovered.append(block)
                break
            pos[best[1]] = best[2]
            raises += 1
        if uncovered:
            break
    return pos, tuple(uncovered), raises


def max_coverage(problem: FedLoraProblem, front: Frontier, need: int) -> float:
    """Largest data weight that can train a block needing depth `need` (every capable device raised)."""
    w = np.asarray(problem.weights, dtype=float)
    return float(w[front.depth.max(axis=1, initial=0) >= need].sum())


def assignment(front: Frontier, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(depth, quant) arrays from entry indices (−1 → depth 0)."""
    d = np.array([int(front.depth[i][p]) if p >= 0 else 0 for i, p in enumerate(pos)], dtype=int)
    q = np.array([int(front.quant[i][p]) if p >= 0 else 0 for i, p in enumerate(pos)], dtype=int)
    return d, q


def infeasible_memory(problem: FedLoraProblem) -> InfeasibleError:
    """The error when no device can hold even the shallowest allowed depth."""
    need = float(np.min(np.asarray(problem.memory_table_bytes, dtype=float)[problem.d_min, : problem.d_min + 1]))
    have = float(np.max(problem.usable_memory_bytes())) if problem.num_devices else 0.0
    gib = 2.0**30
    return InfeasibleError(
        f"no device can train even depth {problem.d_min}: it needs {need / gib:.3f} GiB with every trainable block "
        f"quantised, the best device offers {have / gib:.3f} GiB after the {problem.memory_margin:.0%} margin",
        f"give devices at least {need / (1 - problem.memory_margin) / gib:.3f} GiB, or lower --batch-size / --seq-len")


def solve(problem: FedLoraProblem, allow_quant: bool = True, coverage_repair: bool = True) -> FedLoraSolution:
    """FedQuad: frontier, peel, coverage repair; raises InfeasibleError when nobody can participate or
    coverage κ cannot be reached even with every capable device at full depth."""
    watch = Stopwatch()
    problem.check()
    front = frontiers(problem, allow_quant)
    if not front.count.any():
        raise infeasible_memory(problem)
    if problem.coverage_kappa > 0:
        for need in range(1, problem.coverage_blocks + 1):
            cap = max_coverage(problem, front, need)
            if cap < problem.coverage_kappa * (1 - 1e-12):
                raise InfeasibleError(
                    f"block {problem.num_blocks - need} can be trained by devices holding only {cap:.1%} of the data, "
                    f"below the coverage target {problem.coverage_kappa:.1%}",
                    f"lower the coverage target to at most {cap:.3f} or cover fewer top blocks")
    pos, moves, trace = peel(problem, front)
    raises = 0
    uncovered: tuple[int, ...] = ()
    if coverage_repair:
        pos, uncovered, raises = repair_coverage(problem, front, pos)
    depth, quant = assignment(front, pos)
    metrics = evaluate(problem, depth, quant)
    exact = problem.coverage_kappa <= 0 or problem.coverage_blocks <= 0
    trace = trace + [TraceEvent("repair", raises, {"raises": raises, "uncovered": list(uncovered)})]
    return FedLoraSolution(
        status=Status.OPTIMAL if exact else Status.FEASIBLE, objective=metrics.progress_rate, metrics=metrics,
        wall_time_s=watch.elapsed(), trace=tuple(trace), depth=depth, quant_blocks=quant, uncovered_blocks=uncovered,
        params={"method": "FedQuad greedy (frontier + straggler peeling + coverage repair)", "peel_moves": moves,
                "coverage_raises": raises, "allow_quant": allow_quant})
