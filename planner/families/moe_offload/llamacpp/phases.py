"""Phases of a `--target llama.cpp` plan: lower -> solve -> baselines -> bound -> simulate -> verify -> lift.

They mirror the moe-offload phases one for one (the family dispatches on the options' type). The
solver is exact for its cost model, so `verify` has nothing to repair; there is no simulator for this
target (a static placement reads the same k experts per decode step whatever the routing, so a
replay of a routing trace would reproduce the analytic sum), and the plan says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


from core.errors import PlannerError
from planner.families.base import PlanContext
from planner.families.moe_offload.llamacpp.lowering import GROUPS, LlamaCppLowered, LlamaCppOptions
from planner.plan_refs import hardware_ref, solver_trace
from planner.schema import BaselineResult, Bound, ModelRef, Objective, Plan, SolverInfo

TARGET = "llama.cpp"


@dataclass
class LlamaCppState:
    """What the llama.cpp phases pass along."""

    lowered: LlamaCppLowered | None = None
    solution: Any = None
    baselines: dict[str, Any] = field(default_factory=dict)
    bound: Any = None


def options(ctx: PlanContext) -> LlamaCppOptions:
    """Typed options of a llama.cpp plan; flags of the planner's own runtime are refused by name."""
    v = ctx.request.flags
    ctx.require_hardware()
    ours = ("--expert-bits", "--expert-budget", "--trace", "--trace-preset", "--trace-tokens", "--theta-granularity",
            "--k-prefetch", "--inner", "--sim-tokens", "--no-cpu-experts", "--calibration", "--objective",
            "--target-tpot", "--target-ttft")
    for name in ours:
        if name in v.given:
            fix = ("use --quant for the GGUF file type" if name == "--expert-bits" else
                   "use a capped device such as rtx4090_16gb for less VRAM" if name == "--expert-budget" else
                   "drop it: the llama.cpp plan minimises TPOT and reports TTFT for --prompt-tokens"
                   if name in ("--objective", "--target-tpot", "--target-ttft") else f"drop {name}")
            raise PlannerError(f"{name} applies to the planner's own runtime, not to --target llama.cpp "
                               "(whole tensors, no expert cache)", fix)
    cb = v.get("compute_buffer")
    # the request shape of issue 13: --prompt-tokens (0: no prompt) and --output-tokens
    prompt, answer = v["prompt_tokens"], v["output_tokens"]
    from planner.families.moe_offload import request_context

    return LlamaCppOptions(quant=v["quant"], context_tokens=request_context(v), batch=v["batch"], ubatch=v["ubatch"],
                           compute_buffer_bytes=int(cb) if cb is not None else None, prompt_tokens=int(prompt),
                           output_tokens=int(answer))


def lower(ctx: PlanContext) -> None:
    """Build the placement problem from the model's config, the device and the GGUF file type."""
    from planner.families.moe_offload.llamacpp.lowering import lower as lower_llamacpp
    from profilers.models import transformers_config

    if ctx.moe_structure() is None:
        raise PlannerError(f"{ctx.spec.name} has no MoE layers, so moe-offload does not apply",
                           "pick an MoE model (e.g. mixtral-8x7b) or another --scenario")
    ctx.state = LlamaCppState()
    config = transformers_config(ctx.spec, ctx.request.tiny).to_dict()
    ctx.state.lowered = lower_llamacpp(config, ctx.require_hardware(), ctx.options)
    ctx.notes.extend(ctx.state.lowered.notes)


def solve(ctx: PlanContext) -> None:
    """The exact placement solver, checked by the validator."""
    from solvers.moe_offload.llamacpp.pareto import solve as pareto
    from solvers.moe_offload.llamacpp.validate import validate

    st = ctx.state
    st.solution = pareto(st.lowered.problem)
    bad = validate(st.lowered.problem, st.solution)
    if bad:
        raise RuntimeError("the llama.cpp placement solver returned an invalid plan (a bug): " + "; ".join(bad))


def baselines(ctx: PlanContext) -> None:
    """--cpu-moe, the best --n-cpu-moe, and whole-layer fill on the same problem."""
    from solvers.moe_offload.llamacpp.baselines import BASELINES
    from solvers.moe_offload.llamacpp.validate import validate

    p = ctx.state.lowered.problem
    for b in BASELINES:
        sol = b.solve(p)
        bad = validate(p, sol)
        if bad:
            raise RuntimeError(f"baseline {b.name} is invalid (a bug): " + "; ".join(bad))
        ctx.state.baselines[b.name] = sol
        if not sol.feasible:
            ctx.notes.append(f"baseline {b.name} does not fit: it needs {sol.metrics.vram_bytes / 2**30:.2f} GiB for weights "
                             f"and KV cache, the budget is {p.budget_bytes / 2**30:.2f} GiB")


def bound(ctx: PlanContext) -> None:
    """Lower bound: every tensor on the GPU (unlimited VRAM)."""
    from solvers.moe_offload.llamacpp.cost import evaluate

    p = ctx.state.lowered.problem
    ctx.state.bound = evaluate(p, 0, p.group_present.copy(), True)


def simulate(ctx: PlanContext) -> None:
    """No simulator for a static placement (see the module docstring)."""


def requests(ctx: PlanContext) -> None:
    """Nothing to add: the llama.cpp plan's TTFT follows llama.cpp's own copy rule and is computed in `lift`."""


def verify(ctx: PlanContext) -> None:
    """The solver is exact over the space every baseline lies in: check that no feasible baseline beats it."""
    st = ctx.state
    for name, b in st.baselines.items():
        if b.feasible and b.objective < st.solution.objective * (1 - 1e-9):
            raise RuntimeError(f"baseline {name} beats the exact llama.cpp placement (a bug)")


# ------------------------------------------------------------------ lift
def n_gpu_layers(host_layers: int, n_layer: int, output_on_gpu: bool) -> int:
    """llama.cpp's -ngl for a placement (the output head counts as one more layer)."""
    return n_layer - host_layers + (1 if output_on_gpu else 0)


def placement_decisions(low: LlamaCppLowered, sol: Any) -> dict[str, Any]:
    """Per-block decisions (names, not indices) with the numbers behind them."""
    p = low.problem
    m = sol.metrics
    layers = []
    for l, name in enumerate(p.layer_names):
        host_block = l < sol.host_layers
        here = [GROUPS[g] for g in range(p.num_groups) if p.group_present[l, g]]
        gpu = [GROUPS[g] for g in range(p.num_groups) if p.group_present[l, g] and sol.gpu_groups[l, g]]
        layers.append({"block": name, "index": l, "host_block": host_block, "gpu_groups": gpu,
                       "host_groups": [g for g in here if g not in gpu],
                       "vram_bytes": int(m.layer_vram_bytes[l]), "group_bytes": {g: int(p.group_bytes[l, GROUPS.index(g)]) for g in here},
                       "predicted": {"time_ms": float(m.layer_time_s[l] * 1e3)}})
    return {"host_layers": int(sol.host_layers), "output_on_gpu": bool(sol.output_on_gpu),
            "n_gpu_layers": n_gpu_layers(sol.host_layers, p.num_layers, sol.output_on_gpu), "layers": layers}


def metrics_dict(low: LlamaCppLowered, sol_metrics: Any, placement: tuple[int, Any, bool], fits: bool = True) -> dict[str, Any]:
    """Plan-level predicted figures (ms per decode step and per request, bytes)."""
    mem = low.memory
    o = low.options
    ttft = low.ttft_s(*placement) * 1e3
    return {"tpot_ms": sol_metrics.tpot_s * 1e3, "tokens_per_s": 1.0 / sol_metrics.tpot_s,
            "ttft_ms": ttft, "e2e_ms": ttft + o.output_tokens * sol_metrics.tpot_s * 1e3,
            "prompt_tokens": o.prompt_tokens, "output_tokens": o.output_tokens,
            "vram_bytes": int(sol_metrics.vram_bytes),
            "vram_total_bytes": int(sol_metrics.vram_bytes + mem["compute_buffer_bytes"]),
            "gpu_group_bytes": int(sol_metrics.gpu_group_bytes), "host_group_bytes": int(sol_metrics.host_group_bytes),
            "host_switches_per_token": int(sol_metrics.host_switches), "fits": bool(fits),
            "source": ("analytic cost model of llama.cpp's static placement (decode batch %d; prompt in -ub %d "
                       "micro-batches, host weights copied to the GPU from 32 tokens)" % (o.batch, o.ubatch))}


def baseline_decisions(low: LlamaCppLowered, sol: Any) -> dict[str, Any]:
    """Compact decisions of a baseline."""
    d = placement_decisions(low, sol)
    return {"host_layers": d["host_layers"], "output_on_gpu": d["output_on_gpu"], "n_gpu_layers": d["n_gpu_layers"],
            "host_groups": [l["host_groups"] for l in d["layers"]]}


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan with names, memory and its sources, baselines and the bound."""
    from solvers.moe_offload.llamacpp.baselines import baseline

    st = ctx.state
    low, sol = st.lowered, st.solution
    p = low.problem
    m = low.model
    o = low.options
    pred = metrics_dict(low, sol.metrics, (sol.host_layers, sol.gpu_groups, sol.output_on_gpu))
    base = {}
    for name, b in st.baselines.items():
        params = {k: v for k, v in b.params.items()}
        base[name] = BaselineResult(baseline(name).description, params, metrics_dict(low, b.metrics, (b.host_layers, b.gpu_groups, b.output_on_gpu), b.feasible), {},
                                    baseline_decisions(low, b))
    bound_ms = st.bound.tpot_s * 1e3
    plan_ms = sol.objective * 1e3
    bnd = Bound(value=bound_ms, kind="every tensor on the GPU (unlimited VRAM)", gap=(plan_ms - bound_ms) / bound_ms,
                predicted=metrics_dict(low, st.bound, (0, p.group_present, True), st.bound.vram_bytes <= p.budget_bytes))
    types_used: dict[str, dict[str, int]] = {}
    for t in m.tensors:
        stem = t.stem if t.stem in GROUPS else "other"
        typ = low.types[t.name]
        types_used.setdefault(stem, {}).setdefault(typ, 0)
        types_used[stem][typ] += 1
    decisions = {
        "target": TARGET,
        "quant": o.quant,
        "arch": m.arch,
        "n_layer": m.n_layer,
        "n_expert": m.n_expert,
        "n_expert_used": m.n_expert_used,
        "groups": list(GROUPS),
        "context_tokens": o.context_tokens,
        "batch": o.batch,
        "ubatch": o.ubatch,
        "flash_attn": "on",
        "memory": dict(low.memory),
        "timing": {"source": low.timing_source, "switch_us": p.switch_s * 1e6},
        "tensor_types": {k: dict(sorted(v.items())) for k, v in sorted(types_used.items())},
        **placement_decisions(low, sol),
    }
    s = ctx.spec
    events = solver_trace(sol.trace)
    ctx.plan = Plan(
        family=ctx.family.name,
        model=ModelRef(s.name, s.fingerprint(ctx.request.tiny), s.source, num_params=int(sum(t.elements for t in m.tensors)),
                       dtype=o.quant, tiny=ctx.request.tiny),
        hardware=hardware_ref(ctx.hardware, "device"),
        solver=SolverInfo(name="exact Pareto-frontier DP over llama.cpp placements (-ngl, -ot)", status=sol.status.value,
                          config={"target": TARGET, "max_frontier_points": int(sol.params["max_frontier_points"])},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=len(sol.trace), trace=tuple(events)),
        objective=Objective("tpot_ms", "min", plan_ms),
        decisions=decisions,
        predicted=pred,
        simulated={},
        baselines=base,
        bound=bnd,
        inputs={"workload": {"context_tokens": o.context_tokens, "batch": o.batch, "phase": "decode",
                             "prompt_tokens": o.prompt_tokens, "output_tokens": o.output_tokens},
                "target": TARGET, "quant": o.quant, "scenario_reason": ctx.scenario_reason},
        constraints={"weights_and_kv_budget_bytes": int(p.budget_bytes)},
        notes=tuple(dict.fromkeys(ctx.notes + ["no simulator for --target llama.cpp: a static placement reads the same "
                                               "experts' bytes per decode step whatever the routing"])),
    )


def validate_plan(decisions: dict[str, Any], constraints: dict[str, Any]) -> list[str]:
    """Check a llama.cpp plan's constraints from its JSON alone."""
    out: list[str] = []
    try:
        budget = int(constraints["weights_and_kv_budget_bytes"])
        layers = decisions["layers"]
        host = int(decisions["host_layers"])
        out_gpu = bool(decisions["output_on_gpu"])
        n_layer = int(decisions["n_layer"])
        head = int(decisions["memory"]["output_head_bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        return [f"plan decisions are incomplete ({exc})"]
    if len(layers) != n_layer:
        out.append(f"{len(layers)} blocks listed for n_layer {n_layer}")
    used = sum(int(l["vram_bytes"]) for l in layers) + (head if out_gpu else 0)
    if used > budget:
        out.append(f"weights and KV cache on the GPU take {used} B, above the budget {budget} B")
    for i, l in enumerate(layers):
        if bool(l["host_block"]) != (i < host):
            out.append(f"{l['block']}: host blocks must be the first {host} (llama.cpp offloads the last -ngl blocks)")
        if l["host_block"] and (l["gpu_groups"] or int(l["vram_bytes"])):
            out.append(f"{l['block']}: a host block has tensors on the GPU")
        bad = set(l["gpu_groups"]) | set(l["host_groups"])
        if not bad <= set(GROUPS):
            out.append(f"{l['block']}: unknown tensor groups {sorted(bad - set(GROUPS))}")
    if out_gpu and host:
        out.append("the output head is on the GPU while blocks stay in host memory")
    if int(decisions.get("n_gpu_layers", -1)) != n_gpu_layers(host, n_layer, out_gpu):
        out.append(f"n_gpu_layers {decisions.get('n_gpu_layers')} does not match the placement")
    return out


def is_llamacpp_plan(plan: Any) -> bool:
    """Whether a moe-offload plan was made with --target llama.cpp."""
    return dict(plan.decisions).get("target") == TARGET
