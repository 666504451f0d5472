"""spec-serve phases: workload -> calibrate (real drafters and target, cached) -> solve -> baselines -> lift.

The calibration is measured once per (model, drafters, workload, seed, prompts, tokens) and cached on disk, so
planning again from the same inputs writes the same plan bytes (delete the cache entry to measure again).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from planner.families.base import PlanContext
from planner.plan_refs import hardware_ref, solver_trace
from planner.schema import BaselineResult, ModelRef, Objective, Plan, SolverInfo

CALIBRATION_VERSION = 4
ABLATIONS = {"no-routing": {"routing": False}, "no-fusion": {"fusion": False},
             "no-pipelining": {"pipelined": False}, "fixed-gamma": {"one_gamma": True}}
DESCRIPTIONS = {
    "target-only": "target-only serving on the verifier (one token per request and forward, the group's requests "
                   "batched in one forward, same requests)",
    "no-routing": "CoSine without routing: one drafter set for every domain",
    "no-fusion": "CoSine without fusion: one drafter per request",
    "no-pipelining": "CoSine without pipelining: draft, then verify (barrier)",
    "fixed-gamma": "CoSine with one fixed γ for every domain, no adaptation",
    "replicas-target-only": "target-only replicated on every node that holds the target (verifier and drafter "
                            "nodes, each at its emulated speed), requests split by a standard router: the "
                            "equal-node-count baseline",
}
TARGET_PARAMS = 134.5e6          # SmolLM2-135M: 28.3 M embedding/head + 30 x 3.54 M per block (fp32 replicas)


@dataclass
class SpecServeState:
    """What the phases pass along."""

    topology: Any = None
    prompts: list[Any] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    domains: tuple[str, ...] = ()
    model_rec: dict[str, Any] = field(default_factory=dict)
    drafters: dict[str, dict[str, Any]] = field(default_factory=dict)
    calib: dict[str, Any] = field(default_factory=dict)
    problem: Any = None
    solution: Any = None
    baselines: dict[str, Any] = field(default_factory=dict)
    recommended: str = "cosine"
    why: str = ""


def model_record(spec: Any, tiny: bool, seed: int) -> dict[str, Any]:
    """How the runtime builds the target: real weights by name, or the tiny random model from its config."""
    if tiny:
        from profilers.models import transformers_config

        cfg = transformers_config(spec, True).to_dict()
        keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_parameters",
                "tie_word_embeddings", "hidden_act", "bos_token_id", "eos_token_id", "pad_token_id")
        return {"name": spec.name, "tiny": True, "seed": int(seed), "config": {k: cfg[k] for k in keep if k in cfg},
                "eos": [int(spec.config.get("eos_token_id", 2))]}
    return {"name": spec.name, "tiny": False, "seed": int(seed), "eos": [int(spec.config.get("eos_token_id", 2))]}


def drafter_records(names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Runtime records of the drafters (`eeK` -> early exit after K layers; `distK-DOM` -> K blocks distilled on
    domain DOM with the default settings of testbeds/distill.py, which the record names)."""
    from testbeds.distill import DistillSpec

    out: dict[str, dict[str, Any]] = {}
    for n in names:
        if n == "ngram":
            out[n] = {"name": n, "kind": "ngram"}
        elif n.startswith("dist"):
            k, dom = n[4:].split("-", 1)
            out[n] = {"name": n, "kind": "distilled", "layers": int(k), "spec": asdict(DistillSpec(dom, layers=int(k)))}
        else:
            out[n] = {"name": n, "kind": "early_exit", "layers": int(n[2:])}
    return out


def ensure_drafters(ctx: PlanContext) -> None:
    """Distil every `distK-DOM` drafter that is not cached yet (minutes of CPU each; testbeds/distill.py)."""
    st = ctx.state
    todo = [d for d in st.drafters.values() if d["kind"] == "distilled"]
    if not todo:
        return
    from runtime.spec_serve.nodes import build_target, distill_spec, model_key
    from testbeds.distill import ensure_distilled, weights_path
    from testbeds.smollm2 import load_tokenizer

    missing = [d for d in todo if not weights_path(model_key(st.model_rec), distill_spec(d)).exists()]
    if not missing:
        return
    target = build_target(st.model_rec)
    for d in missing:
        ctx.progress(f"distilling drafter {d['name']} (not cached; benchmarks/spec_serve_drafters.py builds them)")
        ensure_distilled(target, model_key(st.model_rec), distill_spec(d), load_tokenizer(),
                         tuple(st.model_rec.get("eos", ())), ctx.progress)


def request_ids(prompts: list[Any], vocab: int, tokenizer: Any) -> list[list[int]]:
    """Chat-template token ids of each prompt (folded into a tiny model's vocabulary)."""
    from testbeds.prompts import chat_ids

    return [[t % vocab for t in chat_ids(tokenizer, p)] for p in prompts]


def workload(ctx: PlanContext) -> None:
    """Calibration prompts: `--calibration-prompts` per domain of the workload, from their own seed."""
    from planner.families.spec_serve.nodes_file import load_nodes
    from testbeds.smollm2 import load_tokenizer
    from testbeds.specs import build_workload, parse_workload

    o = ctx.options
    st = ctx.state = SpecServeState()
    st.topology = load_nodes(o.nodes)
    wl = parse_workload(o.workload)
    doms = wl.tasks if wl.suite == "mix" else tuple(sorted({p.task for p in build_workload(wl)}))
    st.domains = tuple(doms)
    cal = parse_workload(f"mix:{','.join(doms)}:{o.calibration_prompts * len(doms)}") if wl.suite == "mix" else wl
    st.prompts = build_workload(cal, seed=o.seed + CALIBRATION_SEED_OFFSET)
    st.model_rec = model_record(ctx.spec, ctx.request.tiny, o.seed)
    vocab = int(st.model_rec["config"]["vocab_size"]) if ctx.request.tiny else int(ctx.spec.config["vocab_size"])
    st.ids = request_ids(st.prompts, vocab, load_tokenizer())
    st.drafters = drafter_records(o.drafters)
    if ctx.request.tiny:
        ctx.notes.append("tiny random model: the mechanics are real, acceptance rates and times are not meaningful")


CALIBRATION_SEED_OFFSET = 7_919      # calibration prompts never share the served workload's seed
CENTROID_PROMPTS = 20                # prompts per domain embedded for the routing centroids (MiniLM only: cheap)


def calibrate(ctx: PlanContext) -> None:
    """Measured acceptance, times and centroids (cached; see the module docstring)."""
    from core.atomic_io import write_bytes_atomic
    from core.cache import cache_dir, cache_key
    from planner.families.spec_serve.measure import calibrate as measure

    st, o = ctx.state, ctx.options
    ensure_drafters(ctx)
    key = cache_key("spec_serve_calibration", CALIBRATION_VERSION, ctx.spec.fingerprint(ctx.request.tiny),
                    sorted(o.drafters), [st.drafters[n] for n in sorted(st.drafters)], list(st.domains), o.seed, o.calibration_prompts, o.new_tokens, o.gamma_max,
                    o.fanout > 1)
    path = cache_dir() / "spec_serve" / f"{key}.json"
    if path.exists() and not o.recalibrate:
        try:
            st.calib = json.loads(path.read_text())     # no note: the plan bytes must not depend on it
            return
        except (OSError, ValueError):
            pass
    from testbeds.specs import build_workload, parse_workload

    more = build_workload(parse_workload(f"mix:{','.join(st.domains)}:{CENTROID_PROMPTS * len(st.domains)}"),
                          seed=o.seed + CALIBRATION_SEED_OFFSET + 1) if st.prompts and st.prompts[0].suite == "mix" else []
    c = measure(st.model_rec, st.drafters, st.prompts, st.ids, st.domains, o.new_tokens, o.gamma_max, o.fanout > 1,
                ctx.progress, more)
    d = asdict(c)
    d["alpha"] = np.round(c.alpha, 6).tolist()
    d["tokens_per_verify"] = np.round(c.tokens_per_verify, 6).tolist()
    d["sets"] = [list(s) for s in c.sets]
    d["draft_cpu_s"] = {k: float(f"{v:.4g}") for k, v in c.draft_cpu_s.items()}
    d["verify_cpu_s"] = [float(f"{x:.4g}") for x in c.verify_cpu_s]
    d["verify_points"] = [[t, float(f"{s:.4g}")] for t, s in c.verify_points]
    d["host_bytes_per_s"] = float(f"{c.host_bytes_per_s:.4g}")
    d["prefill_verify_cpu_s_per_token"] = float(f"{c.prefill_verify_cpu_s_per_token:.4g}")
    d["prefill_draft_cpu_s_per_token"] = {k: float(f"{v:.4g}") for k, v in c.prefill_draft_cpu_s_per_token.items()}
    d["prompt_tokens"] = [round(x, 3) for x in c.prompt_tokens]
    d["verify_batch_points"] = [[bb, tt, float(f"{ss:.4g}")] for bb, tt, ss in c.verify_batch_points]
    text = json.dumps(d, sort_keys=True)
    st.calib = json.loads(text)          # the same values whether measured now or read from the cache
    write_bytes_atomic(path, text.encode())


def lower(ctx: PlanContext) -> Any:
    """Calibration + topology -> SpecServeProblem (drafters, nodes, domains, sets in fixed order)."""
    from planner.families.spec_serve.nodes_file import node_scale
    from solvers.spec_serve.problem import SpecServeProblem
    from testbeds.specs import parse_workload

    st, o, c = ctx.state, ctx.options, ctx.state.calib
    topo = st.topology
    host = float(c["host_bytes_per_s"])
    names = tuple(st.drafters)
    sets = tuple(tuple(sorted(names.index(n) for n in s)) for s in c["sets"])
    nodes = tuple(n.name for n in topo.drafters)
    wl = parse_workload(o.workload)
    share = np.full(len(st.domains), 1.0 / len(st.domains))
    weights = {n: (2 ** 20 if st.drafters[n]["kind"] == "ngram" else 0) for n in names}
    ok = np.ones((len(nodes), len(names)), dtype=bool)
    for i, n in enumerate(topo.drafters):
        for j, d in enumerate(names):
            if st.drafters[d]["kind"] != "ngram":
                # fp32 early-exit weights: embedding/head + K blocks (SmolLM2: 28.3 M + 3.54 M per block)
                need = 4 * (28.3e6 + 3.54e6 * st.drafters[d]["layers"]) + weights[d]
                ok[i, j] = need < 0.8 * float(n.hardware.memory_bytes)
    # a target replica (the equal-node-count baselines): fp32 weights within the same share of the node's memory
    target_ok = np.array([4 * TARGET_PARAMS < 0.8 * float(n.hardware.memory_bytes) for n in topo.drafters], dtype=bool)
    return SpecServeProblem(
        drafters=names, nodes=nodes, domains=st.domains, sets=sets,
        alpha=np.array(c["alpha"]), draft_cpu_s=np.array([c["draft_cpu_s"][n] for n in names]),
        verify_cpu_s=tuple(c["verify_cpu_s"]),
        node_scale=np.array([node_scale(n.hardware, host) for n in topo.drafters]),
        verifier_scale=node_scale(topo.verifier.hardware, host),
        link_delay_s=np.array([topo.delay_s[n] for n in nodes]), link_rate_bps=np.array([topo.rate_bps[n] for n in nodes]),
        domain_share=share, requests=int(wl.count or len(st.prompts)), new_tokens=float(o.new_tokens),
        arrival_rps=o.arrival_rps, gamma_max=o.gamma_max, max_fanout=o.fanout, node_ok=ok, target_ok=target_ok,
        prefill_verify_cpu_s=float(c["prefill_verify_cpu_s_per_token"]),
        prefill_draft_cpu_s=np.array([c["prefill_draft_cpu_s_per_token"][n] for n in names]),
        prompt_tokens=np.array(c["prompt_tokens"]),
        meta={"tokens_per_verify": c["tokens_per_verify"], "verify_curve": verify_curve(c["verify_points"]),
              "verify_batch_grid": verify_batch_grid(c.get("verify_batch_points") or []),
              "tokens_by_domain": tokens_by_domain(c, st.domains, o), "verifier_name": topo.verifier.name})


def verify_curve(points: list[list[float]]) -> list[list[float]]:
    """Median measured verifier CPU seconds per probed token count T (sorted by T)."""
    by: dict[int, list[float]] = {}
    for t, s in points:
        by.setdefault(int(t), []).append(float(s))
    return [[t, float(np.median(v))] for t, v in sorted(by.items())]


def verify_batch_grid(points: list[list[float]]) -> list[list[float]]:
    """Median measured CPU seconds of one batched verification forward per probed (B requests, T tokens each),
    sorted by (B, T)."""
    by: dict[tuple[int, int], list[float]] = {}
    for b, t, s in points:
        by.setdefault((int(b), int(t)), []).append(float(s))
    return [[b, t, float(np.median(v))] for (b, t), v in sorted(by.items())]


def tokens_by_domain(c: dict[str, Any], domains: tuple[str, ...], o: Any) -> list[float]:
    """Mean tokens the target generated per calibration request of each domain (requests that stop at the end
    token generate fewer than --new-tokens)."""
    pos = c.get("positions") or {}
    return [min(float(o.new_tokens), float(pos.get(d, o.new_tokens * o.calibration_prompts)) / o.calibration_prompts)
            for d in domains]


def solve(ctx: PlanContext) -> None:
    """CoSine's configuration (placement, routing, γ, batch cap) by the cost-model search."""
    from solvers.spec_serve.cosine import solve as cosine
    from solvers.spec_serve.validate import validate

    from solvers.spec_serve.cosine import rescore

    st = ctx.state
    st.problem = lower(ctx)
    st.solution = rescore(st.problem, cosine(st.problem))
    bad = validate(st.problem, st.solution.config)
    if bad:
        raise RuntimeError("CoSine's configuration is invalid (a bug): " + "; ".join(bad))


def baselines(ctx: PlanContext) -> None:
    """Target-only, the co-located single-drafter speculation per drafter (transformers' assisted generation and
    prompt lookup), and CoSine's ablations, on the same problem and scored by the same engine replay as CoSine's
    configuration; the recommendation is the best of CoSine, target-only and the single drafters."""
    from dataclasses import replace

    from solvers.spec_serve.cosine import (colocated, recommend, replica_nodes, replicated, rescore, solve as cosine,
                                           target_only)

    st, p = ctx.state, ctx.state.problem
    st.baselines["target-only"] = target_only(p)
    for d, name in enumerate(p.drafters):
        st.baselines[f"assisted-{name}"] = colocated(p, d)
    # equal node count: the same one-node configurations replicated on every node that can hold the target
    if len(replica_nodes(p)[0]) > 1:
        st.baselines["replicas-target-only"] = replicated(p)
        for d, name in enumerate(p.drafters):
            st.baselines[f"replicas-assisted-{name}"] = replicated(p, d)
    for name, kw in ABLATIONS.items():
        st.baselines[name] = rescore(p, cosine(p, **kw))
    # the search is a heuristic: an ablation lies inside CoSine's space (pipelining aside), so a better ablation
    # configuration found by its own search becomes CoSine's (never reported as a win over itself)
    for name in ("no-routing", "no-fusion", "fixed-gamma"):
        if st.baselines[name].objective > st.solution.objective * (1 + 1e-9):
            st.solution = replace(st.baselines[name], params=dict(st.solution.params))
            ctx.notes.append(f"the search's own configuration was beaten by its {name} restriction's; CoSine uses "
                             "that configuration (routing, fusion and adaptive γ stay on at run time)")
    st.recommended, st.why = recommend({"cosine": st.solution, **st.baselines}, online=p.arrival_rps > 0)
    ctx.notes.append(f"recommended: {st.why}")


def _metrics(m: Any) -> dict[str, Any]:
    return {"goodput_tps": round(m.goodput_tps, 4), "tokens_per_verify": round(m.tokens_per_verify, 4),
            "latency_p50_s": round(m.latency_p50_s, 4), "latency_p95_s": round(m.latency_p95_s, 4),
            "verifier_idle": round(m.verifier_idle, 4), "drafter_idle": round(m.drafter_idle, 4),
            "cycle_s": round(m.cycle_s, 6), "t_draft_s": round(m.t_draft_s, 6), "t_verify_s": round(m.t_verify_s, 6),
            "utilisation": round(min(m.utilisation, 1e6), 4), "stable": bool(m.stable)}


def config_record(p: Any, sol: Any) -> dict[str, Any]:
    """A configuration by name: placement, routing (domain -> ordered drafter sets with weights and γ), cap."""
    from solvers.spec_serve.cost import expected_tokens

    cfg = sol.config
    placement = {p.nodes[n]: (p.drafters[d] if d >= 0 else None) for n, d in enumerate(cfg.placement)}
    colo = p.drafters[cfg.colocated] if cfg.colocated >= 0 else None
    placed = {p.drafters[d] for d in cfg.placement if d >= 0} | {"ngram"} | ({colo} if colo else set())
    routing: dict[str, list[dict[str, Any]]] = {}
    etab: dict[str, dict[str, float]] = {}
    for c, dom in enumerate(p.domains):
        s, g = cfg.routing[c], cfg.gamma[c]
        entries = []
        if s >= 0 and g > 0:
            # the chosen set first, then every other placed set by measured acceptance (re-routing on failure)
            order = [s] + sorted((x for x in range(len(p.sets)) if x != s and
                                  all(p.drafters[d] in placed for d in p.sets[x])
                                  and len(p.sets[x]) <= len(p.sets[s])),
                                 key=lambda x: (-p.alpha[x, c], x))
            for x in order:
                singles = [p.set_index((d,)) for d in p.sets[x]]
                w = [round(max(float(p.alpha[i, c]), 1e-3), 6) for i in singles]
                entries.append({"drafters": [p.drafters[d] for d in p.sets[x]], "weights": w,
                                "gamma": int(g), "alpha": round(float(p.alpha[x, c]), 6)})
            etab[dom] = {str(k): round(expected_tokens(p, s, c, k), 6) for k in range(0, p.gamma_max + 1)}
        routing[dom] = entries
    rec = {"placement": placement, "colocated": colo, "routing": routing, "group": int(cfg.group),
           "pipelined": bool(cfg.pipelined),
           "adaptive": not bool(sol.params.get("one_gamma", False)) and any(g > 0 for g in cfg.gamma),
           "expected_tokens": etab}
    if sol.params.get("replicas"):
        # replicated on every node: one replica per node at that node's emulated speed, requests split by `router`
        rec["replicas"] = [{"node": n, "scale": round(float(x), 6)}
                           for n, x in zip(sol.params["replicas"], sol.params["replica_scales"])]
        rec["router"] = sol.params["router"]
        rec["placement"] = {n: None for n in placement}      # drafter nodes hold replicas, not drafters
    return rec


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan."""
    st, o, fam = ctx.state, ctx.options, ctx.family
    p, sol, c = st.problem, st.solution, st.calib
    # the plan never recommends what its own baselines beat: the recommendation is the best predicted goodput
    # among CoSine, target-only and the co-located single drafters, all scored by the same replay
    chosen_name = st.recommended
    chosen = sol if chosen_name == "cosine" else st.baselines[chosen_name]
    decisions = {
        "configuration": chosen_name,
        "recommendation": {"configuration": chosen_name, "why": st.why,
                           "predicted_goodput_tps": {n: round(float(x.objective), 4) for n, x in
                                                     sorted({"cosine": sol, **st.baselines}.items())}},
        **config_record(p, chosen),
        "gamma_bounds": [1, int(o.gamma_max)],
        "gamma_by_domain": {d: int(chosen.config.gamma[i]) for i, d in enumerate(p.domains)},
        "domains": list(p.domains), "centroids": c["centroids"],
        "routing_accuracy_calibration": round(float(c["routing_accuracy"]), 4),
        "drafters": st.drafters, "decoding": "greedy" if o.greedy else "sample",
        "node_scale": {n: round(float(s), 6) for n, s in zip(p.nodes, p.node_scale)},
        "verifier": {"name": st.topology.verifier.name, "scale": round(float(p.verifier_scale), 6)},
        "links": {n: {"delay_s": float(st.topology.delay_s[n]), "rate_bps": float(st.topology.rate_bps[n])}
                  for n in p.nodes},
        "acceptance": {"+".join(s): {d: c["alpha"][i][j] for j, d in enumerate(p.domains)}
                       for i, s in enumerate(c["sets"])},
        "tokens_per_verify_table": {"+".join(s): {d: c["tokens_per_verify"][i][j] for j, d in enumerate(p.domains)}
                                    for i, s in enumerate(c["sets"])},
        "draft_cpu_s": c["draft_cpu_s"], "verify_cpu_s": c["verify_cpu_s"],
        "verify_batch_grid": p.meta.get("verify_batch_grid", []),
        "prefill_cpu_s_per_token": {"verifier": c["prefill_verify_cpu_s_per_token"],
                                    **c["prefill_draft_cpu_s_per_token"]},
        "host_bytes_per_s": c["host_bytes_per_s"], "model": st.model_rec,
        "workload": o.workload, "arrival_rps": o.arrival_rps, "new_tokens": o.new_tokens, "seed": o.seed,
    }
    base = {}
    for name, s in st.baselines.items():
        rec = config_record(p, s)
        cap = s.params.get("batch_cap", 1)
        default = (f"single-drafter speculation, {s.params.get('drafter')} drafting on the verifier (transformers' "
                   f"assisted generation served by the engine, batch cap {cap})" if s.params.get("drafter") != "ngram"
                   else f"prompt-lookup speculation on the verifier (served by the engine, batch cap {cap})")
        if s.params.get("replicas") and s.params.get("drafter"):
            default = (f"{default.replace('on the verifier', 'beside the target')}, replicated on every node "
                       f"({', '.join(s.params['replicas'])}; {s.params['router']} router): equal node count")
        base[name] = BaselineResult(DESCRIPTIONS.get(name, default),
                                    {k: v for k, v in s.params.items()}, _metrics(s.metrics), {},
                                    {**rec, "gamma_by_domain": {d: int(s.config.gamma[i]) for i, d in enumerate(p.domains)}})
    if chosen_name != "cosine":
        base["cosine"] = BaselineResult("CoSine's own configuration", dict(sol.params), _metrics(sol.metrics), {},
                                        config_record(p, sol))
    topo = st.topology
    s = ctx.spec
    ctx.plan = Plan(
        family=fam.name,
        model=ModelRef(s.name, s.fingerprint(ctx.request.tiny), s.source, dtype="fp32", tiny=ctx.request.tiny),
        hardware=hardware_ref(topo.verifier.hardware, "verifier"),
        extra_hardware=tuple(hardware_ref(n.hardware, f"drafter {n.name}") for n in topo.drafters),
        solver=SolverInfo(name="CoSine cost-model search (placements x coordinate ascent on routing, γ, batch cap)",
                          status=chosen.status.value, config={"placements": len(sol.trace)},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=len(sol.trace), trace=solver_trace(sol.trace, limit=20)),
        objective=Objective(fam.objective_metric, fam.objective_sense, round(float(chosen.objective), 4)),
        decisions=decisions,
        predicted=_metrics(chosen.metrics),
        baselines=base,
        bound=None,
        inputs={"scenario_reason": ctx.scenario_reason, "nodes_file": topo.source, "workload": o.workload,
                "arrival_rps": o.arrival_rps, "drafters": list(o.drafters), "seed": o.seed,
                "calibration_prompts_per_domain": o.calibration_prompts,
                "emulation": "node times = CPU seconds on this machine x (this machine's copy bandwidth / node's "
                             "effective memory bandwidth); links = delay + bytes/rate (EMULATED)"},
        constraints={"gamma_max": o.gamma_max, "fanout": o.fanout},
        notes=tuple(dict.fromkeys(ctx.notes)),
    )


def validate_plan(plan: Plan) -> list[str]:
    """Constraints checkable from the plan alone."""
    bad = []
    d = plan.decisions
    lo, hi = d.get("gamma_bounds", [1, 1])
    for dom, g in d.get("gamma_by_domain", {}).items():
        if g and not lo <= g <= hi:
            bad.append(f"γ {g} for {dom} outside [{lo}, {hi}]")
    placed = {v for v in d.get("placement", {}).values() if v} | {"ngram"} | ({d["colocated"]} if d.get("colocated") else set())
    for dom, entries in d.get("routing", {}).items():
        for e in entries[:1]:
            missing = [x for x in e["drafters"] if x not in placed]
            if missing:
                bad.append(f"{dom} is routed to {missing[0]}, which no node hosts")
            if len(e["drafters"]) > int(plan.constraints.get("fanout", 2)):
                bad.append(f"{dom} uses {len(e['drafters'])} drafters, above the fan-out")
    return bad
