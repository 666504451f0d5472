"""Request routers that split a stream of requests across model replicas (stdlib only).

Shared by the spec-serve planner's engine replay (solvers/spec_serve/simulate.py) and the serving engine
(runtime/spec_serve/engine.py), so the prediction and the run split the same requests the same way.

  * `round-robin`: request j goes to replica j mod R (the default router of most serving front ends);
  * `weighted-round-robin`: nginx's smooth weighted round-robin with each replica's weight = its speed (1 / its
    emulated seconds per CPU second), so a replica k times faster receives k times the requests, interleaved.

    >>> assign(5, [1.0, 1.0], "round-robin")
    [0, 1, 0, 1, 0]
    >>> assign(4, [3.0, 1.0], "weighted-round-robin")
    [0, 0, 1, 0]
"""
from __future__ import annotations

from typing import Sequence

ROUTERS = ("round-robin", "weighted-round-robin")


def assign(n_requests: int, weights: Sequence[float], router: str) -> list[int]:
    """The replica index of each of `n_requests` requests in arrival order (deterministic; ties to the lower
    index). `weights`: one positive number per replica (only `weighted-round-robin` reads their values)."""
    if router not in ROUTERS:
        raise ValueError(f"unknown router {router!r}; use one of {', '.join(ROUTERS)}")
    r = len(weights)
    if r == 0:
        raise ValueError("no replicas to route to")
    if router == "round-robin":
        return [j % r for j in range(n_requests)]
    if any(w <= 0 for w in weights):
        raise ValueError("replica weights must be positive")
    total = float(sum(weights))
    current = [0.0] * r
    out = []
    for _ in range(n_requests):
        for i in range(r):
            current[i] += float(weights[i])
        pick = max(range(r), key=lambda i: (current[i], -i))
        current[pick] -= total
        out.append(pick)
    return out
