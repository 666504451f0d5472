"""fed-compress phases: population -> profile -> lower -> solve -> baselines -> bound -> lift."""
from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any

import numpy as np

from planner.families.base import PlanContext
from planner.plan_refs import population_refs, solver_trace
from planner.schema import BaselineResult, ModelRef, Objective, Plan, SolverInfo


@dataclass
class FedCompressState:
    """What the fed-compress phases pass along."""

    population: Any = None
    costs: Any = None
    problem: Any = None
    clients: list[Any] = field(default_factory=list)
    solution: Any = None
    baselines: dict[str, Any] = field(default_factory=dict)
    batch_gaps: list[float] = field(default_factory=list)
    budget_gaps: list[float] = field(default_factory=list)


def population(ctx: PlanContext) -> None:
    """Read (or generate) the client population; kinds resolve through the hardware catalog."""
    from planner.registry import resolve_hardware
    from profilers.population import parse_population

    ctx.state = FedCompressState(population=parse_population(
        ctx.options.clients, lambda name: resolve_hardware(name, flag="--clients")))
    if ctx.options.convergence is not None:
        from planner.families.fed_compress.convergence_record import check_clients

        check_clients(ctx.options.convergence, len(ctx.state.population.devices))
    if any(d.samples is not None for d in ctx.state.population.devices):
        ctx.notes.append("the population's 'samples' are not used: the digits Dirichlet split decides each "
                         "client's data")


def profile(ctx: PlanContext) -> None:
    """Tensor sizes, FLOPs and activation bytes of the model (torch.export graph profile)."""
    from planner.families.fed_compress.lowering import model_costs

    ctx.state.costs = model_costs(ctx.spec)


def lower(ctx: PlanContext) -> None:
    """Population + model + options -> the Caesar problem (data split, step times, participation)."""
    from planner.families.fed_compress.lowering import lower as lower_problem

    st = ctx.state
    st.problem, st.clients, _ = lower_problem(ctx.spec, st.population, ctx.options.lowering, st.costs)
    if ctx.options.lowering.calibration is None:
        ctx.notes.append("step times are catalog rooflines; a tiny CNN runs far from its roofline, so plan with "
                         "--calibration (from `planner calibrate digits-cnn --scenario fed-compress`) for times "
                         "that match a run")
    ctx.notes.append(f"per-round overhead {ctx.options.lowering.round_overhead_s * 1e3:g} ms for every client "
                     "(--round-overhead, an assumption)")


def solve(ctx: PlanContext) -> None:
    """Caesar over the schedule, re-planned every round from the devices' staleness."""
    from solvers.fed_compress.caesar import solve as caesar
    from solvers.fed_compress.validate import validate

    st = ctx.state
    st.solution = caesar(st.problem, ctx.options.lowering.caesar_config())
    bad = validate(st.problem, st.solution)
    if bad:
        raise RuntimeError("Caesar returned an invalid plan (a bug): " + "; ".join(bad[:3]))
    if st.solution.deviation_proxy:
        ctx.notes.append("budgeted download: deviations are the staleness proxy θ·δ/t (the measured deviations "
                         "live in the runtime's shadow models)")


def baselines(ctx: PlanContext) -> None:
    """Every baseline on the same problem (the matched ones read Caesar's plan)."""
    from solvers.fed_compress.baselines import baselines as all_baselines

    st = ctx.state
    for b in all_baselines(ctx.options.lowering.caesar_config(), st.solution):
        st.baselines[b.name] = (b, b.solve(st.problem))


def bound(ctx: PlanContext) -> None:
    """Exact references: the batch sweep of every round (gap of the plan's batches in samples per second) and,
    in budgeted mode, CP-SAT on every round small enough (gap of the greedy's deviation)."""
    from solvers.fed_compress import caesar, exact
    from solvers.fed_compress.cost import comm_time_s

    st = ctx.state
    p, sol = st.problem, st.solution
    m = sol.metrics
    cfg = ctx.options.lowering.caesar_config()
    last = np.zeros(p.num_clients, dtype=np.int64)
    ref = exact.BudgetCpSat()
    for r, sel in enumerate(p.selected):
        idx = np.asarray(sel, dtype=np.int64)
        if idx.size:
            fixed = comm_time_s(p, idx, m.bytes_down[r, idx], m.bytes_up[r, idx])
            cap = caesar.batch_caps(p, idx, cfg)
            best = exact.samples_per_s(p, idx, fixed, exact.sweep_batches(p, idx, fixed, cap))
            st.batch_gaps.append(1.0 - float(m.samples_per_s[r]) / best)
            if cfg.mode == "budget":
                stale = r + 1 - last[idx]
                bp = caesar.budget_problem(p, cfg, caesar.proxy_deviation(caesar.theta_grid(cfg), stale, r + 1),
                                           np.zeros(idx.size, dtype=bool))
                if ref.unsupported(bp) is None:
                    opt = ref.solve(bp, time_limit_s=10.0)
                    mine = caesar.greedy_budget(bp)
                    st.budget_gaps.append((mine.objective - opt.objective) / opt.objective if opt.objective > 0 else 0.0)
        last[idx] = r + 1


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan: the schedule by client id, predictions, baselines, exact-reference gaps."""
    from dataclasses import asdict

    from planner.families.fed_compress.lowering import decisions_of, predicted_of

    st = ctx.state
    p, sol, opts = st.problem, st.solution, ctx.options.lowering
    fam = ctx.family
    pred = {**predicted_of(p, sol), "feasible": True}
    if st.batch_gaps:
        pred["batch_gap_to_exact"] = round(max(st.batch_gaps), 6)
    if st.budget_gaps:
        pred["budget_gap_to_cpsat"] = round(max(st.budget_gaps), 6)
    base = {}
    for name, (b, s) in st.baselines.items():
        params = {k: v for k, v in s.params.items() if k not in ("baseline", "violations")}
        base[name] = BaselineResult(b.description, params,
                                    {**predicted_of(p, s), "feasible": s.feasible,
                                     "violations": list(s.params.get("violations", []))},
                                    {}, decisions_of(p, s, None, opts))
    recommended = choose_configuration(ctx, pred, base)
    pop = st.population
    population, extra = population_refs(pop)
    s = ctx.spec
    cfg = asdict(opts.caesar_config())
    ctx.plan = Plan(
        family=fam.name,
        model=ModelRef(s.name, s.fingerprint(ctx.request.tiny), s.source, num_params=int(sum(p.tensor_numels)),
                       dtype="fp32", tiny=ctx.request.tiny),
        hardware=population,
        extra_hardware=extra,
        solver=SolverInfo(name=f"Caesar (staleness download, importance upload, {opts.batch_method} batches)",
                          status=sol.status.value, config={k: v for k, v in cfg.items()},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=len(sol.trace), trace=solver_trace(sol.trace, limit=20)),
        objective=Objective(fam.objective_metric, fam.objective_sense, float(pred["traffic_bytes_per_round"])),
        decisions={**decisions_of(p, sol, st.clients, opts), "recommended": recommended},
        predicted=pred,
        baselines=base,
        bound=None,
        inputs={"scenario_reason": ctx.scenario_reason, "population": pop.source,
                "population_fingerprint": pop.fingerprint(), "rounds": opts.rounds, "participation": opts.participation,
                "seed": opts.seed, "step_times": ("calibrated on this CPU" if opts.calibration is not None
                                                  else "roofline from the hardware profiles"),
                **({"calibration": dict(ctx.options.calibration_record)} if ctx.options.calibration_record else {})},
        constraints={"batch_min": opts.batch_min, "batch_max": opts.batch_max,
                     "train_fixed_bytes": float(p.train_fixed_bytes),
                     "train_bytes_per_sample": float(p.train_bytes_per_sample),
                     "down_budget_bytes": opts.down_budget_bytes,
                     "download_ratio_min": opts.min_download_ratio,
                     "upload_ratio_range": [opts.min_upload_ratio, opts.max_upload_ratio]},
        notes=tuple(dict.fromkeys(ctx.notes)),
    )


def recommend(num_rounds: int, traffic: dict[str, Any], feasible: dict[str, bool],
              record: dict[str, Any] | None) -> tuple[Any, str]:
    """(the choice among Caesar's schedule "plan" and the baselines, where its rounds to target come from) given each
    configuration's predicted traffic per round and a convergence record (None: same rounds for all)."""
    from solvers.fed_compress.convergence import choose

    feasible = dict(feasible)
    if record is None:
        rounds = {c: float(num_rounds) for c in traffic}
        source = (f"assumed: every configuration needs the same rounds (the schedule's {num_rounds}), "
                  "so this compares total traffic; measure rounds to target with --convergence")
    else:
        rounds = {c: record["rounds_to_target"][c] for c in traffic if c in record["rounds_to_target"]}
        unmeasured = sorted(set(traffic) - set(rounds))
        for c in unmeasured:
            feasible[c], rounds[c] = False, math.inf
        seeds = ", ".join(str(x) for x in record["seeds"])
        source = (f"measured on seeds {seeds} (target {record['target_accuracy']}) in {record['source']}"
                  + (f"; not measured, so not recommended: {', '.join(unmeasured)}" if unmeasured else ""))
    return choose(traffic, rounds, feasible), source


def choose_configuration(ctx: PlanContext, pred: dict[str, Any], base: dict[str, Any]) -> str:
    """Predicted traffic to target for Caesar's schedule and every baseline (solvers/fed_compress/convergence.py);
    the plan recommends the least, and says so when that is a baseline (a plan never recommends what its own
    baselines beat). Fills `predicted` of the plan and each baseline; returns the recommended name."""
    from solvers.fed_compress.convergence import SENSITIVITY

    st = ctx.state
    traffic = {"plan": st.solution.metrics.traffic_bytes}
    traffic.update({name: s.metrics.traffic_bytes for name, (_, s) in st.baselines.items()})
    feasible = {"plan": True, **{n: bool(r.predicted["feasible"]) for n, r in base.items()}}
    choice, source = recommend(st.problem.num_rounds, traffic, feasible, ctx.options.convergence)

    def fill(d: dict[str, Any], name: str) -> None:
        t, r = choice.traffic_to_target_bytes[name], choice.rounds_to_target[name]
        d["traffic_to_target_bytes"] = float(round(t)) if math.isfinite(t) else None
        d["rounds_to_target"] = round(r, 3) if math.isfinite(r) else None

    fill(pred, "plan")
    for name, r in base.items():
        fill(r.predicted, name)
    best = choice.recommended
    pred["recommended"] = best
    pred["rounds_to_target_source"] = source
    pred["recommendation_vs_rounds_to_target"] = {f"{f:g}x": {"recommended": choice.sensitivity[f][0],
                                                             "traffic_vs_plan": round(choice.sensitivity[f][1], 6)}
                                                  for f in SENSITIVITY}
    mine = choice.traffic_to_target_bytes["plan"]
    if best != "plan":
        ratio = choice.traffic_to_target_bytes[best] / mine
        ctx.notes.append(f"recommended: baseline {best}, not Caesar's rule: it is predicted to reach the target with "
                         f"{ratio:.3f}x the rule's traffic (rounds to target {source}); `planner run` runs it, "
                         "`planner run --baseline plan` runs the rule")
    else:
        ctx.notes.append(f"recommended: Caesar's rule (least predicted traffic to target; rounds to target {source})")
    moved = sorted({choice.sensitivity[f][0] for f in SENSITIVITY})
    if len(moved) > 1:
        ctx.notes.append("the recommendation depends on the rounds to target: "
                         + ", ".join(f"{f:g}x -> {choice.sensitivity[f][0]}" for f in SENSITIVITY))
    return best
