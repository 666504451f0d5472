"""fed-expand baselines on the same problem (docs/fed-expand.md, "Baselines"), as assignments of added blocks.

* `fixed_expansion`: every client trains every added block (LLaMA-Pro expansion + FedAvg): over budget
  where a client cannot hold them all.
* `static_allocation` (FedBE without dynamic allocation): one set for every client, the top-most k blocks
  where k is what the weakest client can hold with the top block lowest-first (data-blind, capacity-uniform).

LoRA FedAvg and full fine-tuning FedAvg train other parameters; their predictions come from
`lora_round` / `full_round` with the same measured constants (labelled as such in the plan).
"""
from __future__ import annotations

import numpy as np

from solvers.common import Status, Stopwatch
from solvers.fed_expand.cost import evaluate, max_count
from solvers.fed_expand.problem import FedExpandProblem, FedExpandSolution


def _solution(p: FedExpandProblem, assign: np.ndarray, name: str, watch: Stopwatch) -> FedExpandSolution:
    m = evaluate(p, assign)
    ok = bool(m.within_budgets.all()) and not m.uncovered
    return FedExpandSolution(status=Status.FEASIBLE if ok else Status.INFEASIBLE, objective=m.utility, metrics=m,
                             wall_time_s=watch.elapsed(), assign=assign, params={"baseline": name})


def fixed_expansion(p: FedExpandProblem) -> FedExpandSolution:
    """Every client, every added block."""
    return _solution(p, np.ones((p.num_clients, p.num_added), dtype=bool), "fixed_expansion", Stopwatch())


def static_allocation(p: FedExpandProblem) -> FedExpandSolution:
    """The same top-most k blocks for every client, k = the least capacity over clients (at least 1)."""
    watch = Stopwatch()
    caps = max_count(p)
    P = p.num_added
    # with the top k blocks, block P−k is lowest: the count fits when caps[c, P−k] ≥ k
    k = 0
    for cand in range(1, P + 1):
        if all(caps[c, P - cand] >= cand for c in range(p.num_clients)):
            k = cand
    k = max(k, 1)
    assign = np.zeros((p.num_clients, P), dtype=bool)
    assign[:, P - k:] = True
    return _solution(p, assign, "static_allocation", watch)


BASELINES = {"fixed_expansion": ("every client trains every added block (LLaMA-Pro expansion, FedAvg)", fixed_expansion),
             "static_allocation": ("FedBE without dynamic allocation: the same top-most blocks for every client, "
                                   "as many as the weakest client holds", static_allocation)}
