"""fed-lora phases: population -> profile -> lower -> solve -> baselines -> bound -> lift."""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.families.base import PlanContext
from planner.families.fed_lora.lowering import (MAX_CLIENT_DETAIL, FedLoraLowered, build_problem, client_decisions,
                                                depth_histogram, metrics_dict, population_inputs, utility_setting)
from planner.plan_refs import population_refs, solver_trace
from planner.schema import BaselineResult, Bound, ModelRef, Objective, Plan, SolverInfo

log = logging.getLogger(__name__)


@dataclass
class FedLoraState:
    """What the fed-lora phases pass along."""

    population: Any = None
    profile: Any = None
    num_params: int = 0
    lowered: FedLoraLowered | None = None
    solution: Any = None
    baselines: dict[str, Any] = field(default_factory=dict)
    bound: Any = None


def population(ctx: PlanContext) -> None:
    """Read (or generate) the client population; kinds resolve through the hardware catalog."""
    from planner.registry import resolve_hardware
    from profilers.population import parse_population

    ctx.state = FedLoraState(population=parse_population(ctx.options.clients,
                                                         lambda name: resolve_hardware(name, flag="--clients")))


def fine_tuning_profile(spec: Any, tiny: bool, opts: Any, progress: Any = lambda text: None) -> tuple[Any, int]:
    """The model's measured fine-tuning profile at the options' batch and sequence length (cached on disk)."""
    import torch

    from core.atomic_io import write_text_atomic
    from core.cache import cache_key, cache_path
    from profilers.fine_tuning import PROFILE_VERSION, LoraSettings, profile_fine_tuning, profile_from_dict, task_model
    from profilers.models import build_model

    seq = int(opts.seq_len or spec.inputs.get("seq_len", 128))
    if tiny:
        seq = min(seq, 32)
    key = cache_key("fed-lora-profile", PROFILE_VERSION, spec.fingerprint(tiny), tiny, opts.batch_size, seq,
                    opts.lora_rank, opts.lora_alpha, opts.act_bits, opts.num_labels)
    path = cache_path("fed-lora-profile", key, ".json")
    if path.exists():
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return profile_from_dict(d["profile"]), int(d["num_params"])
        except (OSError, ValueError, KeyError, TypeError) as exc:      # a stale or corrupt entry: measure again
            log.warning("fine-tuning profile cache %s unreadable (%s); measuring again", path, exc)
    progress(f"measuring LoRA fine-tuning of {spec.name} on this CPU (batch {opts.batch_size}, seq {seq}; cached after)")
    torch.manual_seed(0)
    built = build_model(spec, tiny=tiny, device="cpu", seq_len=seq)
    model = task_model(built.module, spec.task, opts.num_labels)
    seq = int(getattr(model, "fine_tuning_seq_len", seq))
    n_params = sum(p.numel() for p in model.parameters())
    # Step times under the allocator policy the client runtime runs with (it costs CPU in proportion to the bytes a
    # step allocates), 3 interleaved rounds of 3 steps; not for --tiny test models (random weights, whose tensors are
    # mostly below the threshold): one round of one step, and the test process keeps glibc's default policy (the
    # pin is for the whole process).
    prof = profile_fine_tuning(model, spec.name, opts.batch_size, seq,
                               LoraSettings(rank=opts.lora_rank, alpha=opts.lora_alpha), bits=opts.act_bits,
                               runtime_allocator=not tiny, repeats=1 if tiny else 3, local_steps=1 if tiny else 3)
    write_text_atomic(path, json.dumps({"profile": prof.to_dict(), "num_params": n_params}, sort_keys=True))
    return prof, n_params


def profile(ctx: PlanContext) -> None:
    """Memory and time of LoRA fine-tuning this model, measured here (four PEFT steps, saved-tensor hooks)."""
    ctx.state.profile, ctx.state.num_params = fine_tuning_profile(ctx.spec, ctx.request.tiny, ctx.options, ctx.progress)


def lower(ctx: PlanContext) -> None:
    """Population + profile -> FedLoraProblem (and the devices that cannot hold depth 1: error or notes)."""
    st = ctx.state
    st.lowered = build_problem(st.population, st.profile, ctx.options)
    ctx.notes.extend(st.lowered.notes)


def solve(ctx: PlanContext) -> None:
    """FedQuad's greedy (pure solver)."""
    from solvers.fed_lora.greedy import solve as fedquad
    from solvers.fed_lora.validate import validate

    st = ctx.state
    st.solution = fedquad(st.lowered.problem)
    bad = validate(st.lowered.problem, st.solution)
    if bad:
        raise RuntimeError("FedQuad returned an invalid plan (a bug): " + "; ".join(bad[:3]))
    if st.solution.uncovered_blocks:
        ctx.notes.append(f"blocks {list(st.solution.uncovered_blocks)} could not reach the coverage target")


def baselines(ctx: PlanContext) -> None:
    """Every baseline on the same problem."""
    from solvers.fed_lora.baselines import baselines as all_baselines

    for b in all_baselines():
        ctx.state.baselines[b.name] = (b, b.solve(ctx.state.lowered.problem))


def bound(ctx: PlanContext) -> None:
    """The exact reference (enumeration for tiny populations, CP-SAT up to 50 devices), where it applies."""
    from solvers.fed_lora.exact import CpSat, Enumeration

    p = ctx.state.lowered.problem
    for ref in (Enumeration(), CpSat()):
        if ref.unsupported(p) is None:
            ctx.state.bound = ref.solve(p, time_limit_s=ctx.options.exact_time_limit_s)
            return
    ctx.notes.append(f"no exact reference: {CpSat().unsupported(p)} (FedQuad's peeling is exact without coverage)")


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan (per-client decisions and predictions by id, baselines, bound)."""
    from codegen.fed_lora import LoraSpec

    from solvers.common import Status
    from solvers.fed_lora.validate import validate

    st = ctx.state
    low, sol = st.lowered, st.solution
    p, prof, opts = low.problem, st.profile, ctx.options
    fam = ctx.family
    # The plan never recommends what its own baselines beat: a baseline that meets every constraint the plan
    # meets (memory, deadline, coverage) and predicts more progress per second replaces FedQuad's assignment.
    winner = None
    for name, (b, s) in sorted(st.baselines.items()):
        if s.feasible and s.objective > sol.objective * (1 + 1e-9) and not validate(p, s) \
                and set(s.uncovered_blocks) <= set(sol.uncovered_blocks):
            if winner is None or s.objective > st.baselines[winner][1].objective:
                winner = name
    if winner is not None:
        beaten = sol.objective
        sol = dataclasses.replace(st.baselines[winner][1], status=Status.FEASIBLE)
        ctx.notes.append(f"the plan uses {winner}'s assignment: it meets every constraint and predicts "
                         f"{sol.objective / beaten:.2f}x FedQuad's progress rate ({beaten:.4g} per s)")
    kept = [(s.objective, name) for name, (b, s) in st.baselines.items()
            if s.feasible and not validate(p, s) and s.objective > 0 and name != winner]
    if kept and sol.objective > 0:
        best_rate, best_name = max(kept)
        ctx.notes.append(f"predicted progress rate {sol.objective / best_rate:.2f}x the best baseline that keeps every "
                         f"constraint ({best_name}), under u(d, q) = d^{p.depth_exponent:.3g} - {p.gamma:.3g}*q "
                         f"({utility_setting(opts)[2].split(':')[0]}); a prediction, not a measurement")
    beating = sorted(name for name, (b, s) in st.baselines.items() if s.objective > sol.objective * (1 + 1e-9))
    if beating:
        ctx.notes.append(f"{', '.join(beating)} predict more progress per second than the plan by breaking a "
                         "constraint it keeps (memory margin, deadline or coverage of the top blocks); "
                         "column 'ok' says which")
    n = p.num_devices
    detail = n <= MAX_CLIENT_DETAIL
    pred = {**metrics_dict(low, sol), "feasible": True}
    base = {}
    for name, (b, s) in st.baselines.items():
        dec: dict[str, Any] = {"depth_histogram": depth_histogram(s)}
        if detail:
            dec["clients"] = client_decisions(low, s)
        base[name] = BaselineResult(b.description, {k: v for k, v in s.params.items() if k != "baseline"},
                                    {**metrics_dict(low, s, per_client=detail),
                                     # within every constraint the plan keeps (memory, deadline, coverage)
                                     "feasible": bool(s.feasible and not validate(p, s))}, {}, dec)
    if not detail:
        ctx.notes.append(f"{n} clients: baselines list their depth histogram, not every client")
    bnd = None
    if st.bound is not None:
        ref = st.bound
        value = float(ref.bound if ref.bound is not None else ref.objective)
    if st.bound is not None and value >= sol.objective * (1 - 1e-9):   # a bound only where it bounds
        bnd = Bound(value=value, kind=ref.params["method"] + (" (optimal)" if ref.status.value == "OPTIMAL" else ""),
                    gap=(value - sol.objective) / value if value > 0 else 0.0,
                    predicted=metrics_dict(low, ref, per_client=False))
    lay = prof.layout
    spec = LoraSpec(blocks_path=lay.path, layers_pattern=lay.pattern, num_blocks=lay.num_blocks,
                    target_modules=lay.target_modules, head_modules=lay.head_modules, rank=prof.lora.rank,
                    alpha=prof.lora.alpha, dropout=prof.lora.dropout, act_group=prof.group)
    pop = low.population
    population, extra = population_refs(pop)
    s = ctx.spec
    ctx.plan = Plan(
        family=fam.name,
        model=ModelRef(s.name, s.fingerprint(ctx.request.tiny), s.source, num_params=st.num_params,
                       dtype=s.dtype, tiny=ctx.request.tiny),
        hardware=population,
        extra_hardware=extra,
        solver=SolverInfo(name="FedQuad (efficient frontiers, straggler peeling, coverage repair)",
                          status=sol.status.value,
                          config={"gamma": p.gamma, "depth_exponent": p.depth_exponent,
                                  "utility": f"u(d, q) = d^{p.depth_exponent:.4g} - {p.gamma:.4g}*q",
                                  "utility_source": utility_setting(opts)[2], "act_bits": p.act_bits,
                                  "d_min": p.d_min},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=int(sol.params.get("peel_moves", 0)), trace=solver_trace(sol.trace, limit=20)),
        objective=Objective(fam.objective_metric, fam.objective_sense, float(sol.objective)),
        decisions={"num_blocks": p.num_blocks, "lora": spec.to_dict(), "act_bits": p.act_bits,
                   "clients": client_decisions(low, sol), "depth_histogram": depth_histogram(sol)},
        predicted=pred,
        baselines=base,
        bound=bnd,
        inputs={"scenario_reason": ctx.scenario_reason, "population": population_inputs(low),
                "batch_size": opts.batch_size, "seq_len": prof.seq_len, "local_steps": opts.local_steps,
                "rounds": opts.rounds, "round_overhead_s": opts.round_overhead_s,
                "profile": {"source": prof.source, "weight_bytes": prof.weight_bytes,
                            "lora_param_bytes_per_block": prof.lora_param_bytes_per_block,
                            "saved_first_bytes": prof.saved_first_bytes, "saved_mid_bytes": prof.saved_mid_bytes,
                            "workspace_bytes": prof.workspace_bytes, "host_forward_s": prof.host_forward_s,
                            "host_backward_s_first": prof.host_backward_s_first,
                            "host_backward_s_mid": prof.host_backward_s_mid,
                            "host_quant_s_first": prof.host_quant_s_first, "host_quant_s_mid": prof.host_quant_s_mid,
                            "host_flops_per_cpu_s": prof.host_flops_per_cpu_s, "forward_flops": prof.forward_flops}},
        constraints={"memory_margin": p.memory_margin, "d_min": p.d_min,
                     "deadline_s": p.deadline_s if np.isfinite(p.deadline_s) else None,
                     "coverage_kappa": p.coverage_kappa, "coverage_blocks": p.coverage_blocks},
        notes=tuple(dict.fromkeys(ctx.notes)),
    )
