"""moe-offload phases: lower -> solve -> baselines -> bound -> simulate -> verify -> lift.

Each phase reads and extends `ctx.state`, a `MoeState`; `lift` sets `ctx.plan`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from core.errors import PlannerError
from solvers.common import InfeasibleError
from planner.families.base import PlanContext
from planner.families.moe_offload.lowering import MoeLowered
from planner.plan_refs import hardware_ref, solver_trace
from planner.schema import BaselineResult, Bound, ModelRef, Objective, Plan, SolverInfo


@dataclass
class MoeState:
    """What the moe-offload phases pass along."""

    lowered: MoeLowered | None = None
    solution: Any = None
    baselines: dict[str, Any] = field(default_factory=dict)
    bound: Any = None
    floor: Any = None             # the physical floor (FloorResult) where the host may compute
    prefill: dict[str, Any] = field(default_factory=dict)    # name -> (analytic PrefillResult, simulated result)
    dual: dict[str, Any] = field(default_factory=dict)       # dual mode: target, budget found, fastest figure
    simulated: dict[str, Any] = field(default_factory=dict)
    replaced_by: str | None = None
    robust: dict[str, Any] = field(default_factory=dict)      # --robust: the choice and every candidate's regret


def lower(ctx: PlanContext) -> None:
    """Build the MoEpic problem (calibrated timing from a calibration file where given)."""
    from planner.families.moe_offload.lowering import lower as lower_moe

    opts = ctx.options
    ctx.state = MoeState()
    structure = ctx.moe_structure()
    if structure is None:
        raise PlannerError(f"{ctx.spec.name} has no MoE layers, so moe-offload does not apply",
                           "pick an MoE model (e.g. mixtral-8x7b) or another --scenario")
    ctx.state.lowered = lower_moe(structure, ctx.spec.name, ctx.require_hardware(), opts,
                                  measured_timing=opts.measured_timing)
    ctx.notes.extend(ctx.state.lowered.notes)


def solve(ctx: PlanContext) -> None:
    """Run MoEpic and check its answer against every constraint."""
    from solvers.moe_offload.moepic import solve as moepic
    from solvers.moe_offload.validate import validate

    st = ctx.state
    opts = st.lowered.options
    config = solver_config(st.lowered)
    target = opts.target_tpot_ms if opts.target_tpot_ms is not None else opts.target_ttft_ms
    if target is not None:
        dual_mode(ctx, config)
    st.solution = moepic(st.lowered.problem, config)
    bad = validate(st.lowered.problem, st.solution)
    if bad:
        raise RuntimeError("MoEpic returned an invalid plan (a bug): " + "; ".join(bad))
    if opts.robust:
        robust_choice(ctx, config)


def robust_choice(ctx: PlanContext, config: Any) -> None:
    """--robust: the plan with the least worst-case regret over the uncertain constants (docs §13)."""
    from solvers.moe_offload.moepic import solve as moepic
    from solvers.moe_offload.sensitivity import (ROBUST_CONTENTION, ROBUST_HOST_EFFICIENCY, ROBUST_LINK_SCALE, grid,
                                                 robust)

    st = ctx.state
    p = st.lowered.problem
    if not (st.lowered.options.cpu_misses and p.host_expert_compute_s is not None and p.host_dram_bytes_per_s):
        raise PlannerError("--robust needs a host that computes experts (a profile with host memory bandwidth)",
                           "drop --robust, or drop --no-cpu-experts / use a profile with host_memory_bandwidth")
    points = grid(ROBUST_HOST_EFFICIENCY, ROBUST_LINK_SCALE, ROBUST_CONTENTION)
    choice = robust(p, {"plan at the nominal constants": st.solution}, lambda q: moepic(q, config), points)
    nominal = "plan at the nominal constants"
    st.robust = {"chosen": choice.chosen, "worst_regret": dict(choice.worst_regret), "worst_at": dict(choice.worst_at),
                 "points": [x.label() for x in points]}
    if choice.chosen == nominal:
        ctx.notes.append(f"--robust: the nominal plan has the least worst-case regret ({choice.worst_regret[nominal]:.1%}, "
                         f"at {choice.worst_at[nominal]}) over {len(points)} settings of the uncertain constants")
        return
    ctx.notes.append(f"--robust: the plan solved at {choice.chosen.removeprefix('plan solved at ')} has worst-case regret "
                     f"{choice.worst_regret[choice.chosen]:.1%} over {len(points)} settings of the uncertain constants "
                     f"(the nominal plan {choice.worst_regret[nominal]:.1%}, at {choice.worst_at[nominal]}); it is the plan")
    # its analytic figures at the nominal constants
    from solvers.moe_offload.cost import evaluate

    sol = choice.solution
    m = evaluate(p, sol.thetas, sol.capacities, sol.prefetch, sol.policy, cpu_layers=sol.cpu_layers,
                 split=sol.split_fraction)
    st.solution = dataclasses.replace(sol, metrics=m, objective=m.tpot_s, params={**dict(sol.params), "robust": True})


def solver_config(low: MoeLowered) -> Any:
    """MoEpic's settings from the options: the plan space, and the prefill weight of the objective
    (end-to-end: prefill counted once per N - 1 decode steps; ttft: prefill dominates; tpot: decode only)."""
    from solvers.moe_offload.moepic import MoEpicConfig

    opts = low.options
    weight = {"e2e": 1.0 / max(opts.output_tokens - 1, 1), "ttft": 1e3, "tpot": 0.0}[opts.objective]
    return MoEpicConfig(inner=opts.inner, cpu_misses=opts.cpu_misses, split_misses=opts.cpu_misses and opts.split_misses,
                        prefill_weight=weight)


def dual_mode(ctx: PlanContext, config: Any) -> None:
    """MoEpic's second problem: shrink the expert budget to the smallest that meets --target-tpot/--target-ttft,
    or keep the full budget and say which figure the fastest plan reaches."""
    from solvers.moe_offload.moepic import MoEpicConfig, smallest_budget

    st = ctx.state
    low = st.lowered
    opts = low.options
    metric = "tpot" if opts.target_tpot_ms is not None else "ttft"
    target_ms = opts.target_tpot_ms if metric == "tpot" else opts.target_ttft_ms
    decode_only = dataclasses.replace(config, prefill_weight=0.0)
    budget, best = smallest_budget(low.problem, decode_only if metric == "tpot" else MoEpicConfig(), target_ms / 1e3, metric)
    full = low.problem.budget_bytes
    st.dual = {"metric": f"{metric}_ms", "target_ms": target_ms, "budget_bytes": budget, "available_bytes": full,
               "fastest_ms": best * 1e3}
    if budget is None:
        flag = "--target-tpot" if metric == "tpot" else "--target-ttft"
        raise InfeasibleError(f"no expert budget meets {metric.upper()} <= {target_ms:.4g} ms on {ctx.hardware.name}: the "
                              f"fastest plan (the whole {full / 2**30:.2f} GiB budget) reaches {best * 1e3:.4g} ms",
                              f"use {flag} {best * 1e3:.4g}ms or more, or a faster device")
    ctx.notes.append(f"dual mode: {budget / 2**30:.2f} GiB of expert cache (of {full / 2**30:.2f} GiB available) is the "
                     f"smallest budget meeting {metric.upper()} <= {target_ms:.4g} ms")
    memory = dataclasses.replace(low.memory, expert_cache_budget_bytes=int(budget),
                                 budget_source=f"dual mode: the smallest meeting {metric.upper()} <= {target_ms:.4g} ms")
    st.lowered = dataclasses.replace(low, problem=dataclasses.replace(low.problem, budget_bytes=budget), memory=memory)


def requests(ctx: PlanContext) -> None:
    """Whole requests: the prefill of the prompt (TTFT) for the plan, every prefill rule and every baseline,
    analytic and simulated (labelled)."""
    from planner.families.moe_offload.lowering import (PREFILL_BASELINES, prefill_rule_result,
                                                       simulate_prefill_solution)

    st = ctx.state
    low = st.lowered
    if low.problem.prompt_tokens <= 0:
        return
    plan = prefill_rule_result(low, st.solution, "plan")
    st.prefill["plan"] = (plan, simulate_prefill_solution(low, st.solution, "plan", plan))
    for name, (rule, _desc) in PREFILL_BASELINES.items():
        a = prefill_rule_result(low, st.solution, rule)
        st.prefill[name] = (a, simulate_prefill_solution(low, st.solution, rule, a))
    for name, sol in st.baselines.items():
        if name not in st.simulated:
            continue
        rule = "llamacpp" if name == "llamacpp_cpu_moe" else "decode_plan"
        a = prefill_rule_result(low, sol, rule)
        st.prefill[name] = (a, simulate_prefill_solution(low, sol, rule, a))


def baselines(ctx: PlanContext) -> None:
    """Every baseline on the same problem, each checked by the same validator."""
    from solvers.moe_offload.baselines import BASELINES
    from solvers.moe_offload.validate import validate

    p = ctx.state.lowered.problem
    for base in BASELINES:
        why = base.skip_reason(p)
        if why:
            ctx.notes.append(f"baseline {base.name} skipped: {ctx.hardware.name} {why}")
            continue
        sol = base.solve(p)
        bad = validate(p, sol)
        if bad:
            raise RuntimeError(f"baseline {base.name} is invalid (a bug): " + "; ".join(bad))
        ctx.state.baselines[base.name] = sol


def bound(ctx: PlanContext) -> None:
    """Lower bound. With host compute allowed: the physical floor over the simulator's window (host DRAM,
    link and device, clairvoyant cache, any budget split; solvers/moe_offload/floor.py). GPU-only: perfect
    prediction and a clairvoyant (Belady) cache, optimised over budgets and theta with the exact inner scan."""
    from planner.families.moe_offload.lowering import sim_window
    from solvers.moe_offload.floor import FloorConfig, physical_floor
    from solvers.moe_offload.moepic import MoEpicConfig, solve as moepic

    st = ctx.state
    low = st.lowered
    p = low.problem
    if low.options.cpu_misses and p.host_expert_compute_s is not None and p.host_dram_bytes_per_s:
        import solvers.moe_offload.floor as floor_module
        from planner.families.moe_offload.replay_cache import cached_dataclass, key_of

        window = sim_window(low)
        cfg = FloorConfig(max_oracles=floor_oracles(window))
        key = key_of("moe_floor", floor_module.__file__, p, window, cfg)
        st.floor = cached_dataclass("moe_floor", key, floor_module.FloorResult, lambda: physical_floor(p, window, cfg))
        return
    st.bound = moepic(p, MoEpicConfig(inner="scan", policy="belady", perfect_prediction=True))


def floor_oracles(window: Any) -> int:
    """Dual evaluations of the floor: each solves one min-cost flow per layer over the window, so large
    windows get fewer (every evaluation is a valid bound; fewer only loosen it)."""
    requests = int(window.shape[0] * window.shape[1] * window.shape[2])
    return int(min(24, max(6, 3_000_000 // max(requests, 1))))


STRONGEST = 2   # baselines replayed by default besides llama.cpp's: the ones the cost model predicts fastest


def replayed_baselines(ctx: PlanContext) -> list[str]:
    """Which baselines the simulator replays: all with --all-baselines; by default llama.cpp's `--n-cpu-moe` (the
    headline comparison), the STRONGEST baselines with the lowest predicted TPOT and the STRONGEST of the plan's own
    space (for the simulation check), so a plan answers in seconds.
    The others keep their analytic figures and say they were not replayed."""
    st = ctx.state
    names = list(st.baselines)
    if st.lowered.options.all_baselines:
        return names
    from solvers.moe_offload.baselines import BASELINES, HOST_BASELINES

    ranked = sorted(names, key=lambda n: (st.baselines[n].metrics.tpot_s, n))
    # the strongest in the plan's own space too, so the simulation check (verify) has something to check against
    cpu_allowed = st.lowered.options.cpu_misses
    in_space = {b.name for b in BASELINES if b.in_space and (b.name not in HOST_BASELINES or cpu_allowed)}
    pick = ([n for n in ("llamacpp_cpu_moe",) if n in names] + [n for n in ranked if n != "llamacpp_cpu_moe"][:STRONGEST]
            + [n for n in ranked if n in in_space][:STRONGEST])
    return [n for n in names if n in pick]


def simulate(ctx: PlanContext) -> None:
    """Labelled simulator, on the held-out sequences, for the plan, the replayed baselines and the bound; the plan
    also on its calibration sequences (the in-sample figure, shown beside the held-out one)."""
    from planner.families.moe_offload.lowering import simulate_solution

    st = ctx.state
    low = st.lowered
    st.simulated["plan"] = simulate_solution(low, st.solution)
    st.simulated["plan_in_sample"] = simulate_solution(low, st.solution, part="calibration")
    replay = replayed_baselines(ctx)
    skipped = [n for n in st.baselines if n not in replay]
    if skipped:
        ctx.notes.append(f"simulator replays the plan and {', '.join(replay)}; {', '.join(skipped)} keep analytic "
                         "figures only (--all-baselines replays every one)")
    for name in replay:
        sol = st.baselines[name]
        if name == "hybrimoe":
            # its prefetch depth is a tuning knob of the published system: keep the best of a small sweep
            runs = {n: (simulate_solution(low, v), v) for n, v in
                    ((n, dataclasses.replace(sol, params={**sol.params, "prefetch_size": n})) for n in (0, 1, 2))}
            best = min(runs, key=lambda n: (runs[n][0].tpot_s, n))
            st.baselines[name] = runs[best][1]
            st.simulated[name] = runs[best][0]
            continue
        st.simulated[name] = simulate_solution(low, sol)
    if st.bound is not None:
        st.simulated["bound"] = simulate_solution(low, st.bound, perfect_prediction=True)


def verify(ctx: PlanContext) -> None:
    """Keep the plan only if the simulator agrees, on the calibration sequences, that it is the best configuration of
    its own space; then report, on the held-out sequences, any in-space baseline that still simulates faster.

    MoEpic optimises the analytic model; where that model is off by a percent (expected-value link
    times), a baseline that lies in the plan space (LCP cache, GPU experts; llama.cpp layers too when
    CPU-miss layers are allowed) can simulate faster. Then that configuration becomes the plan and a
    note says so. The choice uses the calibration part only; the held-out part only reports (docs §2).
    """
    from planner.families.moe_offload.lowering import simulate_solution
    from solvers.moe_offload.baselines import BASELINES, HOST_BASELINES

    st = ctx.state
    low = st.lowered
    cpu_allowed = st.solution.cpu_layers is not None or low.options.cpu_misses
    names = [b.name for b in BASELINES if b.in_space and b.name in st.simulated
             and (b.name not in HOST_BASELINES or cpu_allowed)]
    in_sample = {n: simulate_solution(low, st.baselines[n], part="calibration") for n in names}
    plan_cal = st.simulated["plan_in_sample"].tpot_s
    best = min(names, key=lambda n: in_sample[n].tpot_s, default=None)
    if best is not None and in_sample[best].tpot_s < plan_cal * (1 - 1e-9):
        gain = 1 - in_sample[best].tpot_s / plan_cal
        ctx.notes.append(f"simulation check (calibration sequences): the analytic optimum simulated {gain:.1%} slower "
                         f"than the {best} configuration, which lies in the plan space; the plan uses that configuration")
        st.replaced_by = best
        chosen = st.baselines[best]
        st.solution = dataclasses.replace(chosen, status=st.solution.status, trace=st.solution.trace,
                                          wall_time_s=st.solution.wall_time_s, params={"selected_by_simulation": best})
        st.simulated["plan"] = st.simulated[best]
        st.simulated["plan_in_sample"] = in_sample[best]
    plan_held = st.simulated["plan"].tpot_s
    faster = [(n, 1 - st.simulated[n].tpot_s / plan_held) for n in names
              if st.simulated[n].tpot_s < plan_held * (1 - 1e-9)]
    for n, gain in faster:
        ctx.notes.append(f"held out: the in-space baseline {n} simulates {gain:.1%} faster than the plan on the held-out "
                         "sequences (the plan was chosen on the calibration sequences)")


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan with names, metrics, baselines and the bound."""
    from planner.families.moe_offload.lowering import (PREFILL_BASELINES, baseline_decisions, decisions_dict,
                                                       metrics_dict, request_metrics, sim_dict)
    from solvers.moe_offload.baselines import baseline

    st = ctx.state
    low, sol = st.lowered, st.solution
    p = low.problem
    pred = sol.metrics
    sim = st.simulated["plan"]
    fam = ctx.family
    base = {}
    n_out = int(low.options.output_tokens)
    for name, b in st.baselines.items():
        params = {k: v for k, v in b.params.items() if k != "baseline"}
        bp = metrics_dict(b.metrics)
        bs = sim_dict(st.simulated[name]) if name in st.simulated else {
            "not_replayed": "analytic figures only (the simulator replays llama.cpp's and the strongest baselines; "
                            "--all-baselines replays every one)"}
        if name in st.prefill:
            a, sp = st.prefill[name]
            bp.update(request_metrics(a.ttft_s, b.metrics.tpot_s, n_out))
            bp["prompt_tokens"] = int(p.prompt_tokens)      # a baseline's receipt says what it was planned for
            bs.update(request_metrics(sp.ttft_s, st.simulated[name].tpot_s, n_out))
        base[name] = BaselineResult(baseline(name).description, params, bp, bs, baseline_decisions(b))
    for name, (rule, desc) in PREFILL_BASELINES.items():
        if name not in st.prefill:
            continue
        a, sp = st.prefill[name]
        # the plan's decode configuration: its decode figures, this rule's prefill
        bp = {**metrics_dict(pred), **request_metrics(a.ttft_s, pred.tpot_s, n_out),
              "source": "analytic prefill model (docs §12) with the plan's decode configuration"}
        bs = {**sim_dict(sim), **request_metrics(sp.ttft_s, sim.tpot_s, n_out), "prefill_label": sp.label}
        params = {"rule": rule, "ubatch": p.ubatch} if rule in ("llamacpp", "ik_llamacpp") else {"rule": rule}
        base[name] = BaselineResult(desc, params, bp, bs,
                                    {"runtime": "simulator only (a prefill rule with the plan's decode configuration)",
                                     "prefill_streamed_per_layer": [round(l.streamed, 3) for l in a.layers]})
    for name, b in base.items():
        if name in PREFILL_BASELINES:
            continue
        if b.predicted["tpot_ms"] < pred.tpot_s * 1e3 * (1 - 1e-9):
            ctx.notes.append(f"baseline {name} is predicted {pred.tpot_s * 1e3 / b.predicted['tpot_ms']:.2f}x faster than "
                             f"the plan: its configuration lies outside the plan space ({b.description})")
    plan_pred, plan_sim = metrics_dict(pred), sim_dict(sim)
    plan_sim["tpot_ms_in_sample"] = st.simulated["plan_in_sample"].tpot_s * 1e3   # on the sequences it was chosen on
    metric = {"e2e": "e2e_ms", "ttft": "ttft_ms", "tpot": "tpot_ms"}[low.options.objective]
    if "plan" in st.prefill:
        a, sp = st.prefill["plan"]
        plan_pred.update(request_metrics(a.ttft_s, pred.tpot_s, n_out))
        plan_pred["prompt_tokens"] = int(p.prompt_tokens)
        plan_sim.update(request_metrics(sp.ttft_s, sim.tpot_s, n_out))
        plan_sim["prefill_label"] = sp.label
    else:
        metric = "tpot_ms"
    plan_ms = plan_pred[metric]
    bnd = bound_record(st, pred.tpot_s * 1e3, metric, plan_ms)
    s = ctx.spec
    structure = low.structure
    trace = low.trace
    events = [e for e in sol.trace if e.phase != "inner"]
    inner = [e.values for e in sol.trace if e.phase == "inner"]
    head = [{"phase": "inner", "layers": len(inner), "max_ratio_rounds": max(v["ratio_rounds"] for v in inner),
             "max_hide_rounds": max(v["hide_rounds"] for v in inner)}] if inner else []
    cpu = bool(low.options.cpu_misses and p.host_expert_compute_s is not None)
    split = bool(cpu and low.options.split_misses)
    ctx.plan = Plan(
        family=fam.name,
        model=ModelRef(s.name, s.fingerprint(ctx.request.tiny), s.source, num_params=int(structure.non_expert_params
                       + structure.params_per_expert * structure.num_experts * len(structure.moe_layers)),
                       dtype="fp32" if ctx.request.tiny else s.dtype, tiny=ctx.request.tiny),
        hardware=hardware_ref(ctx.hardware, "device"),
        solver=SolverInfo(name=(f"{fam.method} (fixed point + divide and conquer)" if low.options.inner == "fixed_point"
                                else f"{fam.method} (exact inner scan + divide and conquer)")
                          + (" + host-miss and split layers" if split else " + CPU-miss layers" if cpu else ""),
                          status=sol.status.value,
                          config={"inner": low.options.inner, "policy": sol.policy, "budget_unit_bytes": p.budget_unit_bytes,
                                  "cpu_misses": cpu, "split_misses": split, "theta_granularity": p.theta_granularity,
                                  "k_prefetch": p.k_prefetch},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=len(sol.trace), trace=tuple(head) + solver_trace(events)),
        objective=Objective(metric, fam.objective_sense, plan_ms),
        decisions={**request_decisions(st, decisions_dict(low, sol, pred, sim)), "constants": low.constants,
                   **({"sensitivity": sens} if (sens := sensitivity_record(st)) else {}),
                   **({"robust": st.robust} if st.robust else {})},
        predicted=plan_pred,
        simulated=plan_sim,
        baselines=base,
        bound=bnd,
        inputs={"trace": {"source": trace.source, "fingerprint": trace.fingerprint(), "tokens": trace.num_tokens,
                          "params": dict(trace.params)},
                "workload": {"context_tokens": low.options.context_tokens, "batch": low.options.batch,
                             "phase": "request" if "plan" in st.prefill else "decode",
                             "prompt_tokens": low.options.prompt_tokens, "output_tokens": low.options.output_tokens,
                             "objective": low.options.objective, **({"dual_mode": dict(st.dual)} if st.dual else {})},
                "scenario_reason": ctx.scenario_reason, **low.options.calibration_input()},
        constraints={"expert_cache_budget_bytes": low.memory.expert_cache_budget_bytes},   # the dual budget in dual mode
        notes=tuple(dict.fromkeys(ctx.notes)),
    )


def sensitivity_record(st: MoeState) -> dict[str, Any]:
    """The plan's lead over each replayed baseline across the uncertain constants (predicted; docs §13)."""
    from solvers.moe_offload.baselines import baseline
    from solvers.moe_offload.sensitivity import Point, grid, leads

    low = st.lowered
    p = low.problem
    if not (low.options.cpu_misses and p.host_expert_compute_s is not None and p.host_dram_bytes_per_s):
        return {}
    names = [n for n in st.baselines if n in st.simulated]
    nominal = Point(round(p.expert_bytes / (p.host_expert_compute_s * p.host_dram_bytes_per_s), 6), 1.0, "shared")
    points = grid()
    if nominal not in points:
        points = [nominal, *points]
    out, plan_t = leads(p, st.solution, {n: baseline(n).solve for n in names}, points, nominal)
    return {"source": "analytic cost model at each setting (docs §13); baselines re-derived by their own rule",
            "nominal": nominal.label(),
            "plan_tpot_ms": {"nominal": float(plan_t[points.index(nominal)] * 1e3), "worst": float(max(plan_t) * 1e3),
                             "best": float(min(plan_t) * 1e3)},
            "lead_vs": {n: {"nominal": l.nominal, "worst": l.worst, "best": l.best, "worst_at": l.worst_at}
                        for n, l in out.items()},
            "points": len(points)}


def request_decisions(st: MoeState, decisions: dict[str, Any]) -> dict[str, Any]:
    """Add the per-layer prefill decisions and the request shape to the decisions."""
    from planner.families.moe_offload.lowering import prefill_layers

    if "plan" not in st.prefill:
        return decisions
    low = st.lowered
    per_layer = prefill_layers(low, st.solution, st.prefill["plan"][0])
    layers = [{**lay, "prefill": pl} for lay, pl in zip(decisions["layers"], per_layer)]
    return {**decisions, "layers": layers,
            "request": {"prompt_tokens": low.options.prompt_tokens, "output_tokens": low.options.output_tokens,
                        "batch": low.options.batch, "prefill_tokens": int(low.problem.prompt_tokens),
                        "objective": low.options.objective}}


def bound_record(st: MoeState, tpot_ms: float, metric: str = "tpot_ms", plan_value: float | None = None) -> Bound:
    """The plan's bound on its objective: for TPOT the physical floor (with its binding term) or the GPU-only
    Belady bound; for TTFT and end-to-end time also a prefill lower bound (solvers/moe_offload/prefill.py)."""
    if metric == "tpot_ms":
        return _tpot_bound(st, tpot_ms)
    from solvers.moe_offload.prefill import ttft_lower_bound

    b = _tpot_bound(st, tpot_ms)
    ttft_lb = ttft_lower_bound(st.lowered.problem) * 1e3
    n = max(int(st.lowered.options.output_tokens) - 1, 0)
    value = ttft_lb if metric == "ttft_ms" else ttft_lb + n * b.value
    plan_value = plan_value if plan_value is not None else value
    return Bound(value=value, kind="prefill bound (device and host work split perfectly, link free)"
                 + ("" if metric == "ttft_ms" else f" + (N - 1) x decode bound ({b.kind})"),
                 gap=(plan_value - value) / value if value > 0 else 0.0,
                 predicted={**dict(b.predicted), metric: value, "ttft_ms_bound": ttft_lb, "tpot_ms_bound": b.value},
                 simulated=dict(b.simulated))


def _tpot_bound(st: MoeState, plan_ms: float) -> Bound:
    """The decode bound: the physical floor (with its binding term) or the GPU-only Belady bound."""
    from planner.families.moe_offload.lowering import metrics_dict, sim_dict

    if st.floor is not None:
        f = st.floor
        value = f.tpot_s * 1e3
        pred = {"tpot_ms": value, "binding": f.binding, "upper_model_ms": f.upper_model_s * 1e3,
                "admissions_per_token": f.admissions_per_token, "host_fraction": f.host_fraction,
                "oracles": f.oracles, **{k.replace("_s", "_ms"): v * 1e3 for k, v in f.terms_s.items()},
                "multipliers": dict(f.multipliers),
                "source": "Lagrangian dual over the simulator's trace window (solvers/moe_offload/floor.py)"}
        return Bound(value=value, kind="physical floor: host DRAM at peak, link, device compute; clairvoyant cache, "
                     "any budget split", gap=(plan_ms - value) / value if value > 0 else 0.0, predicted=pred)
    bpred = st.bound.metrics
    bound_ms = bpred.tpot_s * 1e3
    return Bound(value=bound_ms, kind="estimate, not a bound: the cost model with perfect prediction and a clairvoyant "
                 "(Belady) cache, optimised over budgets and theta (its configuration can simulate above it)",
                 gap=(plan_ms - bound_ms) / bound_ms, predicted=metrics_dict(bpred), simulated=sim_dict(st.simulated["bound"]))
