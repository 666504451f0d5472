"""Exact per-worker ratios on a grid for a fixed topology, and the link local search of the plan-time controller.

For a fixed topology, J(r) = max_i T_i(r_i) / mean_i P_i(r_i) + penalty (P_i: worker i's error drop) (the penalty does not depend on r).
For every threshold T among the T_i(g) values, each worker takes the grid ratio of highest P_i with
T_i <= T; the optimum's own max T_i is one of the thresholds, so the best of these is the exact grid optimum
in O((m G)^2) instead of G^m.
"""
from __future__ import annotations

import numpy as np

from core.p2p_topology import decode_topology, is_connected, maximum_spanning_tree
from solvers.dfgl.cost import error_floor, expected_halo_grid, next_consensus, quality, reach
from solvers.dfgl.problem import DfglProblem


def worker_tables(p: DfglProblem, k: int, adj: np.ndarray, consensus: float, grid: np.ndarray,
                  losses: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """(T (m, G) seconds per worker and grid ratio, P (m, G) error drop, penalty) of topology `adj` in round k,
    from errors `losses` (m,) (default: the surrogate's initial error)."""
    s = p.surrogate
    m, g = p.num_workers, np.asarray(grid, float)
    b = np.where(p.bandwidth_Bps[k] > 0, p.bandwidth_Bps[k], 1.0)
    # (G, m, m) link seconds at every grid ratio: sampled halo of the link + the model, over the rate, + latency
    emb = expected_halo_grid(p, g) * (p.exchanged_layers * p.embedding_bytes)
    link_t = np.where(adj[None] > 0, (emb + p.model_bytes) / b[None] + p.latency_s[k][None], 0.0)
    comp = p.kappa_s[:, None] * p.nodes_train[:, None] * (1.0 + g[None, :] * p.mean_degree[:, None]) * p.gcn_layers
    t = comp + link_t.max(axis=2).T + p.round_overhead_s
    c_next = next_consensus(p, adj, consensus)
    if losses is None:
        losses = np.full(m, s.initial_loss)
    gap = np.asarray(losses, float) - error_floor(p, adj)
    prog = (reach(p, adj) ** s.alpha)[:, None] * quality(p, g[None, :]) * np.exp(-s.consensus_effect * c_next ** s.consensus_power)
    # observed-error drop: the learned drop + the change of the disagreement term (the same for every worker)
    shift = s.consensus_obs * (max(consensus, 0.0) ** s.consensus_power - c_next ** s.consensus_power)
    return t, gap[:, None] * s.step_gain * prog + shift, p.rho * max(0.0, c_next - p.c_max)


def best_ratios(t: np.ndarray, prog: np.ndarray, penalty: float, grid: np.ndarray) -> tuple[float, np.ndarray]:
    """The exact grid optimum of max_i t[i, g_i] / mean_i prog[i, g_i] + penalty: (J, ratios (m,)).

    Every threshold is scored at once: (U thresholds, m, G) arrays; ties go to the first (lowest) threshold."""
    m = t.shape[0]
    thr = np.unique(t)
    ok = t[None, :, :] <= thr[:, None, None]                               # (U, m, G)
    feasible = ok.any(axis=2).all(axis=1)
    # highest progress under the threshold; among equal progress the fastest
    idx = np.argmax(np.where(ok, (prog - 1e-12 * t)[None], -np.inf), axis=2)   # (U, m)
    rows = np.arange(m)[None, :]
    t_sel, p_sel = t[rows, idx], prog[rows, idx]
    mean = p_sel.mean(axis=1)
    j = np.where(mean > 1e-9, t_sel.max(axis=1) / np.where(mean > 1e-9, mean, 1.0), 1e9) + penalty
    j = np.where(feasible, j, np.inf)
    u = int(np.argmin(j))
    return float(j[u]), np.asarray(grid, float)[idx[u]]


def topology_objective(p: DfglProblem, k: int, adj: np.ndarray, consensus: float, grid: np.ndarray,
                       losses: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(J, ratios) of topology `adj` with its exact grid-optimal ratios."""
    return best_ratios(*worker_tables(p, k, adj, consensus, grid, losses), grid)


def link_local_search(p: DfglProblem, k: int, adj0: np.ndarray, consensus: float, grid: np.ndarray,
                      max_moves: int = 20, losses: np.ndarray | None = None, cache: dict | None = None
                      ) -> tuple[float, np.ndarray, np.ndarray, int]:
    """From `adj0`, toggle the single usable link that lowers J most (staying connected), re-solving the
    ratios exactly each time, until no toggle helps: (J, adjacency, ratios, moves made). `cache` (topology
    bytes -> (J, ratios)) may be shared between searches of the same round."""
    allowed = p.allowed(k)
    m = p.num_workers
    cache = {} if cache is None else cache

    def score(a: np.ndarray) -> tuple[float, np.ndarray]:
        key = a.tobytes()
        if key not in cache:
            cache[key] = topology_objective(p, k, a, consensus, grid, losses)
        return cache[key]

    adj = adj0.astype(np.int8).copy()
    j, ratios = score(adj)
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
                cj, cr = score(cand)
                if cj < best[0] - 1e-12:
                    best = (cj, cand, cr)
        if best[1] is None:
            break
        j, adj, ratios = best
        moves += 1
    return j, adj, ratios, moves


def start_topologies(p: DfglProblem, k: int) -> list[np.ndarray]:
    """Rate-ranked starting topologies of round k: the maximum spanning tree and each worker's d fastest links
    for every d (the last is the complete topology over the usable links)."""
    b, ok = p.bandwidth_Bps[k], p.allowed(k)
    return [maximum_spanning_tree(b, ok)] + [decode_topology(b, d, b, ok) for d in range(1, p.num_workers)]


def multi_start_search(p: DfglProblem, k: int, starts: list[np.ndarray], consensus: float, grid: np.ndarray,
                       max_moves: int = 20, losses: np.ndarray | None = None, searched: int = 16
                       ) -> tuple[float, np.ndarray, np.ndarray]:
    """The best link local search from the first start (the actor's) and the `searched` best other starting
    topologies (one shared cache): (J, adjacency, ratios)."""
    cache: dict = {}
    scored = sorted(range(1, len(starts)), key=lambda i: topology_objective(p, k, starts[i], consensus, grid, losses)[0])
    best = (np.inf, None, None)
    for a0 in [starts[0]] + [starts[i] for i in scored[:searched]]:
        j, adj, ratios, _ = link_local_search(p, k, a0, consensus, grid, max_moves, losses, cache)
        if j < best[0] - 1e-12:
            best = (j, adj, ratios)
    return best
