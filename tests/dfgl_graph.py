"""A tiny graph split for dfgl tests: networkx's stochastic block model, Gaussian class features, one block
per worker with some label mixing (the shared test beds' contextual SBM is used by the CLI and benchmarks)."""
from __future__ import annotations

import networkx as nx
import numpy as np

from planner.families.dfgl.graph_input import GraphSplit


def tiny_split(workers: int = 4, per_worker: int = 60, features: int = 16, classes: int = 3, seed: int = 0,
               spec: str = "tiny-sbm") -> GraphSplit:
    """workers x per_worker nodes; dense inside a worker's block, sparse across."""
    rng = np.random.default_rng(seed)
    sizes = [per_worker] * workers
    probs = np.full((workers, workers), 0.01) + np.eye(workers) * 0.07
    g = nx.stochastic_block_model(sizes, probs.tolist(), seed=seed)
    n = g.number_of_nodes()
    part = np.repeat(np.arange(workers), per_worker)
    y = (part + (rng.random(n) < 0.4) * rng.integers(0, classes, n)) % classes
    means = rng.normal(0, 1, (classes, features))
    x = (means[y] + rng.normal(0, 1.5, (n, features))).astype(np.float32)
    e = np.array(list(g.edges()), dtype=np.int64).T
    edge_index = np.concatenate([e, e[::-1]], axis=1)
    train = rng.random(n) < 0.6
    return GraphSplit(x, y.astype(np.int64), edge_index, part, train, ~train, spec)
