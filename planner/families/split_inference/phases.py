"""split-inference phases: profile -> lower -> solve (with the joint accuracy check) -> baselines -> bound -> lift."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import InfeasibleError
from planner.families.base import PlanContext
from planner.families.split_inference.lowering import SplitLowered
from planner.plan_refs import hardware_ref, solver_trace
from planner.schema import BaselineResult, Bound, ModelRef, Objective, Plan, SolverInfo


# --objective -> (the plan's objective metric, its sense); the views put the chosen one first
OBJECTIVE_METRICS = {"throughput": ("throughput_rps", "max"), "latency": ("latency_ms", "min"),
                     "coach": ("objective_ms", "min")}


@dataclass
class SplitState:
    """What the split-inference phases pass along."""

    graph_profile: Any = None
    lowered: SplitLowered | None = None
    solution: Any = None
    joint_drop: float | None = None
    baselines: dict[str, Any] = field(default_factory=dict)
    bound: Any = None          # the exact reference's solution (its params carry the kind)


def profile(ctx: PlanContext) -> None:
    """The torch.export graph with per-node costs (meta device for random-weight models)."""
    from profilers.graph import profile_model

    ctx.state = SplitState(graph_profile=profile_model(ctx.spec, tiny=ctx.request.tiny))


def lower(ctx: PlanContext) -> None:
    """Graph + edge/cloud hardware + link -> the COACH problem (accuracy measured for candidate cut tensors)."""
    from planner.families.split_inference.lowering import lower as lower_split

    opts = ctx.options
    st = ctx.state
    st.lowered = lower_split(ctx.spec, st.graph_profile, ctx.require_hardware(), opts.cloud_profile, opts,
                             progress=ctx.progress)
    ctx.notes.extend(st.lowered.notes)


def solve(ctx: PlanContext) -> None:
    """COACH, then the joint accuracy check on real data with the repair loop (the solver stays pure)."""
    from planner.families.split_inference.lowering import joint_check
    from solvers.split_inference.coach import CoachConfig, solve as coach
    from solvers.split_inference.cost import evaluate
    from solvers.split_inference.validate import validate

    st = ctx.state
    low = st.lowered
    p = low.problem
    sol = coach(p, CoachConfig(objective=low.options.objective))
    if not sol.feasible:
        m = sol.metrics
        if m.latency_s > p.t_max_s * (1 + 1e-12):
            raise InfeasibleError(f"no edge/cloud split meets --max-latency {p.t_max_s * 1e3:.4g}ms"
                                  + (f" at --min-throughput {1 / p.period_max_s:.4g}" if math.isfinite(p.period_max_s)
                                     else "") + f": the closest plan takes {m.latency_s * 1e3:.4g} ms",
                                  f"raise --max-latency to at least {m.latency_s * 1e3 * 1.001:.4g}ms, "
                                  "or use a faster link or device")
        raise InfeasibleError(f"no edge/cloud split reaches --min-throughput {1 / p.period_max_s:.4g} requests/s: "
                              f"the fastest plan serves {1 / m.period_s:.4g}",
                              f"lower --min-throughput to at most {0.999 / m.period_s:.4g}, "
                              "or use a faster link or device")
    bits, joint, lines = joint_check(low, dict(sol.bits))
    st.joint_drop = joint
    ctx.notes.extend(lines)
    if bits != dict(sol.bits):
        m = evaluate(low.problem, sol.on_edge, bits)
        sol = dataclasses.replace(sol, bits=bits, metrics=m, objective=m.objective_s)
    st.solution = sol
    bad = [b for b in validate(low.problem, sol) if "accuracy" not in b or joint is None]
    if bad:
        raise RuntimeError("COACH returned an invalid plan (a bug): " + "; ".join(bad))


def baselines(ctx: PlanContext) -> None:
    """Every baseline on the same problem."""
    from solvers.split_inference.baselines import BASELINES

    for base in BASELINES:
        ctx.state.baselines[base.name] = base.solve(ctx.state.lowered.problem)


def robust(ctx: PlanContext) -> None:
    """Keep the plan only where it holds across the spread of compute speed (the calibration's own, widened by
    --speed-spread); else take the candidate (a baseline's cut) with the smallest worst regret, and say so
    (solvers/split_inference/robust.py)."""
    from planner.families.split_inference.lowering import joint_check
    from solvers.split_inference.cost import evaluate
    from solvers.split_inference.robust import PLAN, robust_choice

    st = ctx.state
    low = st.lowered
    lo, hi, source = speed_range(low.options)
    if lo == hi == 1.0:
        return
    p = low.problem
    cands = {PLAN: st.solution, **{name: b for name, b in st.baselines.items() if not b.params.get("violations")}}
    rc = robust_choice(p, cands, low.options.objective, (lo, hi))
    what = f"compute x{lo:.2f}..x{hi:.2f} on each side"
    mine = rc.worst_regret[PLAN]
    if rc.chosen == PLAN:
        ctx.notes.append(f"checked across {source} ({what}): the plan has the smallest worst-case "
                         f"regret of the candidates ({mine - 1:.1%} behind the best at its worst corner)")
        return
    sol = cands[rc.chosen]
    bits, joint, lines = joint_check(low, dict(sol.bits))
    m = evaluate(p, sol.on_edge, bits)
    st.solution = dataclasses.replace(st.solution, on_edge=np.asarray(sol.on_edge, dtype=bool).copy(), bits=bits,
                                      metrics=m, objective=m.objective_s)
    st.joint_drop = joint
    ctx.notes.extend(lines)
    a, b = rc.worst_corner[PLAN]
    ctx.notes.append(f"robust choice over {source} ({what}): the cut of {rc.chosen} (worst {rc.worst_regret[rc.chosen] - 1:.1%} "
                     f"behind the best candidate at any corner) instead of the nominal optimum, which falls "
                     f"{mine - 1:.1%} behind at edge x{a:.2f}, cloud x{b:.2f}")


def speed_range(opts: Any) -> tuple[float, float, str]:
    """(low, high, where from) compute factors the robust choice covers: the calibration's measured spread and
    --speed-spread F (x1/F..xF), whichever is wider on each end; (1, 1, "") when neither is given."""
    lo = hi = 1.0
    sources = []
    spread = (opts.calibration or {}).get("speed_spread")
    if spread:
        lo, hi = min(lo, float(spread[0])), max(hi, float(spread[1]))
        sources.append("the calibration's spread")
    if opts.speed_spread is not None and opts.speed_spread > 1.0:
        lo, hi = min(lo, 1.0 / opts.speed_spread), max(hi, opts.speed_spread)
        sources.append(f"--speed-spread {opts.speed_spread:g}")
    return lo, hi, " and ".join(sources)


def bound(ctx: PlanContext) -> None:
    """The exact reference, where its size limits allow (it says so otherwise)."""
    from solvers.split_inference.exact import SplitExactReference

    ref = SplitExactReference()
    p = ctx.state.lowered.problem
    why = ref.unsupported(p)
    if why:
        ctx.notes.append(f"no exact reference: {why}")
        return
    opts = ctx.state.lowered.options
    ctx.state.bound = ref.solve(p, deterministic_limit=opts.exact_deterministic_limit, objective=opts.objective,
                                hint=ctx.state.solution, wall_backstop_s=opts.exact_wall_backstop_s)


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan (names, metrics, baselines, bound, plan table)."""
    from planner.families.split_inference.lowering import baseline_decisions, decisions_dict, metrics_dict
    from solvers.split_inference.baselines import baseline
    from solvers.split_inference.coach import CoachConfig, solve_plan_table

    st = ctx.state
    low, sol = st.lowered, st.solution
    p = low.problem
    fam = ctx.family
    table = []
    rng = low.options.link_range_bits_per_s
    if rng:
        levels = np.geomspace(rng[0], rng[1], low.options.table_levels)
        rows = solve_plan_table(p, [float(b) / 8 for b in levels], CoachConfig(objective=low.options.objective))
        for bw, s in zip(levels, rows):
            table.append({"uplink_bits_per_s": float(bw),
                          "cut_tensors": [p.node_names[v] for v in sorted(s.bits)],
                          "bits": [int(s.bits[v]) for v in sorted(s.bits)],
                          "edge_nodes_count": int(np.asarray(s.on_edge).sum()),
                          "period_ms": s.metrics.period_s * 1e3, "latency_ms": s.metrics.latency_s * 1e3,
                          "objective_ms": s.objective * 1e3,
                          "predicted": metrics_dict(s.metrics, low.accuracy_kind)})
    base = {name: BaselineResult(baseline(name).description, {k: v for k, v in b.params.items()
                                                              if k not in ("baseline", "cut_tensors", "violations")},
                                 metrics_dict(b.metrics, low.accuracy_kind), {}, baseline_decisions(low, b))
            for name, b in st.baselines.items()}
    pred = metrics_dict(sol.metrics, low.accuracy_kind, st.joint_drop)
    objective = low.options.objective
    metric, sense = OBJECTIVE_METRICS[objective]
    bnd = None
    if st.bound is not None:
        ref = st.bound
        seconds = float(ref.params["bound_s"])
        value = (1.0 / seconds if seconds > 0 else math.inf) if metric == "throughput_rps" else seconds * 1e3
        if not (math.isfinite(value) and value > 0):
            ctx.notes.append(f"no bound: {ref.params['kind']} proved nothing above 0 within "
                             f"{low.options.exact_deterministic_limit:g} deterministic s")
        else:
            # gap >= 0 when the plan is worse than the bound (above it for a minimum, below it for a maximum)
            gap = (value - pred[metric]) / value if sense == "max" else (pred[metric] - value) / value
            kind = ref.params["kind"]    # says "reference, not a bound" where the enumeration was partial
            # the figures of the reference's own plan only where it is the optimum (else they are an incumbent)
            optimal = ref.status.value == "OPTIMAL" and ref.params.get("is_bound", True)
            bnd = Bound(value=value, kind=kind, gap=gap,
                        predicted=metrics_dict(ref.metrics, low.accuracy_kind) if optimal else {metric: value})
    s, hw, cloud = ctx.spec, ctx.hardware, low.cloud
    prof = st.graph_profile
    ctx.plan = Plan(
        family=fam.name,
        model=ModelRef(s.name, s.fingerprint(ctx.request.tiny), s.source, num_params=prof.num_params,
                       dtype=prof.dtype, tiny=ctx.request.tiny),
        hardware=hardware_ref(hw, "edge"),
        extra_hardware=(hardware_ref(cloud, "cloud"),),
        solver=SolverInfo(name="COACH (divide and conquer over cuts, bit floors and ceiling)", status=sol.status.value,
                          config={"objective": objective, "epsilon": p.epsilon, "bits": list(p.bits_options)},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=len(sol.trace), trace=solver_trace(sol.trace, limit=20)),
        objective=Objective(metric, sense, pred[metric]),
        decisions=decisions_dict(low, sol, dict(sol.bits), table),
        predicted=pred,
        baselines=base,
        bound=bnd,
        inputs={"scenario_reason": ctx.scenario_reason, "accuracy": low.accuracy_kind,
                "link": {"uplink_bits_per_s": p.bandwidth_bytes_per_s * 8, "rtt_ms": p.rtt_s * 1e3},
                **({"calibration": dict(low.options.calibration_record)} if low.options.calibration_record else {})},
        constraints={"epsilon": p.epsilon, "t_max_ms": p.t_max_s * 1e3 if np.isfinite(p.t_max_s) else None,
                     "min_throughput_rps": 1.0 / p.period_max_s if np.isfinite(p.period_max_s) else None,
                     "edge_memory_bytes": p.edge_memory_bytes},
        notes=tuple(dict.fromkeys(ctx.notes)),
    )
