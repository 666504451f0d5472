"""fed-graph phases: inputs (population + graph test bed) -> lower (signatures, pilot data) -> solve (topology,
bandit prior, every configuration on the surrogate pilot) -> lift."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import PlannerError
from planner.families.base import PlanContext
from planner.plan_refs import population_refs, solver_trace
from planner.schema import BaselineResult, ModelRef, Objective, Plan, SolverInfo

ROUND = 6


@dataclass
class FedGraphState:
    """What the fed-graph phases pass along."""

    population: Any = None
    graph: Any = None
    problem: Any = None
    signatures: Any = None
    solution: Any = None


def inputs(ctx: PlanContext) -> None:
    """Read the population and build the graph test bed; their client counts must agree."""
    from planner.families.fed_graph.lowering import load_clients
    from planner.registry import resolve_hardware
    from profilers.population import parse_population

    o = ctx.options
    pop = parse_population(o.clients, lambda name: resolve_hardware(name, flag="--clients"))
    gc = load_clients(o.lowering.graph, o.lowering.seed)
    if len(pop) != len(gc.ids):
        raise PlannerError(f"--graph {o.lowering.graph} holds {len(gc.ids)} clients but --clients lists {len(pop)}",
                           f"write clients={len(pop)} in --graph or list {len(gc.ids)} devices")
    ctx.state = FedGraphState(population=pop, graph=gc)


def lower(ctx: PlanContext) -> None:
    """Signatures (the clients' own code), pilot data and the GCN's size -> FedGraphProblem."""
    from planner.families.fed_graph.lowering import lower as lower_problem

    st = ctx.state
    st.problem, st.signatures = lower_problem(st.graph, ctx.options.lowering)


def solve(ctx: PlanContext) -> None:
    """Topology, bandit prior and every configuration on the surrogate pilot (one-line errors when infeasible)."""
    from solvers.fed_graph.gcf import solve as gcf

    try:
        ctx.state.solution = gcf(ctx.state.problem, ctx.options.lowering.target_accuracy)
    except ValueError as exc:
        raise PlannerError(str(exc), "fix the flag") from exc
    ctx.notes.append("accuracies, rounds and bytes to target come from the planner's SURROGATE pilot (linear two-hop "
                     "graph convolution in numpy on the test bed's validation nodes), not from the GCN: "
                     "`planner run` measures the GCN on Flower (held-out test nodes)")


def _r(v: float) -> float:
    return round(float(v), ROUND)


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan: topology and every configuration by client id, pilot predictions, recommendation."""
    from solvers.fed_graph.gcf import PLAN
    from solvers.fed_graph.cost import rounds_to_target

    st = ctx.state
    p, sol, o, gc = st.problem, st.solution, ctx.options.lowering, st.graph
    ids = p.client_ids
    topo = sol.topology

    def predicted(name: str) -> dict[str, Any]:
        run = sol.runs[name]
        bt = sol.bytes_target[name]
        return {"bytes_per_round": int(sol.bytes_round), "bytes_to_target": bt, "reaches_target": bt is not None,
                "pilot_rounds_to_target": rounds_to_target(run.val, sol.target),
                "pilot_final_val_accuracy": _r(run.val[-1]), "pilot_final_test_accuracy": _r(run.test[-1]),
                "pilot_val_curve": [_r(v) for v in run.val],
                "pilot_betas_last_round": [_r(b) for b in run.betas[-1][: int(run.clusters.max()) + 1]],
                "pilot_cumulative_regret": _r(run.regret.sum()), "feasible": True}

    configs = {n: c.record(ids) for n, c in sol.configs.items()}
    K = int(topo.clusters.max()) + 1
    groups = {ids[i]: int(gc.group[i]) for i in range(len(ids))} if (gc.group >= 0).all() else {}
    decisions = {
        "clients": list(ids),
        "devices": {cid: d.id for cid, d in zip(ids, st.population.devices)},
        "clusters": {cid: int(g) for cid, g in zip(ids, topo.clusters)},
        "common": [ids[i] for i in topo.common],
        "feature_graph": {"delta": _r(topo.delta), "share": p.common_share},
        "structural_clustering": ({"k": p.k} if p.k is not None else {"threshold": p.threshold}),
        "bandit": {"arms": list(p.arms), "ucb_c": p.ucb_c, "prior_count": configs[PLAN]["prior_count"],
                   "prior_mean": configs[PLAN]["prior_mean"], "reward": "validation accuracy gain of the round: fused models vs the models the clients trained the round before"},
        "recommended": sol.chosen,
        "configs": configs,
        "signatures": {cid: [_r(v) for v in np.concatenate([s.structure, s.features])]
                       for cid, s in zip(ids, st.signatures)},
        "testbed_groups": groups,
        "graph": {"spec": o.graph, "seed": o.seed, "nodes": int(gc.x.shape[0]), "features": int(gc.x.shape[1]),
                  "classes": gc.classes},
        "training": {"rounds": o.rounds, "local_steps": o.local_steps, "lr": o.lr, "hidden": 32,
                     "features": int(gc.x.shape[1]), "classes": gc.classes, "seed": o.seed},
    }
    pred = {**predicted(sol.chosen), "target_val_accuracy": _r(sol.target), "clusters": K,
            "common_clients": int(topo.common.size), "model_bytes": p.model_bytes,
            "signature_bytes_once": p.signature_bytes * p.num_clients}
    base = {}
    for name, c in sol.configs.items():
        if name == sol.chosen:
            continue
        base[name] = BaselineResult(c.description, {"beta_mode": c.mode, "beta": c.beta}, predicted(name), {},
                                    {"config": name})
    if sol.chosen != PLAN:
        ctx.notes.append(f"the pilot ranks {sol.chosen} ahead of FedGCF's bandit on bytes to the target: the plan "
                         f"recommends {sol.chosen} (`planner run DIR` runs it; `--baseline fedgcf` runs the bandit)")
    if groups:
        match = _cluster_purity(topo.clusters, np.asarray([groups[c] for c in ids]))
        ctx.notes.append(f"structural clusters vs the test bed's groups: purity {match:.2f} ({K} clusters)")
    spec = ctx.spec
    whole, extra = population_refs(st.population)
    obj = sol.bytes_target[sol.chosen]
    ctx.plan = Plan(
        family=ctx.family.name,
        model=ModelRef(spec.name, spec.fingerprint(ctx.request.tiny), spec.source, num_params=p.model_bytes // 4,
                       dtype="fp32", tiny=ctx.request.tiny),
        hardware=whole, extra_hardware=extra,
        solver=SolverInfo(name="FedGCF (agglomerative structural clusters, central common set, per-cluster UCB1 "
                          "over beta; configurations ranked on a surrogate pilot)", status=sol.status.value,
                          config={"arms": list(p.arms), "ucb_c": p.ucb_c, "prior_count": p.prior_count,
                                  "k": p.k, "threshold": p.threshold, "delta": p.delta},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=len(sol.trace), trace=solver_trace(sol.trace, limit=20)),
        objective=Objective(ctx.family.objective_metric, ctx.family.objective_sense,
                            float(obj) if obj is not None else float("inf")),
        decisions=decisions, predicted=pred, baselines=base, bound=None,
        inputs={"scenario_reason": ctx.scenario_reason, "population": st.population.source,
                "population_fingerprint": st.population.fingerprint(), "graph": o.graph, "rounds": o.rounds,
                "seed": o.seed},
        constraints={"beta_range": [0.0, 1.0]},
        notes=tuple(dict.fromkeys(ctx.notes)),
    )


def _cluster_purity(clusters: np.ndarray, groups: np.ndarray) -> float:
    """Share of clients whose cluster's majority group is their own group."""
    hit = 0
    for g in set(clusters.tolist()):
        members = groups[clusters == g]
        hit += int(np.bincount(members).max())
    return hit / len(groups)
