"""The graph and its split into workers, as plain arrays (from the shared test beds' generator)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import PlannerError


@dataclass(frozen=True)
class GraphSplit:
    """x (n, F) float32 features; y (n,) labels; edge_index (2, E) directed both ways; part (n,) worker index;
    train_mask / test_mask (n,) bool."""

    x: np.ndarray
    y: np.ndarray
    edge_index: np.ndarray
    part: np.ndarray
    train_mask: np.ndarray
    test_mask: np.ndarray
    spec: str

    @property
    def num_classes(self) -> int:
        """Label count."""
        return int(self.y.max()) + 1


def load_graph(spec: str, workers: int, seed: int) -> GraphSplit:
    """`--graph NAME:ARGS` through testbeds.graphs (contextual SBM + Louvain split); one-line errors."""
    try:
        from testbeds import graphs
    except ImportError as exc:
        raise PlannerError("the graph test beds (testbeds/graphs.py) are not installed in this checkout",
                           "merge the testbeds branch") from exc
    g = graphs.build_graph(spec, seed=seed)
    parts = int(np.max(g.part)) + 1
    if parts != workers:
        raise PlannerError(f"--graph {spec} splits the graph into {parts} workers but --workers has {workers}",
                           f"write workers={workers} in --graph or give --workers {parts} workers")
    return GraphSplit(np.asarray(g.x, np.float32), np.asarray(g.y, np.int64), np.asarray(g.edge_index, np.int64),
                      np.asarray(g.part, np.int64), np.asarray(g.train_mask, bool), np.asarray(g.test_mask, bool), spec)
