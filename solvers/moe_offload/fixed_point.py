"""Inner problem of MoEpic: the best split ratio theta for one layer at every budget (docs/moe-offload.md §4).

Two fixed-point iterations, vectorised over all budgets x = 0..G_i of a layer:
  A (load-bound region, theta <= theta_hide): T_i falls as S = theta * h(C) rises, and with
    c = b / U_e and theta = c / C, S = c * h(C) / C: maximise h(C)/C over C >= ceil(c / theta_hide)
    by Dinkelbach's ratio iteration (lambda rises strictly; exact on a finite set).
  B (overlap region, theta >= theta_hide): the least theta that hides the prefetch,
    theta >= Phi(theta) = (1 - r_i) / h(C(theta)), found by the monotone iteration
    theta <- ceil_Theta(Phi(theta)) from below (Phi is nondecreasing, so it stops at the least one).
Candidates: A's theta and its two grid neighbours, B's theta, and (our addition, so that the plan
space visibly contains both endpoints and no-prefetch layers) theta in {0, 1} and ceil(theta_hide),
each with and without prefetching. The cheapest under T_i wins; ties go to the larger capacity,
then to no prefetching, then to the smaller theta.

`inner_scan` evaluates every theta in the grid and is the exact reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.moe_offload.cost import capacity, time_at_hit, time_cpu_misses, time_split
from solvers.moe_offload.problem import MoeOffloadProblem


@dataclass(frozen=True)
class LayerCurve:
    """L_i(x) for x = 0..G_i and the decisions that achieve it."""

    time_s: np.ndarray
    theta: np.ndarray
    capacity: np.ndarray
    prefetch: np.ndarray
    rounds_ratio: int = 0
    rounds_hide: int = 0
    cpu: np.ndarray | None = None   # bool: the CPU-miss mode wins at this budget
    split: np.ndarray | None = None  # copied fraction alpha where a split layer wins (NaN elsewhere)


def suffix_argmax_ratio(h_env: np.ndarray) -> np.ndarray:
    """best[c_min] = argmax_{C >= c_min} h(C)/C (ties: larger C), for c_min = 1..N (index 0 unused)."""
    n = len(h_env) - 1
    best = np.zeros(n + 2, dtype=np.int64)
    best_c, best_r = n, h_env[n] / n if n > 0 else 0.0
    for c in range(n, 0, -1):
        r = h_env[c] / c
        if r > best_r:
            best_c, best_r = c, r
        best[c] = best_c
    return best


def ratio_fixed_point(h_env: np.ndarray, c_min: np.ndarray) -> tuple[np.ndarray, int]:
    """Dinkelbach: for each c_min, argmax_{c_min <= C <= N} h(C)/C (ties: larger C). Returns (C*, rounds)."""
    n = len(h_env) - 1
    cs = np.arange(n + 1)
    c_min = np.clip(c_min, 1, n)
    cur = c_min.copy()
    lam = h_env[cur] / cur
    valid = cs[None, :] >= c_min[:, None]
    rounds = 0
    active = np.ones(len(c_min), dtype=bool)
    while active.any() and rounds <= n + 1:
        rounds += 1
        score = np.where(valid, h_env[None, :] - lam[:, None] * cs[None, :], -np.inf)
        # argmax with ties to the larger C: search the reversed row
        nxt = n - np.argmax(score[:, ::-1], axis=1)
        lam_new = h_env[nxt] / nxt
        improve = active & (lam_new > lam + 1e-15)
        cur = np.where(improve, nxt, cur)
        lam = np.where(improve, lam_new, lam)
        active = improve
    # the ratio stays the same along ties: move to the largest C with the same ratio (MoEpic's tie rule: larger C)
    return cur, rounds


def _floor_grid(grid: np.ndarray, v: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(grid, v + 1e-12, side="right") - 1
    return np.clip(idx, 0, len(grid) - 1)


def _ceil_grid(grid: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Index of the least grid value >= v; len(grid) where v > max."""
    return np.searchsorted(grid, v - 1e-12, side="left")


def hide_fixed_point(problem: MoeOffloadProblem, layer: int, budgets: np.ndarray, h_env: np.ndarray,
                     grid: np.ndarray) -> tuple[np.ndarray, int]:
    """Least theta >= theta_hide on the grid with theta * h(C(theta)) >= 1 - r_i; NaN where none."""
    window = problem.prefetch_window_s()[layer]
    r = window * problem.bandwidth_bytes_per_s / (problem.k_prefetch * problem.expert_bytes) if problem.k_prefetch else 0.0
    start = max(problem.theta_hide, 1.0 - r)
    idx = np.full(len(budgets), _ceil_grid(grid, np.array([start]))[0])
    done = np.zeros(len(budgets), dtype=bool)
    none = idx >= len(grid)
    rounds = 0
    while not (done | none).all() and rounds <= problem.num_experts + len(grid) + 1:
        rounds += 1
        th = grid[np.minimum(idx, len(grid) - 1)]
        h = h_env[capacity(problem, budgets, th)]
        with np.errstate(divide="ignore"):
            # r >= 1: the window alone hides the prefetch, so every theta qualifies (Phi = 0)
            phi = np.where(h > 0, (1.0 - r) / np.where(h > 0, h, 1.0), np.inf if r < 1.0 else 0.0)
        phi = np.maximum(phi, 0.0)
        nxt = np.where(np.isfinite(phi), _ceil_grid(grid, np.minimum(phi, 2.0)), len(grid))
        nxt = np.maximum(nxt, idx)
        live = ~(done | none)
        done = done | (live & (nxt == idx))
        none = none | (live & (nxt >= len(grid)))
        idx = np.where(live & ~done & ~none, nxt, idx)
    theta = np.where(none, np.nan, grid[np.minimum(idx, len(grid) - 1)])
    return theta, rounds


def _pick(problem: MoeOffloadProblem, layer: int, budgets: np.ndarray, thetas: np.ndarray, prefetch: np.ndarray,
          h_env: np.ndarray, recall: float) -> LayerCurve:
    """Choose per row the cheapest (theta, prefetch) among candidate columns (NaN theta = not a candidate)."""
    th = np.nan_to_num(thetas, nan=0.0)
    cap = capacity(problem, budgets[:, None], th)
    t = time_at_hit(problem, layer, h_env[cap], th, prefetch, recall)
    t = np.where(np.isnan(thetas), np.inf, t)
    scale = max(float(np.nanmin(np.where(np.isfinite(t), t, np.nan))), 1e-12)
    t_key = np.round(t / scale, 12)
    # lexicographic: time, then larger capacity, then no prefetch, then smaller theta
    order = np.lexsort((th, prefetch.astype(np.int8), -cap, t_key), axis=1)
    best = order[:, 0]
    rows = np.arange(len(budgets))
    return LayerCurve(t[rows, best], th[rows, best], cap[rows, best], prefetch[rows, best].astype(bool))


def with_cpu_mode(problem: MoeOffloadProblem, layer: int, budgets: np.ndarray, curve: LayerCurve,
                  allow: bool) -> LayerCurve:
    """Let the CPU-miss mode (static hot set of whole experts + host compute) win where it is cheaper."""
    n = len(budgets)
    if not allow or problem.host_expert_compute_s is None or "static" not in problem.hit_curves:
        return LayerCurve(curve.time_s, curve.theta, curve.capacity, curve.prefetch, curve.rounds_ratio,
                          curve.rounds_hide, np.zeros(n, dtype=bool))
    cap = capacity(problem, budgets, np.ones(n))
    t_cpu = time_cpu_misses(problem, layer, problem.hit_curves["static"][layer][cap])
    win = t_cpu < curve.time_s * (1 - 1e-12)
    return LayerCurve(np.where(win, t_cpu, curve.time_s), np.where(win, 1.0, curve.theta),
                      np.where(win, cap, curve.capacity), np.where(win, False, curve.prefetch),
                      curve.rounds_ratio, curve.rounds_hide, win)


def with_split_mode(problem: MoeOffloadProblem, layer: int, budgets: np.ndarray, curve: LayerCurve, allow: bool,
                    alphas: np.ndarray | None = None) -> LayerCurve:
    """Let a split layer win where it is cheaper: the static hot set of whole experts that fit the budget,
    and every miss's top rows (fraction alpha, on the theta grid) copied and computed on the device while
    the host computes its bottom rows. The best alpha is found by scanning the grid (exact over it)."""
    n = len(budgets)
    nan = np.full(n, np.nan)
    if not allow or problem.host_expert_compute_s is None or "static" not in problem.hit_curves:
        return LayerCurve(curve.time_s, curve.theta, curve.capacity, curve.prefetch, curve.rounds_ratio,
                          curve.rounds_hide, curve.cpu, nan)
    grid = problem.thetas() if alphas is None else alphas
    cap = capacity(problem, budgets, np.ones(n))
    # distinct hit rates are few (one per capacity): scan alpha once per capacity, not per budget
    uniq, inv = np.unique(cap, return_inverse=True)
    t = time_split(problem, layer, problem.hit_curves["static"][layer][uniq][:, None], grid[None, :])
    scale = max(float(t.min()), 1e-12)
    # ties: the smaller alpha (fewer bytes over the link)
    best = np.argmin(np.round(t / scale, 12), axis=1)
    t_best = t[np.arange(len(uniq)), best][inv]
    a_best = grid[best][inv]
    win = t_best < curve.time_s * (1 - 1e-12)
    cpu = curve.cpu if curve.cpu is not None else np.zeros(n, dtype=bool)
    return LayerCurve(np.where(win, t_best, curve.time_s), np.where(win, 1.0, curve.theta),
                      np.where(win, cap, curve.capacity), np.where(win, False, curve.prefetch),
                      curve.rounds_ratio, curve.rounds_hide, np.where(win, False, cpu), np.where(win, a_best, np.nan))


def inner_fixed_point(problem: MoeOffloadProblem, layer: int, policy: str = "lcp",
                      recall: float | None = None, curve: np.ndarray | None = None, allow_cpu: bool = False,
                      allow_split: bool = False) -> LayerCurve:
    """MoEpic's inner solve for every budget x = 0..G_i of one layer (plus the host modes where allowed)."""
    grid = problem.thetas()
    h_env = curve if curve is not None else problem.envelope(policy)[layer]
    p = problem.recall[layer] if recall is None else recall
    x = np.arange(problem.layer_units + 1)
    budgets = x * problem.budget_unit_bytes
    c = budgets / problem.expert_bytes
    # A: ratio fixed point over C >= ceil(c / theta_hide)
    c_min = np.minimum(problem.num_experts, np.maximum(np.ceil(c / problem.theta_hide - 1e-9), 1)).astype(np.int64)
    c_star, rounds_a = ratio_fixed_point(h_env, c_min)
    ia = _floor_grid(grid, c / c_star)
    cand_a = [grid[np.clip(ia + d, 0, len(grid) - 1)] for d in (-1, 0, 1)]
    # B: least hiding theta in the overlap region (prefetching layers only)
    theta_b, rounds_b = hide_fixed_point(problem, layer, budgets, h_env, grid)
    hide_idx = min(_ceil_grid(grid, np.array([problem.theta_hide]))[0], len(grid) - 1)
    n = len(x)
    cols = []
    pref = []
    for th in cand_a:
        cols += [th, th]
        pref += [True, False]
    cols += [theta_b, np.zeros(n), np.zeros(n), np.ones(n), np.ones(n), np.full(n, grid[hide_idx])]
    pref += [True, True, False, True, False, False]
    thetas = np.stack(cols, axis=1)
    prefetch = np.tile(np.array(pref), (n, 1))
    if problem.k_prefetch == 0 or p <= 0:
        thetas = np.where(prefetch, np.nan, thetas)
    out = _pick(problem, layer, budgets, thetas, prefetch, h_env, p)
    out = LayerCurve(out.time_s, out.theta, out.capacity, out.prefetch, rounds_a, rounds_b)
    return with_split_mode(problem, layer, budgets, with_cpu_mode(problem, layer, budgets, out, allow_cpu), allow_split)


def inner_scan(problem: MoeOffloadProblem, layer: int, policy: str = "lcp", recall: float | None = None,
               curve: np.ndarray | None = None, prefetch_options: tuple[bool, ...] = (True, False),
               thetas: np.ndarray | None = None, allow_cpu: bool = False, allow_split: bool = False) -> LayerCurve:
    """Exact inner reference: every theta in the grid, with and without prefetching."""
    grid = problem.thetas() if thetas is None else thetas
    h_env = curve if curve is not None else problem.envelope(policy)[layer]
    p = problem.recall[layer] if recall is None else recall
    x = np.arange(problem.layer_units + 1)
    budgets = x * problem.budget_unit_bytes
    opts = [o for o in prefetch_options if not (o and (problem.k_prefetch == 0 or p <= 0))] or [False]
    cols = np.concatenate([grid for _ in opts])
    pref = np.concatenate([np.full(len(grid), o) for o in opts])
    thetas_m = np.tile(cols, (len(x), 1))
    prefetch_m = np.tile(pref, (len(x), 1))
    out = with_cpu_mode(problem, layer, budgets, _pick(problem, layer, budgets, thetas_m, prefetch_m, h_env, p), allow_cpu)
    return with_split_mode(problem, layer, budgets, out, allow_split)
