"""FedGCF's plan: structural clusters, the common-feature set U and the bandit's settings, then every
configuration (the plan's and the baselines') run on the surrogate pilot so the plan can rank them.

    sol = solve(problem)          # sol.clusters, sol.common, sol.configs[name], sol.runs[name], sol.chosen
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import InfeasibleError
from solvers.common import Solution, Status, Stopwatch, TraceEvent
from solvers.fed_graph.clustering import agglomerative, common_set, cosine_similarity, feature_graph
from solvers.fed_graph.cost import bytes_per_round, bytes_to_target
from solvers.fed_graph.pilot import PilotRun, global_prior, prior_from, simulate
from solvers.fed_graph.problem import FedGraphProblem, FusionConfig

PLAN = "fedgcf"
TARGET_SHARE = 0.98     # default target: this share of FedAvg's best pilot validation accuracy


@dataclass(frozen=True)
class Topology:
    """clusters (n,), common (m,) indices, delta used, and both similarity matrices (n, n)."""

    clusters: np.ndarray
    common: np.ndarray
    delta: float
    structure_sim: np.ndarray
    feature_sim: np.ndarray


@dataclass(frozen=True, kw_only=True)
class FedGraphSolution(Solution):
    """The topology, every configuration, its pilot run and predicted bytes; `chosen`: the configuration with
    the fewest predicted bytes to the target (ties: higher final pilot accuracy), which the plan recommends."""

    topology: Topology
    configs: dict[str, FusionConfig] = field(default_factory=dict)
    runs: dict[str, PilotRun] = field(default_factory=dict)
    target: float = 0.0
    bytes_round: int = 0
    bytes_target: dict[str, int | None] = field(default_factory=dict)
    chosen: str = PLAN


def topology(p: FedGraphProblem) -> Topology:
    """Clusters from the structural signatures; U from the feature-similarity graph (InfeasibleError if empty)."""
    ss = cosine_similarity(p.structure)
    fs = cosine_similarity(p.features)
    n = p.num_clients
    if p.k is not None and p.k > n:
        raise InfeasibleError(f"k={p.k} structural clusters asked of {n} clients", f"use k <= {n}")
    labels = agglomerative(ss, k=p.k) if p.k is not None else agglomerative(ss, threshold=float(p.threshold))
    off = fs[~np.eye(n, dtype=bool)]
    delta = float(np.median(off)) if p.delta is None else float(p.delta)
    if n == 1:
        common = np.array([0], dtype=np.int64)
    else:
        common = common_set(feature_graph(fs, delta), p.common_share)
    if common.size == 0:
        top = float(off.max()) if off.size else 1.0
        raise InfeasibleError(f"the common-feature set is empty: no two clients' feature signatures reach "
                              f"similarity delta={delta:g} (the most similar pair has {top:.3f})",
                              f"lower --delta to at most {np.floor(top * 1000) / 1000:g} or leave it out (median)")
    return Topology(labels, common, delta, ss, fs)


GLOBAL = "fedgcf_global"   # the ablation: one bandit, one beta for every cluster (the spec's per-round beta)


def configurations(p: FedGraphProblem, topo: Topology, prior: np.ndarray | None,
                   prior_global: np.ndarray | None = None) -> dict[str, FusionConfig]:
    """The plan's bandit, its global-beta ablation and every baseline, on the same clients (same start, rounds and
    local training)."""
    n, K = p.num_clients, int(topo.clusters.max()) + 1
    one = np.zeros(n, dtype=np.int64)
    everyone = np.arange(n, dtype=np.int64)
    return {
        PLAN: FusionConfig(PLAN, "FedGCF: per-cluster UCB1 over beta (structural clusters + common model)",
                           topo.clusters, topo.common, "bandit", arms=p.arms, ucb_c=p.ucb_c, prior_mean=prior,
                           prior_count=p.prior_count if prior is not None else 0.0),
        GLOBAL: FusionConfig(GLOBAL, "FedGCF ablation: one UCB1 over beta for all clusters (one beta per round)",
                             topo.clusters, topo.common, "bandit_global", arms=p.arms, ucb_c=p.ucb_c,
                             prior_mean=prior_global, prior_count=p.prior_count if prior_global is not None else 0.0),
        "fedavg": FusionConfig("fedavg", "FedAvg: one global model", one, everyone, "fixed", beta=1.0),
        "beta_1": FusionConfig("beta_1", "structure-only clustered FL (beta = 1: per-cluster FedAvg)",
                               topo.clusters, topo.common, "fixed", beta=1.0),
        "beta_0": FusionConfig("beta_0", "common model only (beta = 0: FedAvg over U, sent to all)",
                               topo.clusters, topo.common, "fixed", beta=0.0),
        "beta_0.5": FusionConfig("beta_0.5", "fixed beta = 0.5", topo.clusters, topo.common, "fixed", beta=0.5),
        "gcfl": FusionConfig("gcfl", f"GCFL-style: {p.gcfl_warmup} FedAvg rounds, then {K} clusters by update "
                             "similarity (per-cluster FedAvg)", one, everyone, "gcfl", beta=1.0,
                             gcfl_warmup=p.gcfl_warmup, gcfl_k=K),
        "oracle": FusionConfig("oracle", "per-round oracle: every cluster's best arm on validation (reference)",
                               topo.clusters, topo.common, "oracle", arms=p.arms),
    }


def check(p: FedGraphProblem) -> None:
    """Malformed knobs (the family's options refuse them first, with a one-line error): arms outside [0, 1]."""
    if not p.arms or any(not 0.0 <= a <= 1.0 for a in p.arms):
        raise ValueError(f"beta arms {list(p.arms)} must lie in [0, 1]")


def solve(p: FedGraphProblem, target: float | None = None) -> FedGraphSolution:
    """Topology, the bandit's prior (from the oracle pilot's every-arm view), every configuration's pilot, the
    predicted bytes to `target` (default: 98 % of FedAvg's best pilot validation accuracy) and the recommendation."""
    watch = Stopwatch()
    check(p)
    topo = topology(p)
    K = int(topo.clusters.max()) + 1
    trace = [TraceEvent("topology", 0, {"clusters": K, "common": int(topo.common.size), "delta": round(topo.delta, 6)})]
    base = configurations(p, topo, None)
    # the prior needs every arm's reward: the oracle's pilot scores every arm every round
    runs: dict[str, PilotRun] = {"oracle": simulate(p, base["oracle"])}
    prior = prior_from(runs["oracle"], K) if p.prior_count > 0 else None
    val_nodes = np.array([c.val.sum() for c in p.pilot], dtype=np.float64)
    prior_g = global_prior(prior, runs["oracle"], val_nodes) if prior is not None else None
    configs = configurations(p, topo, prior, prior_g)
    for i, (name, cfg) in enumerate(configs.items()):
        if name not in runs:
            runs[name] = simulate(p, cfg)
        trace.append(TraceEvent("pilot", i + 1, {"config": name, "final_val_accuracy": round(float(runs[name].val[-1]), 6)}))
    goal = TARGET_SHARE * float(runs["fedavg"].val.max()) if target is None else float(target)
    bpr = bytes_per_round(p.num_clients, p.model_bytes)
    bt = {name: bytes_to_target(runs[name].val, goal, p.num_clients, p.model_bytes, p.signature_bytes,
                                name not in ("fedavg", "gcfl")) for name in configs}
    candidates = [n for n in configs if n != "oracle"]
    if all(bt[n] is None for n in candidates):
        best = max(float(runs[n].val.max()) for n in candidates)
        raise InfeasibleError(f"no configuration reaches validation accuracy {goal:.3f} within {p.rounds} rounds in "
                              f"the pilot (the best reaches {best:.3f})",
                              f"lower --accuracy-target to at most {np.floor(best * 1000) / 10:g}% or plan more --rounds")
    # fewest predicted bytes to the target (the objective: a tie in rounds goes to the configuration without
    # FedGCF's one-off signatures), then the higher final accuracy, then the plan's own method
    chosen = min(candidates, key=lambda n: (bt[n] is None, bt[n] or 0, -round(float(runs[n].val[-1]), 9), n != PLAN))
    return FedGraphSolution(status=Status.FEASIBLE, objective=float(bt[chosen]) if bt[chosen] is not None else float("inf"),
                            wall_time_s=watch.elapsed(), trace=tuple(trace), topology=topo, configs=configs,
                            runs=runs, target=goal, bytes_round=bpr, bytes_target=bt, chosen=chosen)

