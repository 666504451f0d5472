"""split-inference lowering and lifting: traced model graph + edge/cloud hardware + link <->
SplitInferenceProblem <-> plan.

Lowering (COACH's problem and its inputs, docs/split-inference.md §1-§2):
  * the graph is the torch.export graph of the profiler; shape-only nodes (views, getitem, ...) are
    folded into their producers, so every problem node is a tensor that could cross the link; the
    fx `output` node is kept as a zero-cost sink;
  * t_e(v), t_c(v): roofline of the node's FLOPs and bytes (parameters, inputs, output) on the edge
    and cloud devices (catalog constants);
  * model inputs are sent in their natural encoding: 8-bit pixels for images, 32-bit token ids for
    text; integer and boolean tensors are never quantised;
  * ΔAcc(v, b): measured where the model has real weights (digits-cnn: accuracy drop on held-out
    digits; MiniLM: embedding cosine / nearest-neighbour task), else a per-tensor
    signal-to-quantisation-noise proxy on the tensor's real activations (full-size model, seeded
    random weights, one forward pass), stated as a proxy in the plan.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from core.errors import PlannerError
from profilers.graph import ModelProfile, NodeProfile
from profilers.hardware import HardwareProfile
from profilers.model_spec import ModelSpec
from solvers.split_inference.problem import SplitInferenceProblem

log = logging.getLogger(__name__)

DEFAULT_BITS = (2, 3, 4, 5, 6, 8, 16)
DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "float64": 64, "int64": 64, "int32": 32, "int16": 16,
              "int8": 8, "uint8": 8, "bool": 8}
TOKEN_ID_BITS = 32
PIXEL_BITS = 8


@dataclass(frozen=True)
class SplitOptions:
    """User-facing settings of the split-inference family."""

    cloud: str = "a100_80gb"
    link_bits_per_s: float = 20e6
    link_range_bits_per_s: tuple[float, float] | None = None   # plan table over this bandwidth range
    table_levels: int = 16
    rtt_s: float = 0.02
    epsilon: float = 0.005
    objective: str = "throughput"                  # "throughput", "latency" or "coach" (COACH's J)
    t_max_s: float = float("inf")                  # --max-latency
    period_max_s: float = float("inf")             # 1 / --min-throughput
    bits: tuple[int, ...] = DEFAULT_BITS
    # the bound's CP-SAT stops after this much deterministic time (its work counter, not the clock: the same
    # inputs give the same plan bytes on a loaded machine); the wall-clock backstop only guards against a hang
    exact_deterministic_limit: float = 5.0
    exact_wall_backstop_s: float = 600.0
    calibration: Mapping[str, Any] | None = None   # per-node CPU times + that CPU's profile (a calibration file)
    calibration_record: Mapping[str, str] | None = None
    cloud_profile: Any = None                       # the resolved `cloud` HardwareProfile
    speed_spread: float | None = None               # --speed-spread: compute may run x1/F..xF of its prediction


@dataclass
class SplitLowered:
    """The problem and what lift needs to name it."""

    problem: SplitInferenceProblem
    node_profiles: list[NodeProfile]
    shapes: dict[int, tuple[int, ...]]
    dtypes: dict[int, str]
    accuracy_kind: str
    accuracy_description: str
    evaluator: Any
    edge: HardwareProfile
    cloud: HardwareProfile
    options: SplitOptions
    model_name: str = ""
    timing_source: str = ""
    notes: list[str] = field(default_factory=list)


def fold_views(nodes: Sequence[NodeProfile]) -> tuple[list[NodeProfile], dict[str, str]]:
    """Problem nodes (tensor producers, inputs, output) and a map from every node name to its representative."""
    rep: dict[str, str] = {}
    kept: list[NodeProfile] = []
    for n in nodes:
        if n.op == "placeholder":
            rep[n.name] = n.name
            kept.append(n)
        elif n.op == "output":
            rep[n.name] = n.name
            kept.append(n)
        elif n.is_view:
            src = next((rep[i] for i in n.inputs if i in rep), None)
            if src is not None and n.output_bytes > 0:
                rep[n.name] = src
            # nodes with no tensor output (asserts, symbolic sizes) are dropped
        else:
            rep[n.name] = n.name
            kept.append(n)
    return kept, rep


def _elem_bits(dtype: str) -> int:
    return DTYPE_BITS.get(dtype, 32)


def node_time_s(n: NodeProfile, input_bytes: int, hw: HardwareProfile, dtype: str) -> float:
    """Roofline time (s) of one node on `hw`: FLOPs against bytes read (params, inputs) and written."""
    if n.op in ("placeholder", "output"):
        return 0.0
    return hw.roofline_s(n.flops + n.vector_flops, n.param_bytes + input_bytes + n.output_bytes, dtype)


def lower_graph(profile: ModelProfile, spec: ModelSpec, edge: HardwareProfile, cloud: HardwareProfile,
                opts: SplitOptions, accuracy_drop: np.ndarray | None = None) -> tuple[SplitInferenceProblem, dict]:
    """The problem arrays from a profiled graph (accuracy filled in by `lower`)."""
    kept, rep = fold_views(profile.nodes)
    idx = {n.name: i for i, n in enumerate(kept)}
    by_name = {n.name: n for n in profile.nodes}
    edges: set[tuple[int, int]] = set()
    in_bytes = np.zeros(len(kept), dtype=np.int64)
    for i, n in enumerate(kept):
        srcs = {rep[u] for u in n.inputs if u in rep}
        for s in srcs:
            j = idx[s]
            if j != i:
                edges.add((j, i))
                in_bytes[i] += by_name[s].output_bytes
    if not any(n.op == "output" for n in kept):
        raise PlannerError(f"{spec.name}'s graph has no output node", "check the model's forward")
    out_idx = next(i for i, n in enumerate(kept) if n.op == "output")
    dtype = profile.dtype
    if opts.calibration is not None:
        te, tc, timing_source = calibrated_times(kept, in_bytes, edge, cloud, dtype, opts.calibration)
    else:
        te = np.array([node_time_s(n, int(b), edge, dtype) for n, b in zip(kept, in_bytes)])
        tc = np.array([node_time_s(n, int(b), cloud, dtype) for n, b in zip(kept, in_bytes)])
        timing_source = f"roofline of catalog constants ({edge.name}, {cloud.name})"
    is_input = np.array([n.op == "placeholder" for n in kept])
    native = np.zeros(len(kept), dtype=np.int64)
    quantizable = np.zeros(len(kept), dtype=bool)
    elements = np.zeros(len(kept), dtype=np.int64)
    image = spec.inputs.get("kind") == "image"
    for i, n in enumerate(kept):
        eb = _elem_bits(n.output_dtype)
        elements[i] = (n.output_bytes * 8) // eb if n.op != "output" else 0
        if n.op == "placeholder":
            native[i] = PIXEL_BITS if image and n.output_dtype.startswith("float") else (
                TOKEN_ID_BITS if n.output_dtype.startswith("int") else eb)
        else:
            native[i] = eb
            quantizable[i] = n.output_dtype.startswith(("float", "bfloat")) and n.op != "output"
    result_bytes = float(in_bytes[out_idx])
    bits = tuple(sorted(set(int(b) for b in opts.bits)))
    acc = accuracy_drop if accuracy_drop is not None else np.zeros((len(kept), len(bits)))
    downlink = (edge.downlink_bits_per_s or opts.link_bits_per_s) / 8
    problem = SplitInferenceProblem(
        node_names=tuple(n.name for n in kept), edges=tuple(sorted(edges)), is_input=is_input, output_node=out_idx,
        edge_time_s=te, cloud_time_s=tc, out_elements=elements, native_bits=native, quantizable=quantizable,
        param_bytes=np.array([n.param_bytes for n in kept], dtype=float),
        out_bytes=np.array([n.output_bytes for n in kept], dtype=float), bits_options=bits, accuracy_drop=acc,
        bandwidth_bytes_per_s=opts.link_bits_per_s / 8, rtt_s=opts.rtt_s, downlink_bytes_per_s=downlink,
        result_bytes=result_bytes, edge_memory_bytes=float(edge.memory_bytes),
        # quantise on the device: read fp32, write packed codes; dequantise in the cloud likewise (B/element)
        quant_s_per_element_edge=5.0 / edge.bandwidth_bytes_per_s(), quant_s_fixed_edge=edge.op_overhead(),
        dequant_s_per_element_cloud=5.0 / cloud.bandwidth_bytes_per_s(), dequant_s_fixed_cloud=cloud.op_overhead(),
        epsilon=opts.epsilon, t_max_s=opts.t_max_s, period_max_s=opts.period_max_s,
        **quantise_rates(opts.calibration, edge, cloud), **request_overhead(opts.calibration))
    meta = {"kept": kept, "shapes": {i: tuple(n.output_shape) for i, n in enumerate(kept)},
            "dtypes": {i: n.output_dtype for i, n in enumerate(kept)}, "timing_source": timing_source}
    return problem, meta


def quantise_rates(calibration: Mapping[str, Any] | None, edge: HardwareProfile,
                   cloud: HardwareProfile) -> dict[str, tuple[tuple[int, float], ...]]:
    """Per-bit quantise (edge) and dequantise (cloud) seconds per element from a calibration file, scaled from
    the calibrating CPU to each device by the ratio of memory bandwidths (the kernels stream the tensor); {}
    without one (the flat roofline rate then applies)."""
    from profilers.hardware import profile_from_dict

    got = (calibration or {}).get("quantise_s_per_element")
    if not got or not isinstance(calibration.get("cpu"), dict):
        return {}
    cpu_bw = profile_from_dict(calibration["cpu"], "calibration file").bandwidth_bytes_per_s()
    to_edge, to_cloud = cpu_bw / edge.bandwidth_bytes_per_s(), cpu_bw / cloud.bandwidth_bytes_per_s()
    out = {"quant_s_per_element_edge_by_bits": tuple(sorted((int(b), float(t) * to_edge)
                                                            for b, t in got["quantise"].items())),
           "dequant_s_per_element_cloud_by_bits": tuple(sorted((int(b), float(t) * to_cloud)
                                                               for b, t in got["dequantise"].items()))}
    # the fixed cost per call, scaled the same way, never below the device's own per-kernel overhead
    fixed = calibration.get("quantise_fixed_s")
    if isinstance(fixed, dict):
        out["quant_s_fixed_edge_by_bits"] = tuple(sorted((int(b), max(float(t) * to_edge, edge.op_overhead()))
                                                         for b, t in fixed["quantise"].items()))
        out["dequant_s_fixed_cloud_by_bits"] = tuple(sorted((int(b), max(float(t) * to_cloud, cloud.op_overhead()))
                                                            for b, t in fixed["dequantise"].items()))
    return out


def request_overhead(calibration: Mapping[str, Any] | None) -> dict[str, float]:
    """The runtime's fixed cost per request that crosses the link (s), from a calibration file (0 without one).

    `planner calibrate` measures it on the CPU it runs on (runtime/split_inference/overhead.py): CPU time per
    request on each side of the gRPC stream, and the rest of a round trip. It is Python and gRPC work on the
    host CPU of each side, not on an accelerator, so it is used as measured (not scaled by a device's
    roofline): the devices' host CPUs are taken to frame and stream as fast as the calibrating CPU.
    """
    got = (calibration or {}).get("request_overhead")
    if not got:
        return {}
    return {"request_edge_s": float(got["edge_s"]), "request_cloud_s": float(got["cloud_s"]),
            "request_latency_s": float(got["latency_s"]), "request_loop_s": float(got.get("edge_loop_s", 0.0))}


def calibrated_times(kept: Sequence[NodeProfile], in_bytes: np.ndarray, edge: HardwareProfile, cloud: HardwareProfile,
                     dtype: str, calibration: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-node times measured on a CPU (a calibration file), scaled to each device by the ratio of the rooflines.

    t_dev(v) = t_cpu(v) * roofline_dev(v) / roofline_cpu(v): a node that runs far from its roofline there
    (launch overhead, a poor kernel) is assumed to run as far from it on the device. The CPU's roofline
    uses the constants measured with the times. Views and inputs keep 0.
    """
    from profilers.hardware import profile_from_dict

    cpu = profile_from_dict(calibration["cpu"], "calibration file")
    measured = calibration["node_times_s"]
    te = np.zeros(len(kept))
    tc = np.zeros(len(kept))
    matched = 0
    for i, (n, b) in enumerate(zip(kept, in_bytes)):
        if n.op in ("placeholder", "output"):
            continue
        base = node_time_s(n, int(b), cpu, dtype)
        t = measured.get(n.name)
        if t is None or base <= 0:
            te[i], tc[i] = node_time_s(n, int(b), edge, dtype), node_time_s(n, int(b), cloud, dtype)
            continue
        matched += 1
        te[i] = float(t) * node_time_s(n, int(b), edge, dtype) / base
        tc[i] = float(t) * node_time_s(n, int(b), cloud, dtype) / base
    source = (f"calibrated: {matched} node times measured on {cpu.description} ({calibration.get('sha256', 'file')}), "
              f"scaled by the devices' roofline ratios")
    return te, tc, source


def measure_accuracy(spec: ModelSpec, problem: SplitInferenceProblem, candidates: set[int]) -> tuple[np.ndarray, str, str, Any, int]:
    """ΔAcc(v, b) matrix for the candidate tensors (measured or the per-tensor SQNR proxy, see profilers.quant_sensitivity)."""
    from profilers.quant_sensitivity import measure_cut_sensitivity

    bits = problem.bits_options
    drop = np.full((problem.num_nodes, len(bits)), np.nan)
    for v in range(problem.num_nodes):
        for j, b in enumerate(bits):
            if not problem.quantizable[v] or b >= problem.native_bits[v]:
                drop[v, j] = 0.0 if b >= problem.native_bits[v] else np.nan
    names = [problem.node_names[v] for v in sorted(candidates) if problem.quantizable[v]]
    sens = measure_cut_sensitivity(spec, names, bits)
    idx = {n: i for i, n in enumerate(problem.node_names)}
    for name in names:
        for j, b in enumerate(bits):
            if b < problem.native_bits[idx[name]]:
                drop[idx[name], j] = sens.drops[name][j]
    return drop, sens.kind, sens.description, sens.evaluator, sens.n_samples


def lower(spec: ModelSpec, profile: ModelProfile, edge: HardwareProfile, cloud: HardwareProfile,
          opts: SplitOptions, progress: Callable[[str], None] = lambda text: None) -> SplitLowered:
    """Build the COACH problem; accuracy is measured only for tensors some candidate cut sends."""
    from solvers.split_inference.cuts import candidate_cuts

    if opts.link_bits_per_s <= 0:
        raise PlannerError("the link bandwidth is 0", "pass a positive --link, e.g. --link 20mbps")
    if opts.epsilon < 0:
        raise PlannerError(f"--epsilon {opts.epsilon} is negative", "pass an accuracy-loss cap such as 0.005")
    if opts.rtt_s < 0:
        raise PlannerError("--rtt is negative", "pass a round-trip time such as 30ms")
    problem, meta = lower_graph(profile, spec, edge, cloud, opts)
    cands = candidate_cuts(problem)
    sent: set[int] = set()
    from solvers.split_inference.cost import cut_tensors, graph_index

    adj = graph_index(problem)
    for mask in cands.masks:
        sent.update(cut_tensors(problem, np.asarray(mask, dtype=bool), adj))
    progress(f"accuracy sensitivity of {len(sent)} candidate cut tensors (cached after the first run)")
    drop, kind, desc, ev, n_samples = measure_accuracy(spec, problem, sent)
    import dataclasses

    problem = dataclasses.replace(problem, accuracy_drop=drop, accuracy_is_proxy=(kind == "proxy"))
    if kind == "proxy" and opts.epsilon > 0:
        desc += (f"; --epsilon {opts.epsilon:g} on it means an SQNR of at least "
                 f"{-10 * math.log10(opts.epsilon):.3g} dB per tensor")
    notes = []
    if kind == "accuracy" and n_samples * opts.epsilon < 10:
        notes.append(f"epsilon {opts.epsilon:g} is fewer than 10 disagreements in {n_samples} samples: "
                     "accuracy drops that small are not resolvable on this data")
    return SplitLowered(problem, meta["kept"], meta["shapes"], meta["dtypes"], kind, desc, ev, edge, cloud, opts,
                        spec.name, meta["timing_source"], notes)


# ------------------------------------------------------------------ joint check and lifting
def joint_check(low: SplitLowered, bits: dict[int, int], max_rounds: int = 12) -> tuple[dict[int, int], float | None, list[str]]:
    """Spec §5.1 step 5 on real data: measure the joint drop of every quantised cut tensor; while it exceeds
    epsilon, raise the tensor with the largest single-tensor drop one step. Returns (bits, joint drop, log)."""
    p = low.problem
    if low.accuracy_kind == "proxy":
        return bits, None, []
    from profilers.quant_sensitivity import sensitivity_evaluator

    ev = low.evaluator or sensitivity_evaluator(resolve_spec(low))
    low.evaluator = ev
    ladder = list(p.bits_options)
    bits = dict(bits)
    log_lines = []
    joint = 0.0
    for _ in range(max_rounds):
        q = {p.node_names[v]: b for v, b in bits.items() if p.quantizable[v] and b < p.native_bits[v]}
        joint = ev.drop(q) if q else 0.0
        if joint <= p.epsilon or not q:
            break
        worst = max((v for v in bits if p.node_names[v] in q),
                    key=lambda v: float(np.nan_to_num(p.accuracy_drop[v, ladder.index(bits[v])])))
        higher = [b for b in ladder if b > bits[worst]]
        bits[worst] = higher[0] if higher and higher[0] < p.native_bits[worst] else int(p.native_bits[worst])
        log_lines.append(f"joint drop {joint:.4g} > epsilon: {p.node_names[worst]} raised to {bits[worst]} bits")
    return bits, joint, log_lines


def resolve_spec(low: SplitLowered) -> ModelSpec:
    """The model spec behind a lowered problem (for the lazily built evaluator)."""
    from planner.registry import resolve_model

    return resolve_model(low.model_name)


def metrics_dict(m: Any, accuracy_kind: str, joint: float | None = None) -> dict[str, Any]:
    """Plan-level predicted figures of one (cut, bits) choice."""
    return {"objective_ms": m.objective_s * 1e3, "period_ms": m.period_s * 1e3, "latency_ms": m.latency_s * 1e3,
            "throughput_rps": 1.0 / m.period_s if m.period_s > 0 else float("inf"),
            # link_ms: the stage as the runtime measures it (busy time + one-way delay); the period uses the
            # busy time alone (propagation overlaps across requests)
            "edge_ms": m.edge_s * 1e3, "link_ms": (m.link_s + m.propagation_s) * 1e3, "cloud_ms": m.cloud_s * 1e3,
            "link_busy_ms": m.link_s * 1e3,
            # the stages' compute alone, without the runtime's per-request cost (what edge emulation pads to)
            "edge_compute_ms": (m.edge_s - m.edge_overhead_s) * 1e3,
            "cloud_compute_ms": (m.cloud_s - m.cloud_overhead_s) * 1e3,
            "bytes_per_request": m.bytes_per_request,
            "accuracy_drop": joint if joint is not None else m.accuracy_drop,
            "accuracy_kind": ("measured" if accuracy_kind in ("accuracy", "embedding") else "proxy")
            + ("" if joint is not None or accuracy_kind == "proxy" else " (additive estimate)"),
            "source": "split-inference cost model (docs/split-inference.md §2): stage times, FIFO link, the runtime's "
                      "per-request cost where calibrated"}


def cut_tensor_rows(low: SplitLowered, on_edge: np.ndarray, bits: dict[int, int]) -> list[dict[str, Any]]:
    """Every tensor crossing the link: name, shape, dtype, bits, bytes on the wire, single-tensor drop."""
    from solvers.split_inference.cost import cut_tensors, tensor_bytes

    p = low.problem
    ladder = list(p.bits_options)
    rows = []
    for v in cut_tensors(p, on_edge):
        b = int(bits.get(v, p.native_bits[v]))
        drop = float(p.accuracy_drop[v, ladder.index(b)]) if b in ladder and b < p.native_bits[v] else 0.0
        rows.append({"name": p.node_names[v], "shape": list(low.shapes[v]), "dtype": low.dtypes[v], "bits": b,
                     "native_bits": int(p.native_bits[v]), "bytes": float(tensor_bytes(p, v, b)),
                     "single_tensor_drop": drop})
    return rows


def decisions_dict(low: SplitLowered, sol: Any, bits: dict[int, int], table: list[dict[str, Any]]) -> dict[str, Any]:
    """Edge nodes, cut tensors and bits by name, plus the stage split and the bandwidth plan table."""
    p = low.problem
    on_edge = np.asarray(sol.on_edge, dtype=bool)
    rows = cut_tensor_rows(low, on_edge, bits)
    return {
        "edge_nodes": [p.node_names[v] for v in range(p.num_nodes) if on_edge[v] and not p.is_input[v]],
        "cloud_nodes": int((~on_edge).sum()),
        "cut_tensors": rows,
        "bits": {r["name"]: r["bits"] for r in rows},
        "link": {"uplink_bits_per_s": p.bandwidth_bytes_per_s * 8, "rtt_ms": p.rtt_s * 1e3,
                 "downlink_bits_per_s": p.downlink_bytes_per_s * 8},
        "edge_device": low.edge.name,
        "cloud_device": low.cloud.name,
        "epsilon": p.epsilon,
        "t_max_ms": p.t_max_s * 1e3 if math.isfinite(p.t_max_s) else None,
        "pipeline_depth": p.pipeline_depth,
        "accuracy": {"kind": low.accuracy_kind, "description": low.accuracy_description},
        "timing": low.timing_source,
        "feasible": bool(sol.feasible),
        "plan_table": table,
        "graph": {"nodes": p.num_nodes, "edges": len(p.edges)},
    }


def baseline_decisions(low: SplitLowered, sol: Any) -> dict[str, Any]:
    """Compact decisions of a baseline: what it sends at how many bits."""
    rows = cut_tensor_rows(low, np.asarray(sol.on_edge, dtype=bool), dict(sol.bits))
    return {"cut_tensors": [{"name": r["name"], "bits": r["bits"], "bytes": r["bytes"]} for r in rows],
            "edge_nodes_count": int(np.asarray(sol.on_edge).sum()), "feasible": bool(sol.feasible),
            "violations": list(sol.params.get("violations", []))}


def validate_plan_decisions(decisions: dict[str, Any], predicted: dict[str, Any]) -> list[str]:
    """Constraints of a split-inference plan checked from its JSON alone."""
    out = []
    try:
        eps = float(decisions["epsilon"])
        rows = decisions["cut_tensors"]
    except (KeyError, TypeError, ValueError) as exc:
        return [f"plan decisions are incomplete ({exc})"]
    for r in rows:
        if r["bits"] > r["native_bits"]:
            out.append(f"{r['name']}: {r['bits']} bits above its native {r['native_bits']}")
        need = math.ceil(math.prod(r["shape"]) * r["bits"] / 8) if r["shape"] else 0
        if r["bytes"] + 1e-6 < need:
            out.append(f"{r['name']}: {r['bytes']} bytes cannot carry {math.prod(r['shape'])} values at {r['bits']} bits")
    drop = predicted.get("accuracy_drop")
    if decisions.get("feasible") and drop is not None and drop > eps * (1 + 1e-9):
        out.append(f"accuracy drop {drop:.4g} above epsilon {eps:g}")
    t_max = decisions.get("t_max_ms")
    if decisions.get("feasible") and t_max is not None and predicted.get("latency_ms", 0) > t_max * (1 + 1e-9):
        out.append(f"latency {predicted['latency_ms']:.4g} ms above T_max {t_max:.4g} ms")
    return out
