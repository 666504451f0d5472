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


TRAIN_SHARE = 0.5   # share of every worker's nodes used for training (seeded); the rest is held out


def load_graph(spec: str, workers: int, seed: int) -> GraphSplit:
    """`--graph NAME:ARGS` through the shared test beds (contextual SBM + Louvain split; `workers=N` is read as
    the test beds' `clients=N`, and defaults to the --workers count); one-line errors."""
    from testbeds.graphs import build_graph
    from testbeds.specs import parse_graph

    text = ",".join("clients=" + item.split("=", 1)[1] if item.strip().startswith("workers=") else item
                    for item in spec.split(",")) if ":" in spec else spec
    parsed = parse_graph(text, "--graph")
    args = dict(parsed.args)
    if "clients" in args and not any(k in spec for k in ("workers=", "clients=")):
        args["clients"] = workers
    if "seed" in args and "seed=" not in spec:
        args["seed"] = seed
    if args.get("clients") != workers:
        raise PlannerError(f"--graph {spec} splits the graph into {args.get('clients')} workers but --workers has "
                           f"{workers}", f"write workers={workers} in --graph, or give --workers {args.get('clients')} workers")
    g = build_graph(parsed.name, args)
    part = np.asarray(g.client, np.int64)
    counts = np.bincount(part, minlength=workers)
    if counts.min() < 2:
        raise PlannerError(f"--graph {spec}: worker {int(counts.argmin())} gets {int(counts.min())} nodes "
                           f"({workers} workers is more than this graph's communities allow)",
                           "use fewer workers or more nodes")
    e = np.asarray(g.edges, np.int64)
    rng = np.random.default_rng(seed)
    train = rng.random(part.shape[0]) < TRAIN_SHARE
    return GraphSplit(np.asarray(g.x, np.float32), np.asarray(g.y, np.int64), np.concatenate([e, e[::-1]], axis=1),
                      part, train, ~train, spec)
