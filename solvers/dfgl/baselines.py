"""dfgl baselines (spec §3), each a schedule scored by the same cost model and surrogate.

  full_full          complete topology, every neighbour (r = 1)
  ring               fixed ring, r = 1
  random_regular     fixed random d-regular topology (networkx, seeded), r = 1
  full_fixed_ratio   complete topology, one fixed ratio for every worker
  stacked            topology and sampling tuned separately, then stacked: the fastest-link degree-d' topology
                     whose steady-state consensus meets C_max (tuned at r = 1), with the uniform ratio that is
                     best on the complete topology (tuned without sparsification)
  duplex_rule        Duplex with the rule-based controller
"""
from __future__ import annotations

import networkx as nx
import numpy as np

from core.p2p_topology import decode_topology, is_connected, metropolis_weights, rms_contraction
from solvers.common import Baseline, Status
from solvers.dfgl.cost import evaluate
from solvers.dfgl.duplex import DfglSolution, ring_adjacency, schedule_solution, solution_of
from solvers.dfgl.problem import DfglProblem, Schedule
from solvers.dfgl.rule import rule_controller

RATIO_GRID = tuple(round(x, 2) for x in np.linspace(0.1, 1.0, 10))


def _fixed(p: DfglProblem, adj: np.ndarray, ratio: float, params: dict) -> DfglSolution:
    r_n, m = p.rounds, p.num_workers
    ok = all(np.all(adj <= p.allowed(k)) for k in range(r_n)) and is_connected(adj)
    sched = Schedule(np.repeat(adj[None], r_n, axis=0).astype(np.int8), np.full((r_n, m), float(ratio)))
    sol = schedule_solution(p, sched, params)
    if not ok:
        return DfglSolution(status=Status.INFEASIBLE, objective=sol.objective, metrics=sol.metrics,
                            params={**params, "violations": ["uses a link that is down in some round"]},
                            schedule=sched)
    return sol


def full_full(p: DfglProblem) -> DfglSolution:
    """Complete topology with full neighbours."""
    return _fixed(p, p.allowed(0).astype(np.int8), 1.0, {"topology": "complete", "ratio": 1.0})


def ring(p: DfglProblem) -> DfglSolution:
    """Fixed ring (workers in index order), full neighbours."""
    return _fixed(p, ring_adjacency(p.num_workers), 1.0, {"topology": "ring", "ratio": 1.0})


def random_regular(p: DfglProblem, seed: int = 0) -> DfglSolution:
    """Fixed random d-regular topology (networkx's generator; d lowered by one if m*d is odd)."""
    m = p.num_workers
    d = min(max(p.degree, 2), m - 1)    # a 1-regular graph is never connected beyond 2 workers
    if (m * d) % 2:
        d = d + 1 if d + 1 <= m - 1 else d - 1
    for attempt in range(100):
        g = nx.random_regular_graph(d, m, seed=seed + attempt)
        adj = nx.to_numpy_array(g, nodelist=range(m), dtype=np.int8)
        if is_connected(adj):
            break
    return _fixed(p, adj, 1.0, {"topology": f"random {d}-regular", "ratio": 1.0, "seed": seed})


def full_fixed_ratio(p: DfglProblem, ratio: float = 0.5) -> DfglSolution:
    """Complete topology with one fixed sampling ratio."""
    return _fixed(p, p.allowed(0).astype(np.int8), max(ratio, p.r_min), {"topology": "complete", "ratio": ratio})


def stacked(p: DfglProblem) -> DfglSolution:
    """Topology tuned alone (at r = 1) and sampling tuned alone (on the complete topology), stacked."""
    m = p.num_workers
    full = p.allowed(0).astype(np.int8)
    mean_b = p.bandwidth_Bps.mean(axis=0)
    topo, topo_t = full, np.inf
    for d in range(1, m):
        adj = decode_topology(mean_b, d, mean_b, p.allowed(0))
        lam = rms_contraction(metropolis_weights(adj))
        steady = lam * p.surrogate.drift_per_round / max(1.0 - lam, 1e-9)
        if steady > p.c_max:
            continue
        t = evaluate(p, Schedule(np.repeat(adj[None], p.rounds, 0), np.ones((p.rounds, m)))).round_time_s.sum()
        if t < topo_t:
            topo, topo_t = adj, t
    best_r, best_obj = 1.0, np.inf
    for r in RATIO_GRID:
        r = max(r, p.r_min)
        obj = evaluate(p, Schedule(np.repeat(full[None], p.rounds, 0), np.full((p.rounds, m), r))).objective.sum()
        if obj < best_obj:
            best_r, best_obj = r, obj
    return _fixed(p, topo, best_r, {"topology": f"fastest links, degree {int(topo.sum(1).max())} (tuned at r=1)",
                                     "ratio": best_r, "ratio_tuned_on": "complete topology"})


def duplex_rule(p: DfglProblem, base_ratio: float = 0.5) -> DfglSolution:
    """Duplex with the rule-based controller."""
    return solution_of(p, rule_controller(p, base_ratio), {"controller": "rule", "base_ratio": base_ratio})


def baselines(fixed_ratio: float = 0.5, rule_ratio: float = 0.5, seed: int = 0) -> tuple[Baseline, ...]:
    """Every baseline, in the order plans list them."""
    return (
        Baseline("full_full", "complete topology, full neighbours", full_full, {"ratio": 1.0}),
        Baseline("ring", "fixed ring, full neighbours", ring, {"ratio": 1.0}),
        Baseline("random_regular", "fixed random d-regular topology, full neighbours",
                 lambda p: random_regular(p, seed), {"seed": seed}),
        Baseline("full_fixed_ratio", "complete topology, fixed sampling ratio",
                 lambda p: full_fixed_ratio(p, fixed_ratio), {"ratio": fixed_ratio}),
        Baseline("stacked", "topology and sampling tuned separately, stacked", stacked, {}),
        Baseline("duplex_rule", "Duplex with the rule-based controller", lambda p: duplex_rule(p, rule_ratio),
                 {"base_ratio": rule_ratio}, in_space=True),
    )
