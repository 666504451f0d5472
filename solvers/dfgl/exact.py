"""The one-round oracle for small instances (m <= 5): every connected topology over the usable links x every
combination of per-worker ratios on a grid, scored by the same round objective the controllers minimise."""
from __future__ import annotations

import itertools

import numpy as np

from core.p2p_topology import is_connected
from solvers.dfgl.problem import DfglProblem
from solvers.dfgl.ratio_search import topology_objective

MAX_WORKERS = 5


def connected_topologies(allowed: np.ndarray) -> list[np.ndarray]:
    """Every connected symmetric 0/1 adjacency using only `allowed` links (m <= MAX_WORKERS)."""
    m = allowed.shape[0]
    if m > MAX_WORKERS:
        raise ValueError(f"the oracle enumerates topologies of at most {MAX_WORKERS} workers, not {m}")
    links = [(i, j) for i in range(m) for j in range(i + 1, m) if allowed[i, j]]
    out = []
    for mask in itertools.product((0, 1), repeat=len(links)):
        adj = np.zeros((m, m), dtype=np.int8)
        for on, (i, j) in zip(mask, links):
            if on:
                adj[i, j] = adj[j, i] = 1
        if is_connected(adj):
            out.append(adj)
    return out


def one_round_oracle(p: DfglProblem, k: int, consensus: float, grid: np.ndarray,
                     losses: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """min over every connected topology and every ratio-grid combination of J in round k, starting from
    consensus `consensus`: (J*, adjacency, ratios). Exact on the grid (the ratios of each topology by the
    threshold enumeration of `ratio_search.best_ratios`, itself checked against brute force in the tests)."""
    best = (np.inf, None, None)
    for adj in connected_topologies(p.allowed(k)):
        j, ratios = topology_objective(p, k, adj, consensus, grid, losses)
        if j < best[0]:
            best = (j, adj, ratios)
    return best
