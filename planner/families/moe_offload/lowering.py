"""moe-offload lowering and lifting: model profile + hardware + routing trace <-> MoeOffloadProblem <-> plan.

Lowering derives every number of the MoEpic problem (docs/moe-offload.md §2) and records where it came from:
  * expert bytes U_e at the serving precision (16 bits, or 8/4 bits with one fp16 scale and zero per
    64 weights, i.e. 4.5 bits/weight at 4 bits);
  * the expert-cache budget B = device memory - resident non-expert weights - KV cache for the
    workload - staging ring of (k + k_pf) whole experts - activation workspace - a 10 % margin,
    or the user's `--expert-budget`;
  * roofline times on the device (attention and router of each MoE layer incl. KV reads, one expert's
    compute t_x, the rest of the model) and the host->device bandwidth BW;
  * hit-rate curves h_i(C) for LCP, LRU, LFU and Belady by trace replay, recall p_i and distinct
    experts k_i from the trace.
Names stay here: the problem holds arrays in model layer order; `lift` maps them back.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from core.errors import PlannerError
from planner.units import fmt_bytes
from profilers.cache_replay import replay
from profilers.hardware import GIB, HardwareProfile
from profilers.moe import RoutingTrace, batch_view, split_parts, trace_stats
from profilers.moe_structure import MoeStructure
from solvers.common import InfeasibleError
from solvers.moe_offload.problem import MoeOffloadProblem

log = logging.getLogger(__name__)

QUANT_GROUP = 64          # weights per fp16 scale + fp16 zero point at 4/8 bits
WORKSPACE_FLOOR = 256 << 20


@dataclass(frozen=True)
class MoeOffloadOptions:
    """User-facing settings of the moe-offload family (CLI flags map onto these)."""

    expert_bits: int = 16
    context_tokens: int = 2048
    batch: int = 1
    expert_budget: tuple[str, float] | None = None   # ("bytes", n) or ("share", fraction of all expert bytes)
    margin_fraction: float = 0.10
    trace_path: str | None = None
    trace_preset: str = "moepic-calibrated"
    trace_tokens: int = 4096
    trace_sequences: int = 16               # synthetic traces: independent sequences (other prompts) in the trace
    seed: int = 0
    theta_granularity: int | None = None
    k_prefetch: int | None = None
    inner: str = "fixed_point"
    rho: float = 0.25
    omega: float = 128.0
    sim_tokens: int = 1024
    measured_timing: Mapping[str, Any] | None = None   # decode times measured on this CPU (a calibration file)
    calibration: Mapping[str, str] | None = None       # {"file": ..., "sha256": ...} of that file
    cpu_misses: bool = True                 # allow CPU-miss layers where the host's bandwidth is known
    split_misses: bool = True               # with cpu_misses: allow split layers (misses on link + device and host at once)
    warmup_tokens: int | None = None        # trace steps that warm caches before counting (auto: T/8, at most 256)
    prompt_tokens: int = 512                # whole requests (docs §12): prompt length per sequence
    output_tokens: int = 256                # ... and tokens generated per sequence
    objective: str = "e2e"                  # e2e | ttft | tpot
    target_tpot_ms: float | None = None     # dual mode: the smallest expert budget meeting this TPOT
    target_ttft_ms: float | None = None     # ... or this TTFT
    ubatch: int = 512                       # llama.cpp's -ub, for its prefill rules
    all_baselines: bool = False             # replay every baseline in the simulator (default: the strongest)
    robust: bool = False                    # pick the plan with the least worst-case regret over the constants' range

    def calibration_input(self) -> dict[str, Any]:
        """The plan's record of the calibration it used (nothing when planned from the roofline)."""
        return {"calibration": dict(self.calibration)} if self.calibration else {}


@dataclass(frozen=True)
class MemoryBreakdown:
    """Where the device memory goes (bytes)."""

    device_memory_bytes: int
    non_expert_bytes: int
    kv_cache_bytes: int
    staging_bytes: int
    workspace_bytes: int
    margin_bytes: int
    available_for_experts_bytes: int
    expert_cache_budget_bytes: int
    all_experts_bytes: int
    budget_source: str


@dataclass
class MoeLowered:
    """The problem plus everything lift and codegen need to name and explain it."""

    problem: MoeOffloadProblem
    memory: MemoryBreakdown
    trace: RoutingTrace                # the whole trace, one row per sequence step
    calibration: RoutingTrace          # the sequences the plan is chosen on, batched (docs §2: union over the batch)
    heldout: RoutingTrace              # disjoint sequences every simulated figure and the floor are scored on
    final_orders: dict[str, tuple[tuple[int, ...], ...]]
    structure: MoeStructure
    options: MoeOffloadOptions
    timing_source: str
    notes: list[str] = field(default_factory=list)
    constants: list[dict[str, Any]] = field(default_factory=list)   # every hardware constant with its source


def expert_bytes(structure: MoeStructure, bits: int) -> float:
    """U_e at `bits` per weight (16: the profiled dtype; 8/4: plus fp16 scale+zero per 64 weights)."""
    if bits >= 16:
        return float(structure.bytes_per_expert)
    if bits not in (4, 8):
        raise PlannerError(f"--expert-bits {bits} is not supported", "use 16, 8 or 4")
    n = structure.params_per_expert
    return n * bits / 8 + (n / QUANT_GROUP) * 4


def default_granularity(f: int) -> int:
    """Column granularity g of the split ratio (MoEpic's theta grid, docs/moe-offload.md §4)."""
    g = 128 if f >= 8192 else 16 if f < 512 else 64
    while g > 1 and f % g:
        g //= 2
    return g


def memory_breakdown(structure: MoeStructure, hw: HardwareProfile, opts: MoeOffloadOptions, u_e: float,
                     k_pf: int) -> MemoryBreakdown:
    """Derive the expert-cache budget B from the device memory, or take the user's."""
    mem = hw.memory_bytes
    non_expert = structure.non_expert_bytes
    kv = structure.kv_bytes_per_token * opts.context_tokens * opts.batch
    staging = int((structure.top_k + k_pf) * u_e)
    workspace = max(WORKSPACE_FLOOR, 8 * opts.batch * opts.context_tokens * structure.hidden_size * structure.dtype_bytes)
    margin = int(opts.margin_fraction * mem)
    available = mem - non_expert - kv - staging - workspace - margin
    all_experts = int(u_e * structure.num_experts * len(structure.moe_layers))
    if available < 0:
        need = mem - available
        raise InfeasibleError(
            f"{hw.name} has {fmt_bytes(mem)}, but the non-expert weights ({fmt_bytes(non_expert)}), KV cache for "
            f"{opts.context_tokens} tokens ({fmt_bytes(kv)}), staging ({fmt_bytes(staging)}), workspace and a "
            f"{opts.margin_fraction:.0%} margin need {fmt_bytes(need)}",
            f"use a device with at least {need / GIB:.1f} GiB, or lower --context (KV cache)")
    if opts.expert_budget is None:
        budget, source = min(available, all_experts), "derived from device memory"
    else:
        kind, value = opts.expert_budget
        if kind == "share":
            budget, source = int(value * all_experts), f"{value * 100:g}% of all expert bytes"
        else:
            budget, source = int(value), "given"
        if budget > available:
            raise InfeasibleError(
                f"an expert cache of {fmt_bytes(budget)} does not fit {hw.name}: after non-expert weights, KV cache, "
                f"staging, workspace and margin only {fmt_bytes(available)} is free",
                f"use --expert-budget {available / GIB:.2f}GiB or less, or a device with at least "
                f"{(mem + budget - available) / GIB:.1f} GiB")
        budget = min(budget, all_experts)
    return MemoryBreakdown(mem, non_expert, kv, staging, workspace, margin, int(available), int(budget),
                           all_experts, source)


def _cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def load_or_make_trace(structure: MoeStructure, model_name: str, opts: MoeOffloadOptions,
                       k_pf: int) -> RoutingTrace:
    """The user's trace (checked against the model) or a cached synthetic one."""
    L, N, k = len(structure.moe_layers), structure.num_experts, structure.top_k
    if opts.trace_path:
        trace = RoutingTrace.load(opts.trace_path)
        trace.check_matches(L, N, k, model_name)
        return trace
    from core.cache import cache_dir
    from profilers.synthetic_traces import PRESETS, generate_trace

    if opts.trace_preset not in PRESETS:
        raise PlannerError(f"unknown trace preset '{opts.trace_preset}'", f"use one of: {', '.join(PRESETS)}")
    key = _cache_key("trace", 4, L, N, k, k_pf, opts.trace_preset, opts.trace_tokens, opts.trace_sequences, opts.seed)
    path = cache_dir() / "traces" / f"{key}.npz"
    if path.exists():
        try:
            return RoutingTrace.load(path)
        except PlannerError:
            log.warning("cached trace %s unreadable; regenerating", path)
    trace = generate_trace(L, N, k, opts.trace_preset, k_prefetch=k_pf, model=model_name, tokens=opts.trace_tokens,
                           seed=opts.seed, sequences=opts.trace_sequences)
    trace.save(path)
    return trace


def warmup_steps(trace: RoutingTrace, opts: MoeOffloadOptions) -> int:
    """Steps that warm the caches before hit rates and times are counted (replay and simulator alike)."""
    w = opts.warmup_tokens if opts.warmup_tokens is not None else min(256, trace.num_tokens // 8)
    if not 0 <= w < trace.num_tokens:
        raise PlannerError(f"the routing trace has {trace.num_tokens} steps, too few to warm the caches and count hits",
                           "record or synthesise a longer trace (--trace-tokens 2048, or `planner trace --max-new-tokens`)")
    return w


def replay_curves(trace: RoutingTrace, rho: float, omega: float, warmup: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Hit curves per policy (cached on disk by trace fingerprint) and end-of-trace priority orders."""
    from core.cache import cache_dir

    key = _cache_key("curves", 3, trace.fingerprint(), rho, omega, warmup)
    path = cache_dir() / "curves" / f"{key}.npz"
    policies = ("lcp", "lru", "lfu", "belady")
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                curves = {p: z[p] for p in policies}
                orders = json.loads(bytes(z["orders"]).decode())
            return curves, {p: tuple(tuple(o) for o in orders[p]) for p in orders}
        except (OSError, KeyError, ValueError):
            log.warning("cached curves %s unreadable; replaying", path)
    curves, orders = {}, {}
    for p in policies:
        r = replay(trace.experts, trace.num_experts, p, rho, omega, warmup)
        curves[p] = r.curves
        orders[p] = r.final_order
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **curves, orders=np.frombuffer(json.dumps(orders).encode(), dtype=np.uint8))
    tmp.replace(path)
    return curves, orders


def layer_timing(structure: MoeStructure, hw: HardwareProfile, opts: MoeOffloadOptions, u_e: float) -> dict[str, Any]:
    """Roofline times (s) at decode, batch `opts.batch`, serving dtype bf16 on the device."""
    dtype = "bf16"
    db = structure.dtype_bytes
    ctx, b = opts.context_tokens, opts.batch
    moe_set = set(structure.moe_layers)
    kv_per_layer = structure.kv_bytes_per_token / max(structure.num_layers, 1)
    attn = []
    for info in structure.layers:
        if info.index not in moe_set:
            continue
        params = info.other_params + info.router_params + info.shared_expert_params
        flops = 2 * params * b + 4 * b * ctx * kv_per_layer / db
        bytes_ = params * db + kv_per_layer * ctx * b
        attn.append(hw.roofline_s(flops, bytes_, dtype))
    t_x = hw.roofline_s(2 * structure.params_per_expert * b, u_e, dtype)
    dense_params = sum(i.other_params + i.shared_expert_params + i.router_params for i in structure.layers
                       if i.index not in moe_set)
    # outside the MoE layers, a decode step reads the dense layers and the LM head in full (an
    # embedding lookup reads one row)
    head = structure.output_head_params
    other = hw.roofline_s(2 * (dense_params + head) * b, (dense_params + head) * db, dtype)
    host_bw = hw.host_bandwidth_bytes_per_s()
    host_tx = u_e / host_bw if host_bw else None
    return {"attention_s": np.array(attn), "expert_s": t_x, "other_s": other, "host_expert_s": host_tx}


def lower(structure: MoeStructure, model_name: str, hw: HardwareProfile,
          opts: MoeOffloadOptions, measured_timing: dict[str, Any] | None = None) -> MoeLowered:
    """Build the MoEpic problem for this model, device and workload."""
    if hw.measured and not hw.host_to_device_bytes_per_s:
        raise PlannerError(f"{hw.name} was measured without a host link (no CUDA device): its weights and its compute "
                           "share one memory, so there is nothing to offload experts over",
                           "plan for a GPU profile (`planner hardware list`), or measure on a machine with CUDA")
    k = structure.top_k
    k_pf = k if opts.k_prefetch is None else opts.k_prefetch
    if not 0 <= k_pf <= structure.num_experts:
        raise PlannerError(f"--k-prefetch {k_pf} is outside 0..{structure.num_experts}", f"use a value from 0 to {structure.num_experts}")
    u_e = expert_bytes(structure, opts.expert_bits)
    mem = memory_breakdown(structure, hw, opts, u_e, k_pf)
    f = structure.expert_intermediate_size
    g = opts.theta_granularity or default_granularity(f)
    if g < 1 or g > f or f % g:
        raise PlannerError(f"--theta-granularity {g} does not divide the expert width {f}",
                           f"use a divisor of {f}, e.g. {default_granularity(f)}")
    trace = load_or_make_trace(structure, model_name, opts, k_pf)
    # choose on some sequences, score on others (docs §2); at batch B a step activates the union of B sequences'
    # experts, in the curves, the statistics, the simulator and the floor alike
    cal_seqs, held_seqs, split_note = split_parts(trace)
    calib = batch_view(trace, cal_seqs, opts.batch, "calibration")
    heldout = batch_view(trace, held_seqs, opts.batch, "held-out")
    curves, orders = replay_curves(calib, opts.rho, opts.omega, warmup_steps(calib, opts))
    stats = trace_stats(calib)
    if opts.batch > 1 and stats.predicted_per_step is not None and (stats.predicted_per_step > 0).any():
        # the batch prefetches the union of its sequences' predictions
        k_pf = int(round(float(stats.predicted_per_step[stats.predicted_per_step > 0].mean())))
    curves = {**curves, "static": stats.static_curves()}
    orders = {**orders, "static": stats.static_orders()}
    timing = layer_timing(structure, hw, opts, u_e)
    # prefill: the batch's prompts through each layer at once, attention over half the prompt on average
    prompt = int(opts.batch * opts.prompt_tokens)
    pre = layer_timing(structure, hw, replace(opts, batch=prompt, context_tokens=max(opts.prompt_tokens // 2, 1)), u_e)
    if measured_timing is not None:
        timing = {**timing, "attention_s": np.asarray(measured_timing["attention_s"], dtype=float),
                  "expert_s": float(measured_timing["expert_s"]), "other_s": float(measured_timing["other_s"])}
    B = float(mem.expert_cache_budget_bytes)
    # budget unit u = U_e / m with an integer m in 1..16 (MoEpic: max(U_e/16, B/4096); docs/moe-offload.md §4,
    # §11), so that whole-expert budgets lie on the grid: with u above U_e a layer could not hold exactly N
    # whole experts
    m = int(np.clip(np.floor(u_e * 4096 / B), 1, 16)) if B > 0 else 16
    unit = u_e / m
    names = tuple(structure.layers[i].module_path for i in structure.moe_layers)
    problem = MoeOffloadProblem(
        layer_names=names, num_experts=structure.num_experts, top_k=k, k_prefetch=k_pf, expert_bytes=u_e,
        intermediate_size=f, theta_granularity=g, bandwidth_bytes_per_s=hw.h2d_bytes_per_s(),
        expert_compute_s=timing["expert_s"], attention_compute_s=timing["attention_s"],
        other_compute_s=timing["other_s"], hit_curves=curves, recall=stats.recall,
        distinct_experts=stats.distinct_per_step, budget_bytes=B, budget_unit_bytes=unit,
        host_expert_compute_s=timing["host_expert_s"], prompt_tokens=prompt, output_tokens=int(opts.output_tokens),
        ubatch=int(opts.ubatch), expert_flops_per_token=2.0 * structure.params_per_expert,
        device_flops_per_s=hw.flops_per_s("bf16"), host_flops_per_s=hw.host_flops_per_s(),
        prefill_attention_s=np.asarray(pre["attention_s"], dtype=float), prefill_other_s=float(pre["other_s"]),
        popularity=stats.popularity,
        host_dram_bytes_per_s=float(hw.host_memory_bandwidth_bytes_per_s) if hw.host_memory_bandwidth_bytes_per_s else None)
    notes = [split_note]
    if calib.params.get("stand_in") or heldout.params.get("stand_in"):
        notes.append(f"batch {opts.batch}: the trace has too few sequences per part, so equal cuts of its steps stand in "
                     "for independent sequences")
    if opts.batch > 1:
        notes.append(f"batch {opts.batch}: a decode step activates the union of {opts.batch} sequences' experts, "
                     f"{float(stats.distinct_per_step.mean()):.2f} distinct per layer on the calibration part "
                     f"(top-{k} per sequence)")
    dips = [(names[i], float((np.maximum.accumulate(c) - c).max())) for i, c in enumerate(curves["lcp"])]
    worst = max(dips, key=lambda d: d[1])
    if worst[1] > 0.01:
        notes.append(f"LCP hit curve of {worst[0]} dips by {worst[1]:.1%} below its running maximum; the envelope is used")
    source = (f"roofline on {hw.name} ({'measured' if hw.measured else 'catalog'} constants, "
              f"efficiency {hw.efficiency_compute:g} compute / {hw.efficiency_memory:g} memory)")
    if measured_timing is not None:
        source = str(measured_timing.get("source", "measured"))
    return MoeLowered(problem, mem, trace, calib, heldout, orders, structure, opts, source, notes,
                      constants_record(hw, measured_timing is not None))


def constants_record(hw: HardwareProfile, timing_measured: bool) -> list[dict[str, Any]]:
    """Every hardware constant the plan's times rest on, its value and where it comes from (docs §13)."""
    origin = "measured by `planner hardware measure`" if hw.measured else f"catalog profile {hw.name}"
    eff_src = ("measured profile (its figures are sustained rates)" if hw.measured else
               "catalog assumption (the profile's efficiency_memory), not measured for this host; "
               "`planner hardware measure` reports the expert kernel's share on the machine it runs on")
    out = [
        {"name": "device_memory_bandwidth_bytes_per_s", "value": hw.bandwidth_bytes_per_s(), "source": f"{origin}: "
         f"{hw.memory_bandwidth_bytes_per_s:.4g} B/s peak x efficiency {hw.efficiency_memory:g}",
         "uncertain": False},
        {"name": "device_flops_per_s_bf16", "value": hw.flops_per_s("bf16"), "source": f"{origin}: peak x efficiency "
         f"{hw.efficiency_compute:g}", "uncertain": False},
        {"name": "link_bytes_per_s", "value": hw.h2d_bytes_per_s(), "source": f"{origin} ({hw.host_link or 'link'}): "
         "a sustained pinned-copy figure", "uncertain": True, "range": "x0.8 .. x1.2"},
    ]
    if hw.host_memory_bandwidth_bytes_per_s:
        out += [
            {"name": "host_dram_peak_bytes_per_s", "value": float(hw.host_memory_bandwidth_bytes_per_s),
             "source": f"{origin}: the host's peak DRAM bandwidth", "uncertain": False},
            {"name": "host_expert_efficiency", "value": hw.host_efficiency(),
             "source": ("measured by `planner hardware measure` (expert-shaped kernel / DRAM peak)"
                        if hw.host_expert_efficiency is not None else eff_src), "uncertain": True,
             "range": "0.6 .. 1.0"},
            {"name": "dram_contention", "value": "shared at P", "source": "model (docs §3.3): host reads and link copies "
             "share the peak P in proportion to their rates while both run", "uncertain": True,
             "range": "none .. serialised (cap max(H, BW))"},
        ]
    if timing_measured:
        out.append({"name": "decode_timings", "value": "measured", "source": "calibration file (`planner calibrate`)",
                    "uncertain": False})
    return out


# ------------------------------------------------------------------ lifting
def sim_config(low: MoeLowered, sol: Any, perfect_prediction: bool = False) -> Any:
    """The simulator's view of a solution (every cache starts empty, for a like-for-like comparison)."""
    from runtime.sim.moe_offload import SimConfig, SimLayer

    p = low.problem
    static = low.final_orders["static"]
    hybri = dict(sol.params).get("baseline") == "hybrimoe"
    layers = []
    for i in range(p.num_layers):
        c = int(sol.capacities[i])
        mode = "hybrimoe" if hybri else sol.miss_mode(i)
        kind = {"link": "gpu", "host": "cpu", "split": "split", "hybrimoe": "hybrimoe"}[mode]
        layers.append(SimLayer(c, float(sol.thetas[i]), sol.policy if sol.policy in ("lcp", "lru", "lfu", "belady") else "lcp",
                               bool(sol.prefetch[i]), kind == "cpu",
                               # HybriMoE's loader fills each layer's slots with the lowest expert ids first
                               tuple(static[i][:c]) if kind in ("cpu", "split") else
                               tuple(range(min(c, p.num_experts))) if kind == "hybrimoe" else (), mode=kind,
                               split=float(sol.split_fraction[i]) if kind == "split" else 0.0,
                               prefetch_size=int(dict(sol.params).get("prefetch_size", 0)) if hybri else 0,
                               mrs_alpha=float(dict(sol.params).get("mrs_alpha", 0.5)) if hybri else 0.5))
    return SimConfig(tuple(layers), p.expert_bytes, p.bandwidth_bytes_per_s, p.expert_compute_s,
                     tuple(float(a) for a in p.attention_compute_s), p.other_compute_s, p.host_expert_compute_s,
                     low.options.rho, low.options.omega, perfect_prediction, p.host_dram_bytes_per_s)


def scored_trace(low: MoeLowered, part: str = "heldout") -> RoutingTrace:
    """The batched trace a figure is scored on: the held-out sequences (default) or the calibration ones."""
    if part not in ("heldout", "calibration"):
        raise ValueError(f"unknown trace part {part}")
    return low.heldout if part == "heldout" else low.calibration


def sim_window(low: MoeLowered, part: str = "heldout") -> np.ndarray:
    """The steps the simulator measures (after warm-up) on a part: the window the floor is computed over."""
    tr = scored_trace(low, part)
    w = warmup_steps(tr, low.options)
    return np.asarray(tr.experts[w: w + low.options.sim_tokens])


def simulate_solution(low: MoeLowered, sol: Any, perfect_prediction: bool = False, part: str = "heldout") -> Any:
    """Run the labelled simulator on a solution over `sim_tokens` steps of the held-out (or calibration) part."""
    import runtime.sim.moe_offload as sim_module
    from planner.families.moe_offload.replay_cache import cached_dataclass, key_of

    tr = scored_trace(low, part)
    cfg = sim_config(low, sol, perfect_prediction)
    tokens, warmup = low.options.sim_tokens, warmup_steps(tr, low.options)
    key = key_of("moe_sim", sim_module.__file__, cfg, tr.fingerprint(), tokens, warmup)
    return cached_dataclass("moe_sim", key, sim_module.SimResult,
                            lambda: sim_module.simulate(tr.experts, tr.predicted, cfg, tokens=tokens, warmup=warmup))


def metrics_dict(pred: Any) -> dict[str, Any]:
    """Plan-level predicted metrics (ms, fraction, bytes per decode step)."""
    return {"tpot_ms": pred.tpot_s * 1e3, "tokens_per_s": 1.0 / pred.tpot_s, "hit_rate": pred.mean_hit_rate,
            "bytes_per_token": pred.total_bytes_per_step, "source": "analytic cost model (docs/moe-offload.md §3)"}


def sim_dict(res: Any, part: str = "held-out") -> dict[str, Any]:
    """Plan-level simulated metrics, labelled with the trace part they were scored on."""
    return {"tpot_ms": res.tpot_s * 1e3, "tokens_per_s": 1.0 / res.tpot_s, "hit_rate": res.hit_rate,
            "bytes_per_token": res.bytes_per_token, "tokens": res.tokens, "label": res.label, "scored_on": part}


def layer_decisions(low: MoeLowered, sol: Any, pred: Any, sim: Any) -> list[dict[str, Any]]:
    """Per-layer decisions with the numbers behind them (names, not indices)."""
    p = low.problem
    out = []
    for i, name in enumerate(p.layer_names):
        th = float(sol.thetas[i])
        c = int(sol.capacities[i])
        mode = sol.miss_mode(i)
        order = low.final_orders["static" if mode in ("host", "split") else sol.policy]
        alpha = float(sol.split_fraction[i]) if mode == "split" else None
        out.append({
            "layer": name,
            "moe_index": i,
            "budget_bytes": int(round(float(sol.budget_units[i]) * p.budget_unit_bytes)),
            "cache_bytes": int(round(c * th * p.expert_bytes)),
            "split_ratio": th,
            "f_top": int(round(th * p.intermediate_size)),
            "cached_experts": c,
            "prefetch": bool(sol.prefetch[i]),
            "misses_on": {"host": "host_cpu", "split": "split", "link": "link"}[mode],
            "initial_resident": [int(e) for e in order[i][:c]],
            "predicted": {"hit_rate": float(pred.hit_rate[i]), "recall": float(p.recall[i]) if sol.prefetch[i] else 0.0,
                          "bytes_per_token": float(pred.bytes_per_step[i]), "stall_ms": float(pred.stall_s[i] * 1e3),
                          "time_ms": float(pred.time_s[i] * 1e3)},
            "simulated": {"hit_rate": float(sim.layer_hit_rate[i]), "recall": float(sim.layer_recall[i]),
                          "bytes_per_token": float(sim.layer_bytes_per_token[i]),
                          "stall_ms": float(sim.layer_stall_s[i] * 1e3)},
        })
        if alpha is not None:
            # a split layer: each miss's top rows [0, copy_f_top) are copied and computed on the device,
            # the rest computed on the host CPU; the cache holds whole experts (split_ratio 1)
            out[-1]["split_fraction"] = alpha
            out[-1]["copy_f_top"] = int(round(alpha * p.intermediate_size))
            out[-1]["predicted"]["host_bytes_per_token"] = float(p.distinct_experts[i] * (1 - pred.hit_rate[i])
                                                                 * (1 - alpha) * p.expert_bytes)
    return out


def decisions_dict(low: MoeLowered, sol: Any, pred: Any, sim: Any) -> dict[str, Any]:
    """Everything codegen and the runtime need, plus the memory breakdown behind the budget."""
    p = low.problem
    return {
        "memory": asdict(low.memory),
        "expert_bytes": p.expert_bytes,
        "expert_bits": low.options.expert_bits,
        "num_experts": p.num_experts,
        "top_k": p.top_k,
        "k_prefetch": p.k_prefetch,
        "intermediate_size": p.intermediate_size,
        "theta_granularity": p.theta_granularity,
        "budget_unit_bytes": p.budget_unit_bytes,
        "eviction": {"policy": sol.policy, "rho": low.options.rho, "omega": low.options.omega},
        "predictor_tap": "post_attn",
        "link": {"bandwidth_bytes_per_s": p.bandwidth_bytes_per_s, "fifo": True},
        "timing": {"expert_compute_ms": p.expert_compute_s * 1e3, "transfer_ms": p.transfer_s * 1e3,
                   "other_compute_ms": p.other_compute_s * 1e3, "theta_hide": p.theta_hide,
                   "source": low.timing_source},
        "layers": layer_decisions(low, sol, pred, sim),
    }


def baseline_decisions(sol: Any) -> dict[str, Any]:
    """Compact per-layer decisions of a baseline."""
    d = {"split_ratio": [float(t) for t in sol.thetas], "cached_experts": [int(c) for c in sol.capacities],
         "prefetch": [bool(x) for x in sol.prefetch], "eviction": sol.policy}
    if sol.cpu_layers is not None:
        d["misses_on_host_cpu"] = [bool(x) for x in sol.cpu_layers]
    if sol.split_fraction is not None:
        d["split_fraction"] = [float(a) if np.isfinite(a) else None for a in sol.split_fraction]
    if dict(sol.params).get("baseline") == "hybrimoe":
        d["runtime"] = "simulator only (the runtime does not implement HybriMoE's per-step scheduler)"
    return d


def validate_plan_decisions(decisions: dict[str, Any], constraints: dict[str, Any]) -> list[str]:
    """Check a moe-offload plan's constraints from its JSON alone (used by `planner diff` and tests)."""
    out: list[str] = []
    try:
        budget = float(constraints["expert_cache_budget_bytes"])
        u_e = float(decisions["expert_bytes"])
        n = int(decisions["num_experts"])
        f = int(decisions["intermediate_size"])
        g = int(decisions["theta_granularity"])
        layers = decisions["layers"]
    except (KeyError, TypeError, ValueError) as exc:
        return [f"plan decisions are incomplete ({exc})"]
    total = 0.0
    slack = 1.0 + 1e-6
    for lay in layers:
        name = lay.get("layer", "?")
        th, c, b = float(lay["split_ratio"]), int(lay["cached_experts"]), float(lay["budget_bytes"])
        used = c * th * u_e
        total += b
        if not 0.0 <= th <= 1.0:
            out.append(f"{name}: split_ratio {th} outside [0, 1]")
        if int(lay["f_top"]) % g and th < 1.0:
            out.append(f"{name}: f_top {lay['f_top']} is not a multiple of the granularity {g}")
        if abs(th * f - int(lay["f_top"])) > 0.5:
            out.append(f"{name}: f_top {lay['f_top']} does not match split_ratio {th}")
        if not 0 <= c <= n:
            out.append(f"{name}: cached_experts {c} outside 0..{n}")
        if used > b * slack + 1:
            out.append(f"{name}: cached tops need {used:.0f} B, above the layer budget {b:.0f} B")
        if len(lay.get("initial_resident", [])) > c:
            out.append(f"{name}: more initially resident experts than cached slots")
        if lay.get("misses_on") == "split":
            a = lay.get("split_fraction")
            if a is None or not 0.0 <= float(a) <= 1.0:
                out.append(f"{name}: a split layer needs split_fraction in [0, 1], not {a}")
            elif int(lay.get("copy_f_top", -1)) % g and 0.0 < float(a) < 1.0:
                out.append(f"{name}: copy_f_top {lay.get('copy_f_top')} is not a multiple of the granularity {g}")
            elif abs(float(a) * f - int(lay.get("copy_f_top", -1))) > 0.5:
                out.append(f"{name}: copy_f_top {lay.get('copy_f_top')} does not match split_fraction {a}")
            if c > 0 and th != 1.0:
                out.append(f"{name}: a split layer caches whole experts (split_ratio 1), not {th}")
    if total > budget * slack + 1:
        out.append(f"layer budgets sum to {total:.0f} B, above the expert-cache budget {budget:.0f} B")
    return out


# ------------------------------------------------------------------ whole requests (docs §12)
PREFILL_BASELINES = {
    "prefill_llamacpp": ("llamacpp", "llama.cpp default: weights in host memory copied for the op when the ubatch has "
                         ">= 32 tokens (used experts only), else computed on the host; the plan's decode configuration"),
    "prefill_ik_llamacpp": ("ik_llamacpp", "ik_llama.cpp MoE rule: copy when the ubatch has >= (E/k) x 32 tokens; the "
                            "plan's decode configuration"),
    "prefill_host": ("host", "always-host prefill: every non-resident expert computed on the host"),
    "prefill_stream": ("stream", "always-stream prefill: every used non-resident expert copied and computed on the device"),
    "prefill_decode_plan": ("decode_plan", "today's decode-only plan applied unchanged to prefill"),
}


def prompt_routing(low: MoeLowered) -> np.ndarray:
    """The prompt's routing for the simulator: batch x prompt consecutive trace steps, wrapping around (the
    decode trace's routing stands in for the prompt's; labelled in the plan)."""
    n = int(low.problem.prompt_tokens)
    T = low.trace.num_tokens
    idx = np.arange(n) % T
    return np.asarray(low.trace.experts[idx])


def prefill_rule_result(low: MoeLowered, sol: Any, rule: str) -> Any:
    """The analytic prefill (solvers/moe_offload/prefill.py) of a solution's placement under `rule`."""
    from solvers.moe_offload.prefill import prefill

    p = low.problem
    modes = [sol.miss_mode(i) for i in range(p.num_layers)]
    return prefill(p, sol.capacities, sol.thetas, rule, modes, sol.split_fraction)


def simulate_prefill_solution(low: MoeLowered, sol: Any, rule: str, analytic: Any) -> Any:
    """The labelled prefill simulator on a solution's placement, following `rule` (the plan: its per-layer decision)."""
    from runtime.sim.moe_offload import PrefillSimConfig, PrefillSimLayer, simulate_prefill
    from solvers.moe_offload.prefill import LLAMACPP_MIN_BATCH, resident_sets

    p = low.problem
    res = resident_sets(p, sol.capacities, sol.thetas)
    layers = []
    for i in range(p.num_layers):
        resident = tuple(int(e) for e in np.flatnonzero(res[i]))
        lay = analytic.layers[i]
        mode = sol.miss_mode(i)
        if lay.split is not None:
            layers.append(PrefillSimLayer(resident, "split", split=float(lay.split)))
        elif rule == "plan":
            # the plan streams the non-resident experts with the most tokens: as many as it expects to stream
            layers.append(PrefillSimLayer(resident, "top", top=int(round(lay.streamed))))
        elif rule == "host" or (rule == "decode_plan" and mode == "host"):
            layers.append(PrefillSimLayer(resident, "host"))
        elif rule == "stream" or (rule == "decode_plan" and mode == "link"):
            layers.append(PrefillSimLayer(resident, "stream"))
        elif rule == "llamacpp":
            layers.append(PrefillSimLayer(resident, "min_batch", min_batch=LLAMACPP_MIN_BATCH))
        elif rule == "ik_llamacpp":
            layers.append(PrefillSimLayer(resident, "min_batch",
                                          min_batch=int(np.ceil(p.num_experts / p.top_k * LLAMACPP_MIN_BATCH))))
        else:
            raise ValueError(f"no simulator mapping for prefill rule {rule}")
    host_bytes = p.expert_bytes / p.host_expert_compute_s if p.host_expert_compute_s else None
    cfg = PrefillSimConfig(tuple(layers), p.expert_bytes, p.bandwidth_bytes_per_s, p.expert_flops_per_token,
                           p.device_flops_per_s, p.expert_compute_s, host_bytes, p.host_flops_per_s,
                           tuple(float(a) for a in (p.prefill_attention_s if p.prefill_attention_s is not None
                                                    else np.zeros(p.num_layers))),
                           p.prefill_other_s, p.ubatch if rule in ("llamacpp", "ik_llamacpp") else None,
                           p.host_dram_bytes_per_s)
    return simulate_prefill(prompt_routing(low), cfg)


def request_metrics(ttft_s: float, tpot_s: float, output_tokens: int) -> dict[str, float]:
    """TTFT, TPOT and end-to-end time (ms): the prompt's prefill gives the first token, then N - 1 decode steps."""
    return {"ttft_ms": ttft_s * 1e3, "tpot_ms": tpot_s * 1e3, "e2e_ms": (ttft_s + max(output_tokens - 1, 0) * tpot_s) * 1e3}


def prefill_layers(low: MoeLowered, sol: Any, analytic: Any) -> list[dict[str, Any]]:
    """Per layer: the prefill decision (streamed / host experts, token threshold) and the break-even prompt length."""
    from solvers.moe_offload.prefill import break_even_tokens, resident_sets

    p = low.problem
    res = resident_sets(p, sol.capacities, sol.thetas)
    out = []
    for i, lay in enumerate(analytic.layers):
        out.append({"resident": int(res[i].sum()), "streamed": float(lay.streamed), "on_host": float(lay.on_host),
                    "stream_if_tokens_at_least": None if not np.isfinite(lay.token_threshold) else float(lay.token_threshold),
                    "split_fraction": lay.split, "time_ms": lay.time_s * 1e3,
                    "link_bytes": float(lay.link_bytes), "break_even_prompt_tokens": break_even_tokens(p, i, res[i])})
    return out
