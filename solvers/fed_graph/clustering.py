"""FedGCF's two client topologies from the uploaded signatures (pure numpy).

* structural clusters: agglomerative clustering (average linkage) on the cosine similarity of the structural
  signatures, stopped at a similarity threshold or at k clusters;
* the common-feature set U: the feature-similarity graph links clients whose feature signatures have cosine
  similarity >= delta; U = the most central clients (top share by degree in that graph).

Signatures are centred across clients before the cosine (each coordinate minus its mean over clients): raw
histograms share a large common part (every client has mostly low-degree nodes), which puts every raw cosine
near 1 and hides the differences the clustering is for.
"""
from __future__ import annotations

import numpy as np


def cosine_similarity(sig: np.ndarray, centre: bool = True) -> np.ndarray:
    """(n, n) cosine similarity of the rows of `sig` (n, d), optionally centred across rows; a zero row is
    similar only to itself."""
    s = np.asarray(sig, dtype=np.float64)
    if centre:
        s = s - s.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(s, axis=1)
    unit = np.divide(s, norm[:, None], out=np.zeros_like(s), where=norm[:, None] > 1e-12)
    sim = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(sim, 1.0)
    return sim


def agglomerative(sim: np.ndarray, *, k: int | None = None, threshold: float | None = None) -> np.ndarray:
    """Cluster labels (n,) by average-linkage agglomeration on a similarity matrix: merge the most similar pair
    of clusters while there are more than `k` clusters (k mode) or while that pair's average similarity is at
    least `threshold` (threshold mode). Labels are renumbered by each cluster's smallest member (deterministic;
    ties merge the pair with the smallest members first)."""
    n = sim.shape[0]
    if (k is None) == (threshold is None):
        raise ValueError("give exactly one of k and threshold")
    if k is not None and not 1 <= k <= n:
        raise ValueError(f"k={k} outside 1..{n}")
    clusters: list[list[int]] = [[i] for i in range(n)]
    while len(clusters) > 1:
        best, pair = -np.inf, (0, 1)
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                s = float(sim[np.ix_(clusters[a], clusters[b])].mean())
                if s > best + 1e-12:
                    best, pair = s, (a, b)
        if k is not None and len(clusters) <= k:
            break
        if threshold is not None and best < threshold:
            break
        a, b = pair
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    labels = np.empty(n, dtype=np.int64)
    for g, members in enumerate(sorted(clusters, key=min)):
        labels[members] = g
    return labels


def feature_graph(sim: np.ndarray, delta: float) -> np.ndarray:
    """(n, n) bool adjacency linking distinct clients whose feature similarity is >= delta."""
    adj = np.asarray(sim) >= delta
    np.fill_diagonal(adj, False)
    return adj


def common_set(adj: np.ndarray, share: float = 0.5) -> np.ndarray:
    """Sorted indices of the most central clients: the top `share` of clients by degree in the feature graph
    (ties broken by index); clients without any link are never central. May be empty (no links at all)."""
    deg = adj.sum(axis=1)
    n = adj.shape[0]
    m = max(1, int(np.ceil(share * n)))
    order = sorted(range(n), key=lambda i: (-int(deg[i]), i))
    return np.array(sorted(i for i in order[:m] if deg[i] > 0), dtype=np.int64)
