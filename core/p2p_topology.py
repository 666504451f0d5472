"""Peer-to-peer topology math shared by the dfgl solvers and the dfgl runtime (numpy only, no torch).

The runtime runs the controller online and must decode the same topology the planner's simulator decodes,
without importing the solver stack; both import these functions from this leaf.

    scores = np.array([[0, 3, 1], [3, 0, 2], [1, 2, 0]], float)
    adj = decode_topology(scores, degree=1, weights=scores)    # top-1 per worker, symmetrised, MST-repaired
    w = metropolis_weights(adj)                                # doubly stochastic gossip matrix
"""
from __future__ import annotations

import numpy as np


def is_connected(adj: np.ndarray) -> bool:
    """Whether the undirected graph with 0/1 adjacency `adj` (m, m) is connected."""
    m = adj.shape[0]
    seen = np.zeros(m, dtype=bool)
    seen[0] = True
    frontier = [0]
    while frontier:
        i = frontier.pop()
        for j in np.flatnonzero(adj[i]):
            if not seen[j]:
                seen[j] = True
                frontier.append(int(j))
    return bool(seen.all())


def components(adj: np.ndarray) -> np.ndarray:
    """Connected-component label of every worker (m,), labels 0.. in order of first appearance."""
    m = adj.shape[0]
    label = -np.ones(m, dtype=np.int64)
    c = 0
    for s in range(m):
        if label[s] >= 0:
            continue
        label[s] = c
        stack = [s]
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(adj[i]):
                if label[j] < 0:
                    label[j] = c
                    stack.append(int(j))
        c += 1
    return label


def maximum_spanning_tree(weights: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Kruskal's maximum spanning forest of the links in `allowed` (m, m bool) by `weights` (m, m);
    returns a symmetric 0/1 adjacency. Ties break by (i, j) order, so the result is deterministic."""
    m = weights.shape[0]
    iu, ju = np.triu_indices(m, 1)
    keep = allowed[iu, ju]
    iu, ju = iu[keep], ju[keep]
    order = np.lexsort((ju, iu, -weights[iu, ju]))
    parent = list(range(m))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    tree = np.zeros((m, m), dtype=np.int8)
    for k in order:
        a, b = find(int(iu[k])), find(int(ju[k]))
        if a != b:
            parent[a] = b
            tree[iu[k], ju[k]] = tree[ju[k], iu[k]] = 1
    return tree


def decode_topology(scores: np.ndarray, degree: int, weights: np.ndarray,
                    allowed: np.ndarray | None = None) -> np.ndarray:
    """Link scores (m, m) -> a symmetric connected 0/1 adjacency (m, m), no self links.

    Each worker keeps its `degree` highest-scoring allowed links; the union is symmetrised (a link kept by
    either end exists); if the result is disconnected, the links of a maximum spanning tree of `weights`
    (e.g. bandwidths) over the allowed links that join different components are added. Raises ValueError
    when the allowed links themselves are disconnected (no topology can be connected)."""
    m = scores.shape[0]
    ok = np.ones((m, m), dtype=bool) if allowed is None else allowed.astype(bool).copy()
    np.fill_diagonal(ok, False)
    adj = np.zeros((m, m), dtype=np.int8)
    s = np.where(ok, scores, -np.inf)
    for i in range(m):
        cand = np.flatnonzero(ok[i])
        if cand.size == 0:
            continue
        # stable order: higher score first, then lower index
        ranked = cand[np.lexsort((cand, -s[i, cand]))][:max(0, int(degree))]
        adj[i, ranked] = 1
    adj = np.maximum(adj, adj.T)
    if not is_connected(adj):
        if not is_connected(ok.astype(np.int8)):
            raise ValueError("the usable links do not connect every worker")
        label = components(adj)
        tree = maximum_spanning_tree(weights, ok)
        # add the spanning-tree links that cross components, largest weight first, until connected
        iu, ju = np.nonzero(np.triu(tree, 1))
        order = np.argsort(-weights[iu, ju], kind="stable")
        for k in order:
            i, j = int(iu[k]), int(ju[k])
            if label[i] != label[j]:
                adj[i, j] = adj[j, i] = 1
                label = components(adj)
                if label.max() == 0:
                    break
    np.fill_diagonal(adj, 0)
    return adj


def metropolis_weights(adj: np.ndarray) -> np.ndarray:
    """Metropolis-Hastings gossip weights of a symmetric 0/1 adjacency: w_ij = 1/(1+max(deg_i, deg_j)) on
    links, w_ii = 1 - sum_j w_ij. The matrix is symmetric and doubly stochastic."""
    deg = adj.sum(axis=1)
    w = np.where(adj > 0, 1.0 / (1.0 + np.maximum(deg[:, None], deg[None, :])), 0.0)
    np.fill_diagonal(w, 0.0)
    np.fill_diagonal(w, 1.0 - w.sum(axis=1))
    return w


def pair_distance_bounds(known: np.ndarray) -> np.ndarray:
    """Upper bounds on every pair's model distance from the measured ones.

    `known` (m, m): C_ij = ||w_i - w_j|| where measured (between current neighbours), NaN elsewhere. The bound
    is the shortest path over measured distances (the spec's C_ij = min_q (C_iq + C_jq) is its two-hop case);
    by the triangle inequality it is never below the true distance. Pairs with no path get +inf."""
    m = known.shape[0]
    d = np.where(np.isnan(known), np.inf, known).astype(float)
    d = np.minimum(d, d.T)
    np.fill_diagonal(d, 0.0)
    for q in range(m):   # Floyd-Warshall
        d = np.minimum(d, d[:, q:q + 1] + d[q:q + 1, :])
    return d


def consensus_estimate(known: np.ndarray) -> float:
    """C-hat = (1/m^2) sum_ij bound_ij: the mean pairwise model distance bound (measured where linked, the
    triangle-inequality path bound elsewhere). Since ||w_i - mean|| <= (1/m) sum_j ||w_i - w_j||, C-hat also
    bounds the consensus distance C = (1/m) sum_i ||w_i - mean||."""
    d = pair_distance_bounds(known)
    m = d.shape[0]
    return float(d.sum() / (m * m))


def second_eigenvalue(w: np.ndarray) -> float:
    """Second-largest eigenvalue modulus of a symmetric gossip matrix (how fast gossip contracts disagreement)."""
    ev = np.sort(np.abs(np.linalg.eigvalsh(w)))[::-1]
    return float(ev[1]) if ev.size > 1 else 0.0


def rms_contraction(w: np.ndarray) -> float:
    """Root-mean-square modulus of a symmetric doubly stochastic gossip matrix's eigenvalues other than the
    consensus one (m - 1 of them): how much one gossip step shrinks a typical (random-direction) disagreement,
    where the second eigenvalue is the worst case. 0 for exact averaging."""
    m = w.shape[0]
    if m < 2:
        return 0.0
    ev = np.linalg.eigvalsh(w)
    return float(np.sqrt(max(float(np.sum(ev * ev)) - 1.0, 0.0) / (m - 1)))
