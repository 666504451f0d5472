"""What a fed-graph client uploads once before training: its structural and node-feature signatures.

Structural signature: the normalised histograms of node degree and of the local clustering coefficient
of the client's own subgraph (FedGCF's structural characteristics); node-feature signature: the per-feature
mean and variance of its nodes. Plain numpy, so a client computes it without the solver stack and the planner
(which simulates the clients' upload on the test bed) gets byte-identical numbers.

    sig = client_signature(edges_local, x_local)     # edges (2, E) local ids, each undirected edge once
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEGREE_BINS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32)     # left edges; the last bin is open (>= 32)
# left edges of the clustering-coefficient bins, finer near 0: sparse subgraphs have coefficients of a few
# hundredths, which equal-width bins of [0, 1] would all put in the first bin
CLUSTERING_BINS = (0.0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.5)


@dataclass(frozen=True)
class ClientSignature:
    """structure: (len(DEGREE_BINS) + len(CLUSTERING_BINS),) histogram shares (a node with a coefficient of
    exactly 0 goes to the first bin); features: (2F,) mean then variance;
    nodes: node count (the sample weight of FedAvg uses the train-node count instead)."""

    structure: np.ndarray
    features: np.ndarray
    nodes: int


def degrees_and_clustering(num_nodes: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(degree, local clustering coefficient) of every node of an undirected simple graph given once per edge."""
    a = np.zeros((num_nodes, num_nodes), dtype=np.float64)
    if edges.size:
        a[edges[0], edges[1]] = 1.0
        a[edges[1], edges[0]] = 1.0
    np.fill_diagonal(a, 0.0)
    deg = a.sum(axis=1)
    triangles = np.einsum("ij,jk,ki->i", a, a, a) / 2.0       # closed wedges at each node
    wedges = deg * (deg - 1) / 2.0
    cc = np.divide(triangles, wedges, out=np.zeros_like(deg), where=wedges > 0)
    return deg, cc


def client_signature(edges: np.ndarray, x: np.ndarray) -> ClientSignature:
    """The signature of one client's subgraph (edges in local ids, x (n, F) node features)."""
    n = int(x.shape[0])
    deg, cc = degrees_and_clustering(n, np.asarray(edges, dtype=np.int64).reshape(2, -1))
    edges_deg = np.asarray(DEGREE_BINS + (np.inf,), dtype=np.float64)
    dh = np.histogram(deg, bins=edges_deg)[0].astype(np.float64)
    ch = np.histogram(cc, bins=np.asarray(CLUSTERING_BINS + (1.0 + 1e-9,)))[0].astype(np.float64)
    share = max(n, 1)
    xf = np.asarray(x, dtype=np.float64)
    return ClientSignature(np.concatenate([dh, ch]) / share,
                           np.concatenate([xf.mean(axis=0), xf.var(axis=0)]) if n else np.zeros(2 * x.shape[1]), n)
