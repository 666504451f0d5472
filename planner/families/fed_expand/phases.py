"""fed-expand phases: population -> data -> profile -> lower (clusters, count, layout) -> solve -> baselines
-> bound -> lift."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import InfeasibleError, PlannerError
from planner.families.base import PlanContext
from planner.families.fed_expand import lowering as low
from planner.plan_refs import population_refs, solver_trace
from planner.schema import BaselineResult, Bound, ModelRef, Objective, Plan, SolverInfo

log = logging.getLogger(__name__)


@dataclass
class FedExpandState:
    """What the fed-expand phases pass along."""

    population: Any = None
    data: Any = None
    split: list = field(default_factory=list)
    inputs: Any = None
    profile: Any = None
    lora_block_bytes: float = 0.0
    num_params: int = 0
    problem: Any = None
    layouts: list = field(default_factory=list)
    span: int = 0
    tried: list = field(default_factory=list)
    solution: Any = None
    baselines: dict = field(default_factory=dict)
    bound: Any = None


def population(ctx: PlanContext) -> None:
    """Read (or generate) the client population; kinds resolve through the hardware catalog."""
    from planner.registry import resolve_hardware
    from profilers.population import parse_population

    ctx.state = FedExpandState(population=parse_population(ctx.options.clients,
                                                           lambda name: resolve_hardware(name, flag="--clients")))


def data(ctx: PlanContext) -> None:
    """The --data split: one share per client; its task histograms are the data signatures."""
    from planner.families.fed_expand.data_spec import client_data, parse_instruct
    from solvers.fed_expand.clustering import cluster_signatures

    st = ctx.state
    st.data = parse_instruct(ctx.options.data)
    st.split = client_data(st.data, len(st.population))
    tasks = st.data.tasks
    sig = np.array([[sum(1 for e in part if e.task == t) for t in tasks] for part in st.split], dtype=float)
    samples = np.array([len(part) for part in st.split], dtype=float)
    L = num_base_blocks(ctx)
    cluster = cluster_signatures(sig, max_clusters=min(L, ctx.options.added_blocks or L))
    P = ctx.options.added_blocks or low.auto_added(L, int(cluster.max()) + 1)
    if P > L:
        raise PlannerError(f"--added-blocks {P} is more than the {L} blocks {ctx.spec.name} has",
                           f"add at most {L} blocks (LLaMA-Pro adds about a quarter: {max(1, L // 4)})")
    st.inputs = low.Inputs(population=st.population, samples=samples, signatures=sig, cluster=cluster,
                           slowdown=np.ones(len(samples)), num_base_blocks=L, num_added=P)
    if any(d.samples is not None for d in st.population.devices):
        ctx.notes.append("sample counts come from the --data split, not the population's 'samples:'")


def num_base_blocks(ctx: PlanContext) -> int:
    """L of the (possibly tiny) model, from its config."""
    from profilers.models import transformers_config

    return int(transformers_config(ctx.spec, ctx.request.tiny).num_hidden_layers)


def expanded_model(spec: Any, tiny: bool, added_after: tuple[int, ...], seed: int = 0) -> tuple[Any, Any]:
    """(base model, expanded model): real weights at full size (the catalog's loader), random when tiny."""
    import torch

    from kernels.block_training import any_model
    from profilers.models import build_model
    from testbeds.block_expansion import expand_blocks

    torch.manual_seed(seed)
    base = build_model(spec, tiny=tiny, device="cpu").module.float().eval()
    check_decoder(base, spec.name)
    big, _ = expand_blocks(base, after=list(added_after))
    assert any_model(big)
    return base, big


def check_decoder(model: Any, name: str) -> None:
    """A one-line error unless `model` has LLaMA-layout decoder blocks (what block expansion copies)."""
    from kernels.block_training import any_model

    ok = any_model(model) and all(hasattr(b, "self_attn") and hasattr(b.self_attn, "o_proj") and hasattr(b, "mlp")
                                  and hasattr(b.mlp, "down_proj") for b in model.model.layers)
    if not ok:
        raise PlannerError(f"{name} has no LLaMA-style transformer blocks (model.layers with self_attn.o_proj and "
                           "mlp.down_proj) to copy", "plan a decoder LM such as smollm2-135m or smollm2-135m:8L")


def profile(ctx: PlanContext) -> None:
    """Memory and time of training blocks of the expanded model, measured here (cached on disk)."""
    from core.atomic_io import write_text_atomic
    from core.cache import cache_key, cache_path
    from kernels.block_training import nbytes
    from profilers.block_expansion import PROFILE_VERSION, base_model_bytes, profile_block_expansion, profile_from_dict

    st, o = ctx.state, ctx.options
    L, P = st.inputs.num_base_blocks, st.inputs.num_added
    key = cache_key("fed-expand-profile", PROFILE_VERSION, ctx.spec.fingerprint(ctx.request.tiny), ctx.request.tiny,
                    o.batch_size, o.seq_len, o.answer_tokens, P)
    path = cache_path("fed-expand-profile", key, ".json")
    if path.exists():
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            st.profile, st.lora_block_bytes, st.num_params = (profile_from_dict(d["profile"]), float(d["lora_block_bytes"]),
                                                              int(d["num_params"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("fed-expand profile cache %s unreadable (%s); measuring again", path, exc)
    if st.profile is None:
        ctx.progress(f"measuring block training of {ctx.spec.name} expanded by {P} blocks on this CPU "
                     f"(batch {o.batch_size}, seq {o.seq_len}; cached after)")
        base, big = expanded_model(ctx.spec, ctx.request.tiny, low.layout(L, P, L))
        st.profile = profile_block_expansion(big, base_model_bytes(base), ctx.spec.name, o.batch_size, o.seq_len,
                                             o.answer_tokens)
        st.lora_block_bytes = 4.0 * low.lora_block_params(base.config)
        st.num_params = int(nbytes(base.parameters()) // 4)
        write_text_atomic(path, json.dumps({"profile": st.profile.to_dict(), "lora_block_bytes": st.lora_block_bytes,
                                            "num_params": st.num_params}, sort_keys=True))
    st.inputs.slowdown = low.compute_slowdown(st.profile.host_flops_per_cpu_s, st.population)


def lower(ctx: PlanContext) -> None:
    """One problem per candidate layout; clients that cannot hold one block: error (or notes)."""
    from solvers.fed_expand.clustering import home_subsets

    st, o = ctx.state, ctx.options
    inp = st.inputs
    L, P = inp.num_base_blocks, inp.num_added
    home = home_subsets(inp.cluster, inp.samples, P)
    top = low.build_problem(inp, st.profile, o, low.layout(L, P, P), home)
    ctx.notes.extend(low.check_clients_fit(top, st.population, o))
    st.layouts = [(s, low.build_problem(inp, st.profile, o, low.layout(L, P, s), home)) for s in low.spans(L, P)]


def solve(ctx: PlanContext) -> None:
    """FedBE's greedy on every layout, widest span first; the widest that covers every block and leaves no
    client idle (unless --allow-sit-out) wins."""
    from solvers.fed_expand.greedy import solve as fedbe
    from solvers.fed_expand.validate import validate

    st = ctx.state
    tried, last_error = [], None
    from solvers.fed_expand.exact import CpSat

    for span, p in st.layouts:
        try:
            sol = fedbe(p)
        except InfeasibleError as exc:
            # the greedy's one-client-at-a-time coverage repair can miss a covering assignment (measured: 3 of
            # 157 small random instances, docs/fed-expand.md); CP-SAT decides it exactly where it applies
            sol = None
            if CpSat().unsupported(p) is None:
                try:
                    sol = CpSat().solve(p, time_limit_s=ctx.options.exact_time_limit_s)
                    ctx.notes.append(f"span {span}: the greedy could not cover every added block; CP-SAT's assignment")
                except InfeasibleError:
                    sol = None
            if sol is None:
                tried.append({"span": span, "added_after": list(p.added_after), "feasible": False})
                last_error = exc
                continue
        bad = validate(p, sol, allow_sit_out=ctx.options.allow_sit_out)
        tried.append({"span": span, "added_after": list(p.added_after), "feasible": not bad,
                      "utility": round(float(sol.objective), 6)})
        if not bad and st.solution is None:
            st.solution, st.problem, st.span = sol, p, span
    st.tried = tried
    if st.solution is None:
        if last_error is not None:
            raise last_error
        raise InfeasibleError("no layout of the added blocks lets every client train one",
                              "add fewer blocks (--added-blocks), raise client memory, or pass --allow-sit-out")


def baselines(ctx: PlanContext) -> None:
    """The expansion baselines on the chosen layout; LoRA and full fine-tuning predicted from the same constants."""
    from solvers.fed_expand.baselines import BASELINES

    st = ctx.state
    for name, (desc, fn) in BASELINES.items():
        st.baselines[name] = (desc, fn(st.problem))


def bound(ctx: PlanContext) -> None:
    """CP-SAT's exact assignment on the chosen layout (up to 64 clients)."""
    from solvers.fed_expand.exact import CpSat

    ref = CpSat()
    why = ref.unsupported(ctx.state.problem)
    if why:
        ctx.notes.append(f"no exact reference: {why}")
        return
    ctx.state.bound = ref.solve(ctx.state.problem, time_limit_s=ctx.options.exact_time_limit_s)


def _r(x: float, digits: int = 6) -> float:
    return float(round(float(x), digits))


def _clients(p: Any, assign: np.ndarray, metrics: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    e = p.expanded_index()
    dec, pred = {}, {}
    for c, cid in enumerate(p.client_ids):
        js = [int(j) for j in np.flatnonzero(assign[c])]
        dec[cid] = {"blocks": js, "layers": [int(e[j]) for j in js], "cluster": int(p.cluster[c]),
                    "lowest_layer": int(metrics.lowest_trained[c])}
        pred[cid] = {"round_time_s": _r(metrics.round_time_s[c]), "memory_bytes": int(metrics.memory_bytes[c]),
                     "memory_budget_bytes": int(p.memory_budget_bytes[c]), "bytes_per_round": int(metrics.bytes_per_round[c]),
                     "samples": int(p.samples[c]), "within_budgets": bool(metrics.within_budgets[c])}
    return dec, pred


def _summary(p: Any, m: Any, assign: np.ndarray) -> dict[str, Any]:
    return {"round_time_s": _r(m.round_s), "bytes_per_round": int(m.total_bytes), "utility": _r(m.utility),
            "clients_over_budget": int(np.sum(~m.within_budgets)), "uncovered_blocks": list(m.uncovered),
            "trained_block_slots": int(np.sum(assign)), "max_memory_bytes": int(np.max(m.memory_bytes))}


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan."""
    from solvers.common import Status
    from solvers.fed_expand.validate import validate

    st, o, fam = ctx.state, ctx.options, ctx.family
    p, sol = st.problem, st.solution
    # The plan never recommends what its own baselines beat: an expansion baseline that meets every constraint
    # and has more utility replaces the greedy's assignment.
    for name, (desc, s) in sorted(st.baselines.items()):
        if s.feasible and not validate(p, s, o.allow_sit_out) and s.objective > sol.objective * (1 + 1e-9):
            ctx.notes.append(f"the plan uses {name}'s assignment: it meets every constraint with more utility")
            sol = type(sol)(status=Status.FEASIBLE, objective=s.objective, metrics=s.metrics, assign=s.assign,
                            params={"method": name})
    if st.bound is not None and st.bound.objective > sol.objective * (1 + 1e-9) and not validate(p, st.bound, o.allow_sit_out):
        gap = 1 - sol.objective / st.bound.objective
        ctx.notes.append(f"the greedy is {gap:.1%} below CP-SAT's optimum; the plan uses CP-SAT's assignment")
        sol = type(sol)(status=Status.OPTIMAL, objective=st.bound.objective, metrics=st.bound.metrics,
                        assign=st.bound.assign, params={"method": "cp-sat", "greedy_utility": _r(st.solution.objective)})
    m = sol.metrics
    dec_clients, pred_clients = _clients(p, sol.assign, m)
    e = p.expanded_index()
    home = {int(k): [int(j) for j in np.flatnonzero(p.home[np.flatnonzero(p.cluster == k)[0]])]
            for k in range(int(p.cluster.max()) + 1)}
    base = {}
    for name, (desc, s) in st.baselines.items():
        dc, pc = _clients(p, s.assign, s.metrics)
        base[name] = BaselineResult(desc, dict(s.params), {**_summary(p, s.metrics, s.assign), "clients": pc,
                                                           "feasible": bool(s.feasible)}, {}, {"clients": dc})
    for name, r in low.other_methods(p, st.profile, st.lora_block_bytes).items():
        over = int(np.sum(~r["within_budgets"]))
        base[name] = BaselineResult(r["description"], {"rank": low.LORA_RANK} if name == "lora_fedavg" else {}, {
            "round_time_s": _r(np.max(r["round_time_s"])), "bytes_per_round": int(np.sum(r["bytes_per_round"])),
            "clients_over_budget": over, "feasible": over == 0,
            "max_memory_bytes": int(np.max(r["memory_bytes"])),
            "clients": {cid: {"round_time_s": _r(r["round_time_s"][c]), "memory_bytes": int(r["memory_bytes"][c]),
                              "bytes_per_round": int(r["bytes_per_round"][c]), "within_budgets": bool(r["within_budgets"][c])}
                        for c, cid in enumerate(p.client_ids)}}, {}, {})
    bnd = None
    if st.bound is not None:
        value = float(st.bound.bound if st.bound.bound is not None else st.bound.objective)
        value = max(value, sol.objective)
        bnd = Bound(value=_r(value), kind="cp-sat" + (" (optimal)" if st.bound.status.value == "OPTIMAL" else ""),
                    gap=_r((value - sol.objective) / value if value > 0 else 0.0),
                    predicted={"greedy_utility": _r(st.solution.objective), "cp_sat_utility": _r(st.bound.objective)})
    pop = st.population
    population_ref, extra = population_refs(pop)
    prof = st.profile
    s = ctx.spec
    ctx.plan = Plan(
        family=fam.name,
        model=ModelRef(s.name, s.fingerprint(ctx.request.tiny), s.source, num_params=st.num_params, dtype=s.dtype,
                       tiny=ctx.request.tiny),
        hardware=population_ref, extra_hardware=extra,
        solver=SolverInfo(name="FedBE allocation (per-client best set, home subsets by data cluster, coverage repair)",
                          status=sol.status.value, config={"home_bonus": p.home_bonus, "span": st.span},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=int(st.solution.params.get("repairs", 0)), trace=solver_trace(st.solution.trace, 20)),
        objective=Objective(fam.objective_metric, fam.objective_sense, _r(sol.objective)),
        decisions={"num_base_blocks": p.num_base_blocks, "added_blocks": p.num_added, "added_after": list(p.added_after),
                   "added_layers": [int(x) for x in e], "expanded_blocks": p.depth, "span": st.span,
                   "layouts_tried": st.tried, "clusters": {cid: int(p.cluster[c]) for c, cid in enumerate(p.client_ids)},
                   "home_blocks": {str(k): v for k, v in home.items()}, "rounds": o.rounds,
                   "round_schedule": "the same allocation every round (static population)", "clients": dec_clients},
        predicted={**_summary(p, m, sol.assign), "clients": pred_clients, "feasible": True},
        baselines=base,
        bound=bnd,
        inputs={"scenario_reason": ctx.scenario_reason, "data": st.data.to_dict(),
                "population": {"source": pop.source, "fingerprint": pop.fingerprint(), "devices": {
                    d.id: {"kind": d.kind, "hardware": d.hardware.name, "memory_bytes": d.memory_bytes,
                           "uplink_bits_per_s": d.uplink_bits_per_s, "downlink_bits_per_s": d.downlink_bits_per_s,
                           "fp32_flops_per_s": d.hardware.flops_per_s("fp32"),
                           "compute_slowdown": _r(st.inputs.slowdown[i]), "samples": int(p.samples[i]),
                           "task_histogram": [int(x) for x in st.inputs.signatures[i]]}
                    for i, d in enumerate(pop.devices)}},
                "batch_size": o.batch_size, "seq_len": o.seq_len, "answer_tokens": o.answer_tokens,
                "local_steps": o.local_steps, "rounds": o.rounds, "round_overhead_s": o.round_overhead_s,
                "profile": {k: (_r(v, 9) if isinstance(v, float) else v) for k, v in prof.to_dict().items()},
                "lora_block_bytes": st.lora_block_bytes},
        constraints={"memory_margin": o.memory_margin, "deadline_s": None if not np.isfinite(o.deadline_s) else o.deadline_s,
                     "allow_sit_out": o.allow_sit_out, "coverage": "every added block has a trainer"},
        notes=tuple(dict.fromkeys(ctx.notes)),
    )
