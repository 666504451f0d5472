"""Exact per-worker ratios on a grid for a fixed topology, and the link local search of the plan-time controller.

For a fixed topology, J(r) = max_i T_i(r_i) / mean_i P_i(r_i) + penalty (the penalty does not depend on r).
For every threshold T among the T_i(g) values, each worker takes the grid ratio of highest P_i with
T_i <= T; the optimum's own max T_i is one of the thresholds, so the best of these is the exact grid optimum
in O((m G)^2) instead of G^m.
"""
from __future__ import annotations

import numpy as np

from core.p2p_topology import is_connected, metropolis_weights, second_eigenvalue
from solvers.dfgl.cost import compute_s, link_bytes, reach
from solvers.dfgl.problem import DfglProblem


def worker_tables(p: DfglProblem, k: int, adj: np.ndarray, consensus: float, grid: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """(T (m, G) seconds per worker and grid ratio, P (m, G) progress, penalty) of topology `adj` in round k."""
    s = p.surrogate
    m, g = p.num_workers, np.asarray(grid, float)
    b = np.where(p.bandwidth_Bps[k] > 0, p.bandwidth_Bps[k], 1.0)
    t = np.zeros((m, g.size))
    for gi, r in enumerate(g):
        rr = np.full(m, r)
        comm = np.where(adj > 0, link_bytes(p, adj, rr) / b + p.latency_s[k], 0.0).max(axis=1)
        t[:, gi] = compute_s(p, rr) + comm
    quality = 1.0 / (1.0 + s.nu * (1.0 / g[None, :] - 1.0) / np.maximum(p.mean_degree, 1e-9)[:, None])
    prog = (reach(p, adj) ** s.alpha)[:, None] * quality / (1.0 + consensus / s.consensus_scale)
    c_next = second_eigenvalue(metropolis_weights(adj)) * consensus + s.drift_per_round
    return t, prog, p.rho * max(0.0, c_next - p.c_max)


def best_ratios(t: np.ndarray, prog: np.ndarray, penalty: float, grid: np.ndarray) -> tuple[float, np.ndarray]:
    """The exact grid optimum of max_i t[i, g_i] / mean_i prog[i, g_i] + penalty: (J, ratios (m,))."""
    m = t.shape[0]
    best_j, best_idx = np.inf, None
    for thr in np.unique(t):
        ok = t <= thr
        if not ok.any(axis=1).all():
            continue
        # highest progress under the threshold; among equal progress the fastest
        score = np.where(ok, prog, -np.inf)
        idx = np.argmax(score - 1e-12 * t, axis=1)
        j = t[np.arange(m), idx].max() / max(prog[np.arange(m), idx].mean(), 1e-12) + penalty
        if j < best_j:
            best_j, best_idx = j, idx
    return float(best_j), np.asarray(grid, float)[best_idx]


def topology_objective(p: DfglProblem, k: int, adj: np.ndarray, consensus: float, grid: np.ndarray
                       ) -> tuple[float, np.ndarray]:
    """(J, ratios) of topology `adj` with its exact grid-optimal ratios."""
    return best_ratios(*worker_tables(p, k, adj, consensus, grid), grid)


def link_local_search(p: DfglProblem, k: int, adj0: np.ndarray, consensus: float, grid: np.ndarray,
                      max_moves: int = 20) -> tuple[float, np.ndarray, np.ndarray, int]:
    """From `adj0`, toggle the single usable link that lowers J most (staying connected), re-solving the
    ratios exactly each time, until no toggle helps: (J, adjacency, ratios, moves made)."""
    allowed = p.allowed(k)
    m = p.num_workers
    adj = adj0.copy()
    j, ratios = topology_objective(p, k, adj, consensus, grid)
    moves = 0
    for _ in range(max_moves):
        best = (j, None, None)
        for a in range(m):
            for b in range(a + 1, m):
                if not allowed[a, b]:
                    continue
                cand = adj.copy()
                cand[a, b] = cand[b, a] = 1 - cand[a, b]
                if not is_connected(cand):
                    continue
                cj, cr = topology_objective(p, k, cand, consensus, grid)
                if cj < best[0] - 1e-12:
                    best = (cj, cand, cr)
        if best[1] is None:
            break
        j, adj, ratios = best
        moves += 1
    return j, adj, ratios, moves
