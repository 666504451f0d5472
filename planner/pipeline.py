"""The planning pipeline as a flat list of phases: resolve -> profile -> scenario -> lower -> solve ->
baselines -> bound -> simulate -> lift -> validate.

Each phase reads and extends a `PlanContext`; `plan()` runs them in order and returns the Plan plus
what the CLI should tell the user (the scenario choice and why, notes).
"""
from __future__ import annotations

import logging
import time

import numpy as np
from dataclasses import dataclass, field
from typing import Any, Callable

from core.errors import PlannerError
from planner.registry import FAMILIES, family, resolve_hardware, resolve_model
from planner.schema import BaselineResult, Bound, HardwareRef, ModelRef, Objective, Plan, SolverInfo
from planner.units import fmt_bytes

log = logging.getLogger(__name__)


@dataclass
class PlanRequest:
    """What the user asked for on the command line."""

    model: str
    hardware: str
    scenario: str | None = None
    cloud: str | None = None
    link: str | None = None
    clients: str | None = None
    record_timing: bool = False
    tiny: bool = False   # plan the small same-architecture model (the one that runs here)
    moe: Any = None      # MoeOffloadOptions
    split: Any = None    # SplitOptions


@dataclass
class PlanContext:
    """State passed between phases."""

    request: PlanRequest
    spec: Any = None
    hardware: Any = None
    structure: Any = None
    family: str = ""
    scenario_reason: str = ""
    lowered: Any = None
    solution: Any = None
    baselines: dict[str, Any] = field(default_factory=dict)
    bound: Any = None
    simulated: dict[str, Any] = field(default_factory=dict)
    plan: Plan | None = None
    graph_profile: Any = None
    cloud: Any = None
    joint_drop: float | None = None
    replaced_by: str | None = None
    notes: list[str] = field(default_factory=list)
    phase_times_s: dict[str, float] = field(default_factory=dict)


def resolve_inputs(ctx: PlanContext) -> None:
    """Model and hardware names -> catalog entries (one-line errors with the closest names)."""
    ctx.spec = resolve_model(ctx.request.model)
    ctx.hardware = resolve_hardware(ctx.request.hardware)


def profile(ctx: PlanContext) -> None:
    """Model structure on the meta device (no weights allocated)."""
    from profilers.graph import profile_model

    if ctx.structure is None:
        ctx.structure = profile_model(ctx.spec, tiny=ctx.request.tiny, with_graph=False).moe


def choose_scenario(ctx: PlanContext) -> None:
    """The family: forced by --scenario, else inferred from the flags and the model."""
    req = ctx.request
    if req.scenario:
        ctx.family = family(req.scenario).name
        ctx.scenario_reason = "forced by --scenario"
    elif req.cloud or req.link:
        ctx.family = family("split-inference").name
        ctx.scenario_reason = "--cloud/--link given: edge/cloud split inference"
    elif req.clients:
        ctx.family = family("fed-lora").name
        ctx.scenario_reason = "--clients given: federated fine-tuning"
    else:
        profile(ctx)
        if ctx.structure is None:
            raise PlannerError(
                f"no scenario applies to the dense model {ctx.spec.name} on {ctx.hardware.name} alone",
                "pass --cloud HW --link RATE for split inference, or --clients FILE for federated fine-tuning")
        s = ctx.structure
        total = s.non_expert_bytes + s.bytes_per_expert * s.num_experts * len(s.moe_layers)
        fits = total <= ctx.hardware.memory_bytes
        ctx.family = family("moe-offload").name
        ctx.scenario_reason = (
            f"{ctx.spec.name} is an MoE model whose weights ({fmt_bytes(total)}) "
            + (f"fit {ctx.hardware.name} ({fmt_bytes(ctx.hardware.memory_bytes)}): the plan keeps every expert resident"
               if fits else f"do not fit {ctx.hardware.name} ({fmt_bytes(ctx.hardware.memory_bytes)}): expert offloading"))
    if ctx.family == "moe-offload":
        profile(ctx)
        if ctx.structure is None:
            raise PlannerError(f"{ctx.spec.name} has no MoE layers, so moe-offload does not apply",
                               "pick an MoE model (e.g. mixtral-8x7b) or another --scenario")


def lower(ctx: PlanContext) -> None:
    """Build the family's numeric problem."""
    from planner.lowering.moe_offload import MoeOffloadOptions, lower as lower_moe

    opts = ctx.request.moe or MoeOffloadOptions()
    timing = None
    if opts.calibrate and ctx.family == "moe-offload":
        if not ctx.request.tiny:
            raise PlannerError("--calibrate times the model on this CPU, and only tiny models run here",
                               "add --tiny, or calibrate the hardware with `planner hardware measure`")
        from profilers.models import build_model
        from profilers.timing import calibrate_moe_decode

        timing = calibrate_moe_decode(build_model(ctx.spec, tiny=True).module)
    ctx.lowered = lower_moe(ctx.structure, ctx.spec.name, ctx.hardware, opts, measured_timing=timing)
    ctx.notes.extend(ctx.lowered.notes)


def solve(ctx: PlanContext) -> None:
    """Run MoEpic and check its answer against every constraint."""
    from solvers.moe_offload.moepic import MoEpicConfig, solve as moepic
    from solvers.moe_offload.validate import validate

    ctx.solution = moepic(ctx.lowered.problem, MoEpicConfig(inner=ctx.lowered.options.inner,
                                                            cpu_misses=ctx.lowered.options.cpu_misses))
    bad = validate(ctx.lowered.problem, ctx.solution)
    if bad:
        raise RuntimeError("MoEpic returned an invalid plan (a bug): " + "; ".join(bad))


def baselines(ctx: PlanContext) -> None:
    """Every baseline on the same problem."""
    from solvers.moe_offload.baselines import BASELINES
    from solvers.moe_offload.validate import validate

    for name, fn in BASELINES.items():
        sol = fn(ctx.lowered.problem)
        if sol is None:
            ctx.notes.append(f"baseline {name} skipped: {ctx.hardware.name} has no host memory bandwidth figure")
            continue
        bad = validate(ctx.lowered.problem, sol)
        if bad:
            raise RuntimeError(f"baseline {name} is invalid (a bug): " + "; ".join(bad))
        ctx.baselines[name] = sol


def bound(ctx: PlanContext) -> None:
    """Lower bound: perfect prediction and a clairvoyant (Belady) cache, optimised the same way, exact inner."""
    from solvers.moe_offload.moepic import MoEpicConfig, solve as moepic

    ctx.bound = moepic(ctx.lowered.problem, MoEpicConfig(inner="scan", policy="belady", perfect_prediction=True,
                                                         cpu_misses=ctx.lowered.options.cpu_misses))


def simulate(ctx: PlanContext) -> None:
    """Labelled simulator on the plan, every baseline and the bound."""
    from planner.lowering.moe_offload import simulate_solution

    low = ctx.lowered
    ctx.simulated["plan"] = simulate_solution(low, ctx.solution)
    for name, sol in ctx.baselines.items():
        ctx.simulated[name] = simulate_solution(low, sol)
    ctx.simulated["bound"] = simulate_solution(low, ctx.bound, perfect_prediction=True)


IN_SPACE_BASELINES = ("prefetch_only", "cache_only", "uniform_split", "adapmoe_dp")


def verify(ctx: PlanContext) -> None:
    """Keep the plan only if the simulator agrees it is the best configuration of its own space.

    MoEpic optimises the analytic model; where that model is off by a percent (expected-value link
    times), a baseline that lies in the plan space (LCP cache, GPU experts; llama.cpp layers too when
    CPU-miss layers are allowed) can simulate faster. Then that configuration becomes the plan and a
    note says so: the user gets the better plan, and the benchmark counts how often this happens.
    """
    import dataclasses

    names = list(IN_SPACE_BASELINES)
    if ctx.solution.cpu_layers is not None or (ctx.lowered.options.cpu_misses and "llamacpp_cpu_moe" in ctx.baselines):
        names.append("llamacpp_cpu_moe")
    plan_sim = ctx.simulated["plan"].tpot_s
    best = min((n for n in names if n in ctx.baselines), key=lambda n: ctx.simulated[n].tpot_s, default=None)
    if best is None or ctx.simulated[best].tpot_s >= plan_sim * (1 - 1e-9):
        return
    gain = 1 - ctx.simulated[best].tpot_s / plan_sim
    ctx.notes.append(f"simulation check: the analytic optimum simulated {gain:.1%} slower than the {best} configuration, "
                     f"which lies in the plan space; the plan uses that configuration")
    ctx.replaced_by = best
    chosen = ctx.baselines[best]
    ctx.solution = dataclasses.replace(chosen, status=ctx.solution.status, trace=ctx.solution.trace,
                                       wall_time_s=ctx.solution.wall_time_s, params={"selected_by_simulation": best})
    ctx.simulated["plan"] = ctx.simulated[best]


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan with names, metrics, baselines and the bound."""
    from dataclasses import asdict

    from planner.lowering.moe_offload import baseline_decisions, decisions_dict, metrics_dict, sim_dict
    from solvers.moe_offload.baselines import DESCRIPTIONS
    from solvers.moe_offload.cost import evaluate

    low, sol = ctx.lowered, ctx.solution
    p = low.problem

    def pred_of(s: Any, perfect: bool = False) -> Any:
        return evaluate(p, s.thetas, s.capacities, s.prefetch, s.policy if s.policy in ("lcp", "lru", "lfu", "belady") else "lcp",
                        recall=np.ones(p.num_layers) if perfect else None, cpu_layers=s.cpu_layers)

    pred = pred_of(sol)
    sim = ctx.simulated["plan"]
    fam = FAMILIES[ctx.family]
    base = {}
    for name, b in ctx.baselines.items():
        params = {k: v for k, v in b.params.items() if k != "baseline"}
        base[name] = BaselineResult(DESCRIPTIONS[name], params, metrics_dict(pred_of(b)), sim_dict(ctx.simulated[name]),
                                    baseline_decisions(b))
    for name, b in base.items():
        if b.predicted["tpot_ms"] < pred.tpot_s * 1e3 * (1 - 1e-9):
            ctx.notes.append(f"baseline {name} is predicted {pred.tpot_s * 1e3 / b.predicted['tpot_ms']:.2f}x faster than "
                             f"the plan: its configuration lies outside the plan space ({b.description})")
    bpred = pred_of(ctx.bound, perfect=True)
    bound_ms = bpred.tpot_s * 1e3
    plan_ms = pred.tpot_s * 1e3
    bnd = Bound(value=bound_ms, kind="perfect prediction + clairvoyant (Belady) cache, optimised over budgets and theta",
                gap=(plan_ms - bound_ms) / bound_ms, predicted=metrics_dict(bpred), simulated=sim_dict(ctx.simulated["bound"]))
    s = ctx.spec
    hw = ctx.hardware
    trace = low.trace
    solver_trace = [{"phase": e.phase, "iteration": e.iteration, **e.values} for e in sol.trace
                    if e.phase != "inner"]
    inner = [e.values for e in sol.trace if e.phase == "inner"]
    if inner:
        solver_trace.insert(0, {"phase": "inner", "layers": len(inner),
                                "max_ratio_rounds": max(v["ratio_rounds"] for v in inner),
                                "max_hide_rounds": max(v["hide_rounds"] for v in inner)})
    ctx.plan = Plan(
        family=ctx.family,
        model=ModelRef(s.name, s.fingerprint(ctx.request.tiny), s.source, num_params=int(ctx.structure.non_expert_params
                       + ctx.structure.params_per_expert * ctx.structure.num_experts * len(ctx.structure.moe_layers)),
                       dtype="fp32" if ctx.request.tiny else s.dtype, tiny=ctx.request.tiny),
        hardware=HardwareRef(hw.name, hw.fingerprint(), "device", hw.memory_bytes, hw.source.split("\n")[0][:200]),
        solver=SolverInfo(name=(f"{fam.method} (fixed point + divide and conquer)" if low.options.inner == "fixed_point"
                                else f"{fam.method} (exact inner scan + divide and conquer)")
                          + (" + CPU-miss layers" if low.options.cpu_misses and p.host_expert_compute_s is not None else ""),
                          status=sol.status.value,
                          config={"inner": low.options.inner, "policy": sol.policy, "budget_unit_bytes": p.budget_unit_bytes,
                                  "cpu_misses": bool(low.options.cpu_misses and p.host_expert_compute_s is not None),
                                  "theta_granularity": p.theta_granularity, "k_prefetch": p.k_prefetch},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=len(sol.trace), trace=tuple(solver_trace)),
        objective=Objective(fam.objective_metric, fam.objective_sense, plan_ms),
        decisions=decisions_dict(low, sol, pred, sim),
        predicted=metrics_dict(pred),
        simulated=sim_dict(sim),
        baselines=base,
        bound=bnd,
        inputs={"trace": {"source": trace.source, "fingerprint": trace.fingerprint(), "tokens": trace.num_tokens,
                          "params": dict(trace.params)},
                "workload": {"context_tokens": low.options.context_tokens, "batch": low.options.batch,
                             "phase": "decode"},
                "scenario_reason": ctx.scenario_reason},
        constraints={"expert_cache_budget_bytes": low.memory.expert_cache_budget_bytes},
        notes=tuple(dict.fromkeys(ctx.notes)),
    )


def validate_plan(ctx: PlanContext) -> None:
    """The lifted plan must pass its own family's plan validator."""
    from planner.lowering.moe_offload import validate_plan_decisions

    bad = validate_plan_decisions(dict(ctx.plan.decisions), dict(ctx.plan.constraints))
    if bad:
        raise RuntimeError("lifted plan violates its constraints (a bug): " + "; ".join(bad))


# ------------------------------------------------------------------ split-inference phases
def split_profile(ctx: PlanContext) -> None:
    """The torch.export graph with per-node costs (meta device for random-weight models)."""
    from profilers.graph import profile_model

    ctx.graph_profile = profile_model(ctx.spec, tiny=ctx.request.tiny)


def split_lower(ctx: PlanContext) -> None:
    """Graph + edge/cloud hardware + link -> the COACH problem (accuracy measured for candidate cut tensors)."""
    from planner.lowering.split_inference import SplitOptions, lower as lower_split

    opts = ctx.request.split or SplitOptions()
    ctx.cloud = resolve_hardware(opts.cloud)
    ctx.lowered = lower_split(ctx.spec, ctx.graph_profile, ctx.hardware, ctx.cloud, opts)
    ctx.notes.extend(ctx.lowered.notes)


def split_solve(ctx: PlanContext) -> None:
    """COACH, then the joint accuracy check on real data with the repair loop (the solver stays pure)."""
    from planner.lowering.split_inference import joint_check
    from solvers.split_inference.coach import CoachConfig, solve as coach
    from solvers.split_inference.cost import evaluate
    from solvers.split_inference.validate import validate

    low = ctx.lowered
    ctx.solution = coach(low.problem, CoachConfig())
    bits, joint, lines = joint_check(low, dict(ctx.solution.bits))
    ctx.joint_drop = joint
    ctx.notes.extend(lines)
    if bits != dict(ctx.solution.bits):
        import dataclasses

        m = evaluate(low.problem, ctx.solution.on_edge, bits)
        ctx.solution = dataclasses.replace(ctx.solution, bits=bits, metrics=m, objective=m.objective_s)
    bad = [b for b in validate(low.problem, ctx.solution) if "accuracy" not in b or joint is None]
    if bad:
        raise RuntimeError("COACH returned an invalid plan (a bug): " + "; ".join(bad))
    if not ctx.solution.feasible:
        ctx.notes.append("no cut meets the latency bound: the lowest-latency cut is returned, flagged infeasible "
                         + str(ctx.solution.params.get("fix", "")))


def split_baselines(ctx: PlanContext) -> None:
    """Every baseline on the same problem."""
    from solvers.split_inference.baselines import BASELINES

    for name, fn in BASELINES.items():
        ctx.baselines[name] = fn(ctx.lowered.problem)


def split_bound(ctx: PlanContext) -> None:
    """Exact reference: enumeration up to 20 nodes, else CP-SAT (time-limited) under the single-tensor bubble model."""
    from solvers.common import Status
    from solvers.split_inference.exact import solve_cpsat, solve_enumerate

    p = ctx.lowered.problem
    if p.num_nodes <= 20:
        ctx.bound = ("exhaustive enumeration of every cut x bit vector (<= 3 quantised tensors)", solve_enumerate(p))
    elif p.num_nodes <= 600:
        sol = solve_cpsat(p, time_limit_s=ctx.lowered.options.exact_time_limit_s, time_scale=1e9)  # ns: no rounding of tiny nodes
        kind = "CP-SAT MILP (single-tensor bubble model, additive accuracy)"
        kind += ", optimal" if sol.status == Status.OPTIMAL else f", {sol.status.value}: lower bound of the MILP"
        ctx.bound = (kind, sol)
    else:
        ctx.bound = None
        ctx.notes.append(f"no exact reference: {p.num_nodes} nodes is above the 600-node CP-SAT limit")


def split_lift(ctx: PlanContext) -> None:
    """Solution -> Plan (names, metrics, baselines, bound, plan table)."""
    from planner.lowering.split_inference import baseline_decisions, decisions_dict, metrics_dict
    from solvers.split_inference.baselines import DESCRIPTIONS
    from solvers.split_inference.coach import solve_plan_table

    low, sol = ctx.lowered, ctx.solution
    p = low.problem
    fam = FAMILIES[ctx.family]
    table = []
    rng = low.options.link_range_bits_per_s
    if rng:
        levels = np.geomspace(rng[0], rng[1], low.options.table_levels)
        for bw, s in zip(levels, solve_plan_table(p, [float(b) / 8 for b in levels])):
            table.append({"uplink_bits_per_s": float(bw),
                          "cut_tensors": [p.node_names[v] for v in sorted(s.bits)],
                          "bits": [int(s.bits[v]) for v in sorted(s.bits)],
                          "edge_nodes_count": int(np.asarray(s.on_edge).sum()),
                          "period_ms": s.metrics.period_s * 1e3, "latency_ms": s.metrics.latency_s * 1e3,
                          "objective_ms": s.objective * 1e3})
    base = {name: BaselineResult(DESCRIPTIONS[name], {k: v for k, v in b.params.items()
                                                      if k not in ("baseline", "cut_tensors", "violations")},
                                 metrics_dict(b.metrics, low.accuracy_kind), {}, baseline_decisions(low, b))
            for name, b in ctx.baselines.items()}
    pred = metrics_dict(sol.metrics, low.accuracy_kind, ctx.joint_drop)
    bnd = None
    if ctx.bound is not None:
        kind, ref = ctx.bound
        value = float(ref.params.get("bound_s", ref.objective)) * 1e3
        bnd = Bound(value=value, kind=kind, gap=(pred["objective_ms"] - value) / value if value > 0 else 0.0,
                    predicted=metrics_dict(ref.metrics, low.accuracy_kind))
    s, hw = ctx.spec, ctx.hardware
    ctx.plan = Plan(
        family=ctx.family,
        model=ModelRef(s.name, s.fingerprint(ctx.request.tiny), s.source, num_params=ctx.graph_profile.num_params,
                       dtype=ctx.graph_profile.dtype, tiny=ctx.request.tiny),
        hardware=HardwareRef(hw.name, hw.fingerprint(), "edge", hw.memory_bytes, hw.source.split("\n")[0][:200]),
        extra_hardware=(HardwareRef(ctx.cloud.name, ctx.cloud.fingerprint(), "cloud", ctx.cloud.memory_bytes,
                                    ctx.cloud.source.split("\n")[0][:200]),),
        solver=SolverInfo(name="COACH (divide and conquer over cuts, bit floors and ceiling)", status=sol.status.value,
                          config={"objective": "coach", "epsilon": p.epsilon, "bits": list(p.bits_options)},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=len(sol.trace), trace=tuple({"phase": e.phase, "iteration": e.iteration, **e.values}
                                                                 for e in sol.trace[:20])),
        objective=Objective(fam.objective_metric, fam.objective_sense, pred["objective_ms"]),
        decisions=decisions_dict(low, sol, dict(sol.bits), table),
        predicted=pred,
        baselines=base,
        bound=bnd,
        inputs={"scenario_reason": ctx.scenario_reason, "accuracy": low.accuracy_kind,
                "link": {"uplink_bits_per_s": p.bandwidth_bytes_per_s * 8, "rtt_ms": p.rtt_s * 1e3}},
        constraints={"epsilon": p.epsilon, "t_max_ms": p.t_max_s * 1e3 if np.isfinite(p.t_max_s) else None,
                     "edge_memory_bytes": p.edge_memory_bytes},
        notes=tuple(dict.fromkeys(ctx.notes)),
    )


def split_validate(ctx: PlanContext) -> None:
    """The lifted plan must pass its family's plan validator."""
    from planner.lowering.split_inference import validate_plan_decisions

    bad = validate_plan_decisions(dict(ctx.plan.decisions), dict(ctx.plan.predicted))
    if bad:
        raise RuntimeError("lifted plan violates its constraints (a bug): " + "; ".join(bad))


COMMON_PHASES: list[tuple[str, Callable[[PlanContext], None]]] = [
    ("resolve", resolve_inputs),
    ("scenario", choose_scenario),
]
FAMILY_PHASES: dict[str, list[tuple[str, Callable[[PlanContext], None]]]] = {
    "moe-offload": [("profile", profile), ("lower", lower), ("solve", solve), ("baselines", baselines),
                    ("bound", bound), ("simulate", simulate), ("verify", verify), ("lift", lift),
                    ("validate", validate_plan)],
    "split-inference": [("profile", split_profile), ("lower", split_lower), ("solve", split_solve),
                        ("baselines", split_baselines), ("bound", split_bound), ("lift", split_lift),
                        ("validate", split_validate)],
}


def plan(request: PlanRequest, on_phase: Callable[[str], None] | None = None) -> PlanContext:
    """Run the common phases, then the chosen family's; returns the context (ctx.plan is the result)."""
    ctx = PlanContext(request)

    def run(phases: list[tuple[str, Callable[[PlanContext], None]]]) -> None:
        for name, fn in phases:
            if on_phase:
                on_phase(name)
            t0 = time.perf_counter()
            fn(ctx)
            ctx.phase_times_s[name] = ctx.phase_times_s.get(name, 0.0) + time.perf_counter() - t0

    run(COMMON_PHASES)
    run(FAMILY_PHASES[ctx.family])
    return ctx


def plan_validator(plan_obj: Plan) -> list[str]:
    """Family dispatch for `planner diff`: the plan's constraint violations."""
    if plan_obj.family == "moe-offload":
        from planner.lowering.moe_offload import validate_plan_decisions

        return validate_plan_decisions(dict(plan_obj.decisions), dict(plan_obj.constraints))
    if plan_obj.family == "split-inference":
        from planner.lowering.split_inference import validate_plan_decisions as validate_split

        return validate_split(dict(plan_obj.decisions), dict(plan_obj.predicted))
    return []
