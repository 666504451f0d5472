"""FedBE's allocation (docs/fed-expand.md, "Algorithm"): per client the most valuable set of added blocks it
can train, then coverage repair so every added block has a trainer.

1. For every client and every choice of lowest block j with count k ≤ max_count[c, j], the best set is j plus
   the k−1 most valuable blocks above it (home blocks first, then top-most first): the client's best set
   over all (j, k). Stronger clients (larger max_count) get more blocks; a weak one ends up with the top of
   its cluster's home subset.
2. Coverage: while an added block has no trainer, give it to the client whose best set containing it (and
   still containing every block only that client trains) loses the least utility. No such client:
   InfeasibleError naming the block and the client that comes closest.
"""
from __future__ import annotations

import numpy as np

from solvers.common import InfeasibleError, Status, Stopwatch, TraceEvent
from solvers.fed_expand.cost import evaluate, max_count
from solvers.fed_expand.problem import FedExpandProblem, FedExpandSolution


def best_set(value: np.ndarray, home: np.ndarray, caps: np.ndarray, must: frozenset[int] = frozenset()
             ) -> tuple[float, tuple[int, ...]] | None:
    """The most valuable feasible set of one client containing `must`: (value, sorted block indices), or None.

    `caps[j]` is the most blocks the client can train with j lowest; ties prefer home blocks, then top-most."""
    P = len(value)
    best: tuple[float, tuple[int, ...], tuple] | None = None
    for j in range(P):
        k = int(caps[j])
        if k <= 0 or (must and j > min(must)):
            continue
        above = [b for b in range(j + 1, P) if b not in must]
        above.sort(key=lambda b: (-value[b], not home[b], -b))
        forced = sorted(b for b in must if b != j)
        if len(forced) + 1 > k:
            continue
        chosen = [j] + forced + above[: k - 1 - len(forced)]
        v = float(sum(value[b] for b in chosen))
        key = (v, sum(1 for b in chosen if home[b]), sorted(chosen, reverse=True))
        if best is None or key > best[2]:
            best = (v, tuple(sorted(chosen)), key)
    return None if best is None else (best[0], best[1])


def solve(problem: FedExpandProblem) -> FedExpandSolution:
    """FedBE's greedy allocation (see the module docstring)."""
    watch = Stopwatch()
    p = problem
    n, P = p.num_clients, p.num_added
    caps = max_count(p)
    value = p.value()
    assign = np.zeros((n, P), dtype=bool)
    trace = []
    for c in range(n):
        got = best_set(value[c], p.home[c], caps[c])
        if got is not None:
            assign[c, list(got[1])] = True
    trace.append(TraceEvent("per-client", 0, {"utility": evaluate(p, assign).utility}))
    repairs = 0
    for _ in range(P * max(n, 1) + 1):
        uncovered = np.flatnonzero(~assign.any(axis=0))
        if not len(uncovered):
            break
        j = int(uncovered[-1])                        # top-most uncovered first
        counts = assign.sum(axis=0)
        choice = None
        for c in range(n):
            sole = frozenset(int(b) for b in np.flatnonzero(assign[c] & (counts == 1)))
            got = best_set(value[c], p.home[c], caps[c], sole | {j})
            if got is None:
                continue
            loss = float(np.sum(value[c] * assign[c])) - got[0]
            if choice is None or loss < choice[0] - 1e-12:
                choice = (loss, c, got[1])
        if choice is None:
            e = int(p.expanded_index()[j])
            raise InfeasibleError(
                f"no client can train added block {j} (expanded layer {e}) within its memory and round deadline",
                "add fewer blocks (--added-blocks), raise client memory or the deadline, or lower --local-steps")
        _, c, blocks = choice
        assign[c] = False
        assign[c, list(blocks)] = True
        repairs += 1
        trace.append(TraceEvent("coverage", repairs, {"block": j, "client": c, "loss": choice[0]}))
    m = evaluate(p, assign)
    return FedExpandSolution(status=Status.FEASIBLE, objective=m.utility, metrics=m, wall_time_s=watch.elapsed(),
                             trace=tuple(trace), assign=assign, params={"method": "fedbe-greedy", "repairs": repairs})
