"""Cost model of split inference (docs/split-inference.md §2): stage times, bubbles, and the overlap simulator.

For a device-side set S (downward closed, inputs in S) and bits b_v of every sent tensor v ∈ V_p(S):

    T_e = Σ_{v∈S} t_e(v) + Σ_{v∈V_p} t_q(v) + o_e           t_q only for quantised tensors (b_v < native)
    T_t = Σ_{v∈V_p} (⌈n_v·b_v/8⌉ + m_v) / BW                 m_v only for quantised tensors; 0 if V_p = ∅
    T_c = Σ_{v∉S} t_c(v) + Σ_{v∈V_p} t_dq(v) + o_c
    Lat = T_e + T_t + RTT/2 + o_l + T_c + result_bytes/BW_down + RTT/2   return leg only when the output is in the cloud
    P   = max(T_e, T_t, T_c, Lat / depth)                     depth: requests in flight (the runtime's window)

o_e, o_c, o_l: the runtime's fixed cost per request that crosses the link (edge CPU, cloud CPU, the rest of
a software round trip), measured by `planner calibrate`; all 0 when nothing is sent.
    J   = B_c + B_t + P,   B_c = |T_e − T_c|
    B_t = P − T_t                                               |V_p| ≤ 1 (link idle time)
    B_t = |T_t − max(T_e, T_t − T_t^p, T_c − T_c^p)|            |V_p| > 1, T_t^p and T_c^p from `overlap_simulation`

All-device plans (S = V) send nothing: T_t = 0, T_c = 0, Lat = T_e (the result stays on the device), and
J = P = T_e: a one-stage pipeline has no bubbles between stages (our reading; the raw formula would give
3·T_e by counting the unused link and cloud as idle, which prefers strictly slower splits). Edge memory is estimated as the parameters
of every device node plus the largest single device activation (`out_bytes`): a lower bound of the live
set that is exact for chains executed with one buffer in flight.

Times in seconds, sizes in bytes, bandwidth in bytes/s. Pure numpy.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from solvers.split_inference.problem import SplitInferenceProblem, SplitMetrics


@dataclass(frozen=True, eq=False)
class GraphIndex:
    """Adjacency and per-node scalars as Python lists (fast scalar access), built once per solve.

    `tensor_costs` memoises (bytes, t_q, t_dq, ΔAcc) per (tensor, bits); none depends on the bandwidth,
    so one index serves every bandwidth level of a plan table.
    """

    src: np.ndarray                        # int (|E|,), sorted by (src, dst)
    dst: np.ndarray
    succ: tuple[tuple[int, ...], ...]
    pred: tuple[tuple[int, ...], ...]
    sources: tuple[int, ...]               # nodes without predecessors (inputs and constants)
    edge_time_s: tuple[float, ...]
    cloud_time_s: tuple[float, ...]
    native_bits: tuple[int, ...]
    tensor_costs: dict[tuple[int, int], tuple[float, float, float, float]] = field(default_factory=dict)


def graph_index(problem: SplitInferenceProblem) -> GraphIndex:
    """Deduplicated, sorted adjacency of `problem.edges`; raises ValueError on a backward edge."""
    n = problem.num_nodes
    edges = sorted(set((int(u), int(v)) for u, v in problem.edges))
    for u, v in edges:
        if not 0 <= u < v < n:
            raise ValueError(f"edge ({u}, {v}) is not forward in topological order over {n} nodes")
    succ: list[list[int]] = [[] for _ in range(n)]
    pred: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        succ[u].append(v)
        pred[v].append(u)
    src = np.array([e[0] for e in edges], dtype=np.int64)
    dst = np.array([e[1] for e in edges], dtype=np.int64)
    return GraphIndex(src, dst, tuple(tuple(x) for x in succ), tuple(tuple(x) for x in pred),
                      tuple(v for v in range(n) if not pred[v]),
                      tuple(float(t) for t in problem.edge_time_s), tuple(float(t) for t in problem.cloud_time_s),
                      tuple(int(b) for b in problem.native_bits))


def is_downward_closed(problem: SplitInferenceProblem, on_edge: np.ndarray, adj: GraphIndex | None = None) -> bool:
    """True when every predecessor of a device node is on the device (inputs are not checked here)."""
    adj = adj or graph_index(problem)
    s = np.asarray(on_edge, dtype=bool)
    return not bool(np.any(s[adj.dst] & ~s[adj.src]))


def cut_tensors(problem: SplitInferenceProblem, on_edge: np.ndarray, adj: GraphIndex | None = None) -> list[int]:
    """V_p(S): device nodes with at least one cloud consumer, ascending (each is sent once)."""
    adj = adj or graph_index(problem)
    s = np.asarray(on_edge, dtype=bool)
    return [int(v) for v in np.unique(adj.src[s[adj.src] & ~s[adj.dst]])]


def edge_memory_bytes(problem: SplitInferenceProblem, on_edge: np.ndarray) -> float:
    """Device memory estimate (B): parameters of device nodes + the largest device activation."""
    s = np.asarray(on_edge, dtype=bool)
    if not s.any():
        return 0.0
    return float(problem.param_bytes[s].sum() + problem.out_bytes[s].max())


@dataclass(frozen=True, eq=False)
class CutStructure:
    """The bits-independent part of a cut: everything `stage_times` needs besides the bits."""

    on_edge: np.ndarray              # bool (n,)
    tensors: tuple[int, ...]         # V_p ascending
    edge_compute_s: float            # Σ_{v∈S} t_e(v)
    cloud_compute_s: float           # Σ_{v∉S} t_c(v)
    memory_bytes: float              # edge memory estimate
    output_on_edge: bool
    done_s: tuple[float, ...]        # device completion time of each cut tensor before any quantisation work


def cut_structure(problem: SplitInferenceProblem, on_edge: np.ndarray, adj: GraphIndex | None = None) -> CutStructure:
    """Precompute the stage sums and V_p of a device set (O(|V| + |E|) numpy)."""
    adj = adj or graph_index(problem)
    s = np.asarray(on_edge, dtype=bool)
    tensors = tuple(sorted(set(adj.src[s[adj.src] & ~s[adj.dst]].tolist())))
    done = np.cumsum(problem.edge_time_s * s)
    return CutStructure(
        on_edge=s.copy(), tensors=tensors, edge_compute_s=float(done[-1]) if len(done) else 0.0,
        cloud_compute_s=float(problem.cloud_time_s.sum() - problem.cloud_time_s @ s),
        memory_bytes=edge_memory_bytes(problem, s), output_on_edge=bool(s[problem.output_node]),
        done_s=tuple(float(done[v]) for v in tensors))


@dataclass
class PrefixSums:
    """Inclusive prefix sums over the index (topological) order, for cuts S = {0..last} ∪ extra."""

    edge_time_s: np.ndarray
    cloud_time_s: np.ndarray
    param_bytes: np.ndarray
    max_out_bytes: np.ndarray
    last_consumer: np.ndarray          # largest successor index per node (−1 without successors)
    frontier: dict[int, tuple[int, ...]] = field(default_factory=dict)   # memo: u ≤ last with a successor > last


def prefix_sums(problem: SplitInferenceProblem, adj: GraphIndex) -> PrefixSums:
    """O(|V| + |E|) tables for `prefix_cut_structure`."""
    last = np.full(problem.num_nodes, -1, dtype=np.int64)
    np.maximum.at(last, adj.src, adj.dst)
    return PrefixSums(np.cumsum(problem.edge_time_s), np.cumsum(problem.cloud_time_s),
                      np.cumsum(problem.param_bytes), np.maximum.accumulate(problem.out_bytes.astype(float)), last)


def prefix_cut_structure(problem: SplitInferenceProblem, adj: GraphIndex, pre: PrefixSums, last: int,
                         extra: tuple[int, ...], on_edge: np.ndarray) -> CutStructure:
    """`cut_structure` of S = {0..last} ∪ extra (extra ascending, all > last) in O(|extra| + |frontier|).

    Every cut COACH generates on a graph without floating nodes has this form (ancestors(a_j) ∪ {a_j} is
    the index prefix up to a_j); `on_edge` is S's mask, passed through.
    """
    if last not in pre.frontier:
        pre.frontier[last] = tuple(int(u) for u in np.flatnonzero(pre.last_consumer[:last + 1] > last)) if last >= 0 else ()
    inside = set(extra)
    te, tc = adj.edge_time_s, adj.cloud_time_s
    base_e = float(pre.edge_time_s[last]) if last >= 0 else 0.0
    tensors: list[int] = []
    done: list[float] = []
    for u in pre.frontier[last]:
        if any(w > last and w not in inside for w in adj.succ[u]):
            tensors.append(u)
            done.append(float(pre.edge_time_s[u]))
    run = base_e
    cloud = float(pre.cloud_time_s[-1]) - (float(pre.cloud_time_s[last]) if last >= 0 else 0.0)
    params = float(pre.param_bytes[last]) if last >= 0 else 0.0
    act = float(pre.max_out_bytes[last]) if last >= 0 else 0.0
    for v in extra:
        run += te[v]
        cloud -= tc[v]
        params += float(problem.param_bytes[v])
        act = max(act, float(problem.out_bytes[v]))
        if any(w > last and w not in inside for w in adj.succ[v]):
            tensors.append(v)
            done.append(run)
    out = problem.output_node
    return CutStructure(on_edge=on_edge, tensors=tuple(tensors), edge_compute_s=run, cloud_compute_s=cloud,
                        memory_bytes=params + act if (last >= 0 or extra) else 0.0,
                        output_on_edge=out <= last or out in inside, done_s=tuple(done))


def bits_of(problem: SplitInferenceProblem, v: int, bits: Mapping[int, int]) -> int:
    """Bits tensor v is sent at: `bits[v]`, native when absent, never above native."""
    native = int(problem.native_bits[v])
    return min(int(bits.get(v, native)), native)


def is_quantised(problem: SplitInferenceProblem, v: int, b: int) -> bool:
    """A tensor is quantised (UAQ, with metadata and (de)quantise work) when sent below native bits."""
    return b < int(problem.native_bits[v])


def tensor_bytes(problem: SplitInferenceProblem, v: int, b: int) -> float:
    """⌈n_v·b/8⌉ + m_v (B); m_v only for quantised tensors."""
    n = int(problem.out_elements[v])
    payload = (n * b + 7) // 8
    return float(payload + (problem.quant_meta_bytes if is_quantised(problem, v, b) else 0.0))


def quantise_s(problem: SplitInferenceProblem, v: int, b: int) -> float:
    """t_q(v) on the device (s); 0 for raw tensors."""
    if not is_quantised(problem, v, b):
        return 0.0
    rate = dict(problem.quant_s_per_element_edge_by_bits).get(int(b), problem.quant_s_per_element_edge)
    fixed = dict(problem.quant_s_fixed_edge_by_bits).get(int(b), problem.quant_s_fixed_edge)
    return fixed + rate * float(problem.out_elements[v])


def dequantise_s(problem: SplitInferenceProblem, v: int, b: int) -> float:
    """t_dq(v) in the cloud (s); 0 for raw tensors."""
    if not is_quantised(problem, v, b):
        return 0.0
    rate = dict(problem.dequant_s_per_element_cloud_by_bits).get(int(b), problem.dequant_s_per_element_cloud)
    fixed = dict(problem.dequant_s_fixed_cloud_by_bits).get(int(b), problem.dequant_s_fixed_cloud)
    return fixed + rate * float(problem.out_elements[v])


def tensor_accuracy_drop(problem: SplitInferenceProblem, v: int, b: int) -> float:
    """ΔAcc of tensor v alone at b bits: 0 at native bits, +inf where not measured/quantisable."""
    if not is_quantised(problem, v, b):
        return 0.0
    if not problem.quantizable[v] or b not in problem.bits_options:
        return math.inf
    d = float(problem.accuracy_drop[v, problem.bits_options.index(b)])
    return d if math.isfinite(d) else math.inf


def tensor_cost(problem: SplitInferenceProblem, adj: GraphIndex, v: int, b: int) -> tuple[float, float, float, float]:
    """(bytes, t_q, t_dq, ΔAcc) of tensor v at b bits (clipped to native), memoised in the index."""
    b = min(b, adj.native_bits[v])
    key = (v, b)
    got = adj.tensor_costs.get(key)
    if got is None:
        got = (tensor_bytes(problem, v, b), quantise_s(problem, v, b), dequantise_s(problem, v, b),
               tensor_accuracy_drop(problem, v, b))
        adj.tensor_costs[key] = got
    return got


@dataclass(frozen=True)
class Overlap:
    """One sample through device → FIFO link → cloud (docs/split-inference.md §2)."""

    edge_done_s: float                 # T_e: device finishes S
    ready_s: Mapping[int, float]       # a_v: cut tensor v computed and quantised on the device
    arrival_s: Mapping[int, float]     # v fully received in the cloud (incl. RTT/2)
    last_arrival_s: float
    link_overlap_s: float              # T_t^p: link busy time before T_e
    cloud_overlap_s: float             # T_c^p: cloud busy time before the last arrival


def _simulate(problem: SplitInferenceProblem, adj: GraphIndex, cs: CutStructure, bits: Mapping[int, int]) -> Overlap:
    """Event simulation of one sample; the cloud side stops at the last arrival (all later work is after it)."""
    s = cs.on_edge
    bw = problem.bandwidth_bytes_per_s
    half_rtt = problem.rtt_s / 2.0
    costs = {v: tensor_cost(problem, adj, v, bits.get(v, adj.native_bits[v])) for v in cs.tensors}
    ready: dict[int, float] = {}
    extra = 0.0
    for v, d0 in zip(cs.tensors, cs.done_s):          # the device runs S in index (topological) order
        extra += costs[v][1]
        ready[v] = d0 + extra
    t_e = cs.edge_compute_s + extra
    arrival: dict[int, float] = {}
    free = 0.0
    link_overlap = 0.0
    for v in sorted(cs.tensors, key=lambda u: (ready[u], u)):      # FIFO in completion order
        start = max(ready[v], free)
        free = start + (costs[v][0] / bw if bw > 0 else math.inf)
        arrival[v] = free + half_rtt
        link_overlap += max(0.0, min(free, t_e) - start)
    last = max(arrival.values()) if arrival else 0.0
    # Cloud: one server, non-delay list scheduling; among ready tasks the lowest topological key runs first.
    remaining: dict[int, int] = {}
    avail_at: dict[int, float] = {}
    pending: list[tuple[float, int, int]] = []        # (ready time, key, kind) kind 0 = dequantise v, 1 = node w

    def notify(w: int, t: float) -> None:
        left = remaining.get(w, len(adj.pred[w])) - 1
        remaining[w] = left
        avail_at[w] = max(avail_at.get(w, 0.0), t)
        if left == 0:
            heapq.heappush(pending, (avail_at[w], w, 1))

    for v in cs.tensors:
        if costs[v][2] > 0:
            heapq.heappush(pending, (arrival[v], v, 0))
        else:
            for w in adj.succ[v]:
                if not s[w]:
                    notify(w, arrival[v])
    for c in adj.sources:
        if not s[c]:
            heapq.heappush(pending, (0.0, c, 1))
    avail: list[tuple[int, int]] = []
    t = 0.0
    busy = 0.0
    while (pending or avail) and t < last:
        while pending and pending[0][0] <= t:
            _, key, kind = heapq.heappop(pending)
            heapq.heappush(avail, (key, kind))
        if not avail:
            t = pending[0][0]
            continue
        key, kind = heapq.heappop(avail)
        fin = t + (costs[key][2] if kind == 0 else adj.cloud_time_s[key])
        busy += max(0.0, min(fin, last) - t)
        t = fin
        for w in adj.succ[key]:
            if not s[w]:
                notify(w, fin)
    return Overlap(t_e, ready, arrival, last, link_overlap, busy)


def overlap_simulation(problem: SplitInferenceProblem, on_edge: np.ndarray, bits: Mapping[int, int],
                       adj: GraphIndex | None = None) -> Overlap:
    """Single-sample event simulation (docs/split-inference.md §2): device in topological order, FIFO link, one cloud server."""
    adj = adj or graph_index(problem)
    return _simulate(problem, adj, cut_structure(problem, on_edge, adj), bits)


@dataclass(frozen=True)
class StageSums:
    """T_e, T_t, T_c and Lat of a cut at given bits, without the bubbles (no simulation)."""

    edge_s: float
    link_s: float
    cloud_s: float
    latency_s: float
    bytes_per_request: float
    accuracy_drop: float


def stage_sums(problem: SplitInferenceProblem, cs: CutStructure, bits: Mapping[int, int], adj: GraphIndex) -> StageSums:
    """The §3 sums for (cut, bits); cheap enough for the bit-ceiling search."""
    t_e = cs.edge_compute_s + problem.request_loop_s          # the edge loop's cost, every request
    t_c = cs.cloud_compute_s
    sent = acc = 0.0
    if cs.tensors:            # the runtime's per-request framing, gRPC and thread hand-offs
        t_e += problem.request_edge_s
        t_c += problem.request_cloud_s
    memo, native = adj.tensor_costs, adj.native_bits
    for v in cs.tensors:
        b = min(bits.get(v, native[v]), native[v])
        got = memo.get((v, b))
        nbytes, tq, tdq, drop = got if got is not None else tensor_cost(problem, adj, v, b)
        t_e += tq
        t_c += tdq
        sent += nbytes
        acc += drop
    # The link stage is its busy time: propagation (RTT/2) delays a request but does not occupy the link, so
    # a streamed pipeline overlaps it across requests; it counts in the latency only.
    if not cs.tensors:
        t_t = 0.0
    elif problem.bandwidth_bytes_per_s > 0:
        t_t = sent / problem.bandwidth_bytes_per_s
    else:
        t_t = math.inf
    latency = t_e + t_t + t_c + (problem.rtt_s / 2.0 + problem.request_latency_s if cs.tensors else 0.0)
    if not cs.output_on_edge:
        down = problem.downlink_bytes_per_s
        latency += (problem.result_bytes / down if down > 0 else math.inf) + problem.rtt_s / 2.0
    return StageSums(t_e, t_t, t_c, latency, sent, acc)


def period_of(problem: SplitInferenceProblem, ss: StageSums) -> float:
    """P (s): the slowest stage, or the latency over the pipeline depth when the window of requests in flight
    is what limits (a long RTT: each request holds a slot for its whole latency)."""
    return max(ss.edge_s, ss.link_s, ss.cloud_s, ss.latency_s / max(1, problem.pipeline_depth))


def stage_times(problem: SplitInferenceProblem, cs: CutStructure, bits: Mapping[int, int],
                adj: GraphIndex | None = None, sums: StageSums | None = None) -> SplitMetrics:
    """SplitMetrics of a precomputed cut at the given bits (fast path used by every solver)."""
    adj = adj or graph_index(problem)
    ss = sums or stage_sums(problem, cs, bits, adj)
    t_e, t_t, t_c = ss.edge_s, ss.link_s, ss.cloud_s
    period = period_of(problem, ss)
    if not math.isfinite(period):
        objective = math.inf
    elif not cs.tensors and cs.on_edge[problem.output_node]:
        # all-device: a one-stage pipeline has no inter-stage bubbles, so J = P (= T_e). Counting the unused
        # link and cloud as idle (J = 3 T_e by the raw formula) made COACH prefer splits that were slower in
        # both latency and throughput than keeping the model on the device.
        objective = period
    elif len(cs.tensors) <= 1:
        objective = abs(t_e - t_c) + (period - t_t) + period
    else:
        ov = _simulate(problem, adj, cs, bits)
        b_t = abs(t_t - max(t_e, t_t - ov.link_overlap_s, t_c - ov.cloud_overlap_s))
        objective = abs(t_e - t_c) + b_t + period
    return SplitMetrics(edge_s=t_e, link_s=t_t, cloud_s=t_c, period_s=period, latency_s=ss.latency_s,
                        objective_s=objective, bytes_per_request=ss.bytes_per_request,
                        accuracy_drop=ss.accuracy_drop, edge_memory_bytes=cs.memory_bytes,
                        propagation_s=problem.rtt_s / 2.0 if cs.tensors else 0.0,
                        edge_overhead_s=problem.request_loop_s + (problem.request_edge_s if cs.tensors else 0.0),
                        cloud_overhead_s=problem.request_cloud_s if cs.tensors else 0.0)


def evaluate(problem: SplitInferenceProblem, on_edge: np.ndarray, bits: Mapping[int, int],
             adj: GraphIndex | None = None) -> SplitMetrics:
    """Stage times, latency, J and the additive accuracy drop of (S, bits); absent tensors go at native bits.

    `bytes_per_request` is the uplink payload (B); `accuracy_drop` is Σ ΔAcc(v, b_v) over V_p.
    """
    adj = adj or graph_index(problem)
    return stage_times(problem, cut_structure(problem, on_edge, adj), bits, adj)


def steady_state_period(metrics: SplitMetrics, samples: int = 50) -> float:
    """Cycle time (s) of `samples` requests through three single-server stages (device, link, cloud)."""
    e = l = c = 0.0
    ends = []
    for _ in range(samples):
        e = e + metrics.edge_s
        l = max(e, l) + metrics.link_s
        c = max(l, c) + metrics.cloud_s
        ends.append(c)
    half = samples // 2
    return (ends[-1] - ends[half - 1]) / (samples - half) if samples > 1 else ends[-1]
