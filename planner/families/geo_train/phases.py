"""geo-train phases: regions -> lower -> solve -> baselines -> lift."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planner.families.base import PlanContext
from planner.schema import BaselineResult, Bound, HardwareRef, ModelRef, Objective, Plan, SolverInfo


@dataclass
class GeoTrainState:
    """What the geo-train phases pass along."""

    layout: Any = None
    regions: Any = None
    problem: Any = None
    solution: Any = None
    baselines: dict[str, Any] = field(default_factory=dict)
    merge: Any = None


def regions(ctx: PlanContext) -> None:
    """The model's layer sizes (meta build) and the regions file."""
    from planner.families.geo_train.lowering import model_layout, read_regions
    from planner.registry import resolve_hardware

    o = ctx.options
    layout = model_layout(ctx.spec, ctx.request.tiny)
    ctx.state = GeoTrainState(layout=layout,
                              regions=read_regions(o.regions, layout, o.batch * o.seq_len, resolve_hardware))
    for r in ctx.state.regions.regions:
        if r.step_time_source.startswith("roofline"):
            ctx.notes.append(f"region {r.name}: step time is the {r.step_time_source}; give a measured "
                             "'step_time' in the regions file for times that match a run")


def lower(ctx: PlanContext) -> None:
    """Regions + layout -> the schedule problem."""
    from planner.families.geo_train.lowering import problem_of

    st = ctx.state
    st.problem = problem_of(st.regions, st.layout, ctx.options)
    if len(st.problem.layer_bytes) < 2:
        ctx.notes.append("the model has one layer: one fragment only")


def solve(ctx: PlanContext) -> None:
    """Every (P, N) schedule evaluated; the best hidden one."""
    from solvers.geo_train.schedule_search import ScheduleConfig, solve as search
    from solvers.geo_train.validate import validate

    st = ctx.state
    st.solution = search(st.problem, ScheduleConfig(lam0=ctx.options.lam0, kappa=ctx.options.kappa or 0.0))
    bad = validate(st.problem, st.solution)
    if bad:
        raise RuntimeError("the schedule search returned an invalid plan (a bug): " + "; ".join(bad[:3]))
    unhidden = [i for i, h in enumerate(st.solution.metrics.hidden) if not h]
    if unhidden:
        ctx.notes.append(f"fragments {unhidden} cannot be hidden at this WAN: their sync outlasts tau = "
                         f"{st.solution.delay_steps} steps (exposed time is within --max-exposed)")


def baselines(ctx: PlanContext) -> None:
    """DiLoCo, torchft Streaming DiLoCo (at H and at the plan's bytes per step) and the two ablations."""
    from solvers.geo_train.baselines import all_baselines

    st = ctx.state
    st.baselines = all_baselines(st.problem, st.solution).items


def merge(ctx: PlanContext) -> None:
    """CoCoDC's merge only where measured to beat Streaming DiLoCo; else the plan is torchft's Streaming
    DiLoCo on the same fragments, slot and delay (its equal-bytes baseline), CoCoDC kept as a baseline."""
    from planner.families.geo_train.data_spec import parse_data
    from planner.families.geo_train.merge_choice import choose_merge

    st, o = ctx.state, ctx.options
    sol = st.solution
    st.merge = choose_merge(ctx.spec.name, parse_data(o.data)["kind"], sol.delay_steps, sol.slot_steps, o.merge)
    if st.merge.merge == "alpha-blend":
        P = len(sol.groups)
        st.baselines = {"cocodc": (f"CoCoDC: {P} fragments, adaptive choice, Taylor merge (lambda0 {o.lam0:g}), "
                                   f"N = {sol.sends_per_window} sends per {sol.inner_steps} steps", sol),
                        **st.baselines}
        from dataclasses import replace

        desc, sd = st.baselines["streaming_diloco_equal_bytes"]
        # the same fragments, slot and delay as the searched schedule, so the same predicted time: its status
        st.solution = replace(sd, status=sol.status, bound=sol.bound, trace=sol.trace, wall_time_s=sol.wall_time_s)
    ctx.notes.append(st.merge.reason)


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan."""
    from planner.families.geo_train.data_spec import parse_data
    from planner.families.geo_train.lowering import metrics_json, r6, schedule_json
    from planner.plan_refs import hardware_ref, solver_trace

    st, o, fam = ctx.state, ctx.options, ctx.family
    sol, prob, lay = st.solution, st.problem, st.layout
    pred = metrics_json(sol)
    diloco = st.baselines["diloco"][1].metrics.step_time_s
    pred["speedup_vs_diloco"] = r6(diloco / sol.metrics.step_time_s)
    pred["feasible"] = True
    base = {name: BaselineResult(desc, {k: v for k, v in b.params.items()}, {**metrics_json(b), "feasible": True},
                                 {}, schedule_json(b))
            for name, (desc, b) in st.baselines.items()}
    regs = st.regions
    hw_refs = []
    for r, hw in zip(regs.regions, regs.hardware):
        ref = hardware_ref(hw, f"region {r.name}")
        hw_refs.append(ref)
    s = ctx.spec
    data = parse_data(o.data)
    dec = schedule_json(sol)
    dec.update({
        "lam0": o.lam0, "kappa": "auto" if o.kappa is None else o.kappa,
        "compensation": "bounded: coef = clamp(lam0 * g1*g1 / kappa, 0, 1), kappa auto = mean(g1*g1)",
        "guard": "coef = 0 where g1 = 0 (tau = 0 gives the synchronous update); coef <= 1 per entry",
        "alpha": 0.0 if st.merge.merge == "taylor" else float(sol.params.get("alpha", 0.5)),
        "merge_reason": st.merge.reason, "regions": [{"name": r.name, "hardware": r.hardware, "step_time_s": r6(r.step_time_s),
                                   "step_jitter_s": r6(r.step_jitter_s), "step_time_source": r.step_time_source}
                                  for r in regs.regions],
        "wan": {"rate_bps": r6(regs.rate_bps), "rtt_s": r6(regs.rtt_s)},
        "model_config": dict(lay.config), "model_bytes": int(prob.model_bytes),
        "training": {"steps": o.steps, "batch": o.batch, "seq_len": o.seq_len, "seed": o.seed, "data": data},
    })
    ctx.plan = Plan(
        family=fam.name,
        model=ModelRef(s.name, s.fingerprint(ctx.request.tiny), s.source, num_params=lay.num_params, dtype=s.dtype,
                       tiny=ctx.request.tiny),
        hardware=HardwareRef(f"regions {regs.source}", regs.fingerprint, "regions", 0,
                             f"{len(regs.regions)} regions, WAN {regs.rate_bps / 1e6:.4g} Mbit/s, RTT "
                             f"{regs.rtt_s * 1e3:.4g} ms"),
        extra_hardware=tuple(hw_refs),
        solver=SolverInfo(name="CoCoDC schedule search (every P, N; tau to hide)", status=sol.status.value,
                          config={"max_fragments": prob.max_fragments, "max_exposed_fraction": prob.max_exposed_fraction,
                                  "fixed_fragments": prob.fixed_fragments, "fixed_sends": prob.fixed_sends,
                                  "slot_overhead_s": prob.slot_overhead_s,
                                  "step_tie_fraction": prob.step_tie_fraction},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=len(sol.trace), trace=solver_trace(sol.trace, limit=20)),
        objective=Objective(fam.objective_metric, fam.objective_sense, float(pred["step_time_s"])),
        decisions=dec,
        predicted=pred,
        baselines=base,
        bound=Bound(value=r6(prob.pace_step_s), kind="compute-only step time (no communication)",
                    gap=r6((sol.metrics.step_time_s - prob.pace_step_s) / prob.pace_step_s)),
        inputs={"scenario_reason": ctx.scenario_reason, "regions": regs.source, "regions_fingerprint": regs.fingerprint,
                "data": o.data, "inner_steps": o.inner_steps},
        constraints={"tau_below_slot": True, "every_fragment_once_per_window": True,
                     "max_exposed_fraction": o.max_exposed},
        notes=tuple(dict.fromkeys(ctx.notes)),
    )
