"""The split-inference (COACH) problem and solution records: dense arrays, names only in `node_names`.

Symbols follow docs/split-inference.md §1-§2: G = (V, E) the model graph after folding shape-only ops,
S ⊆ V the device-side nodes (closed under predecessors, every input node in S), V_p(S) the tensors sent
(outputs of S-nodes with a consumer outside S, each sent once), b_v the bits of tensor v.
Times in seconds, sizes in bytes, bandwidth in bytes/s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from solvers.common import Solution


@dataclass(frozen=True)
class SplitInferenceProblem:
    """Everything the split-inference solvers read.

    Nodes are in topological order and `edges` point forward (u < v). `accuracy_drop[v, j]` is the
    measured (or proxy) accuracy loss when only tensor v is quantised to `bits_options[j]` bits
    (0 for bits >= native; NaN where v cannot be quantised). `native_bits[v]` is the tensor's natural
    encoding (32 for fp32 activations, 8 for uint8 image inputs, 64 for int64 token ids); integer and
    boolean tensors (`quantizable` False) are always sent at native bits.
    """

    node_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    is_input: np.ndarray            # bool (n,): model inputs, always on the device
    output_node: int                # the node producing the model output (the sink)
    edge_time_s: np.ndarray         # t_e(v) on the device (edge)
    cloud_time_s: np.ndarray        # t_c(v) in the cloud
    out_elements: np.ndarray        # n_v: elements of out(v)
    native_bits: np.ndarray         # int (n,)
    quantizable: np.ndarray         # bool (n,)
    param_bytes: np.ndarray         # parameter bytes of node v (they live where v runs)
    out_bytes: np.ndarray           # bytes of out(v) at native precision (activation memory)
    bits_options: tuple[int, ...]   # sorted, e.g. (2, 3, 4, 5, 6, 8, 16)
    accuracy_drop: np.ndarray       # (n, len(bits_options))
    bandwidth_bytes_per_s: float    # uplink
    rtt_s: float
    downlink_bytes_per_s: float
    result_bytes: float             # the result returned to the device
    edge_memory_bytes: float
    quant_meta_bytes: float = 8.0                       # m_v: fp32 scale + int32 zero point per tensor
    quant_s_per_element_edge: float = 0.0               # t_q(v) = a + b * n_v on the device: (a, b) below
    quant_s_fixed_edge: float = 0.0
    dequant_s_per_element_cloud: float = 0.0
    dequant_s_fixed_cloud: float = 0.0
    epsilon: float = 0.005          # accuracy-loss cap
    t_max_s: float = float("inf")   # latency bound (--max-latency)
    period_max_s: float = float("inf")   # period bound P <= 1 / (--min-throughput)
    # the runtime's fixed cost per request that crosses the link (framing, gRPC, thread hand-offs), measured
    # by `planner calibrate`: CPU time on the edge and in the cloud (added to T_e and T_c), and the rest of
    # a software round trip (added to the latency). 0 for plans without a calibration.
    request_edge_s: float = 0.0
    request_cloud_s: float = 0.0
    request_latency_s: float = 0.0
    # the edge's own request loop (window, bookkeeping, the output's summary), paid by every request, one that
    # stays on the edge too (added to T_e of every cut); 0 for plans without a calibration
    request_loop_s: float = 0.0
    # per-element quantise (edge) and dequantise (cloud) time by bit width, ((bits, s), ...), measured by
    # `planner calibrate` (sub-byte packing costs ~30x 8-bit per element here); widths absent use the flat rates
    quant_s_per_element_edge_by_bits: tuple[tuple[int, float], ...] = ()
    dequant_s_per_element_cloud_by_bits: tuple[tuple[int, float], ...] = ()
    # the fixed cost of one quantise / dequantise call by bit width (s): Python dispatch of the kernels' several
    # small ops, ~80 us to quantise 8 bits here whatever the size (a digits image's 784 values cost 45x their
    # per-element rate); measured by `planner calibrate`, widths absent use quant_s_fixed_edge / dequant_s_fixed_cloud
    quant_s_fixed_edge_by_bits: tuple[tuple[int, float], ...] = ()
    dequant_s_fixed_cloud_by_bits: tuple[tuple[int, float], ...] = ()
    # requests between the edge and their answer (the runtime's --max-in-flight): a request holds a slot for
    # its whole latency, so throughput is at most pipeline_depth / Lat however short the stages are
    pipeline_depth: int = 3
    accuracy_is_proxy: bool = False

    @property
    def num_nodes(self) -> int:
        """|V|."""
        return len(self.node_names)


@dataclass(frozen=True)
class SplitMetrics:
    """Stage times and derived figures of one (S, bits) choice."""

    edge_s: float          # T_e
    link_s: float          # T_t: the link's busy time per request (bytes / BW), a pipeline stage
    cloud_s: float         # T_c
    period_s: float        # P = max(T_e, T_t, T_c, Lat / depth)
    latency_s: float       # T_e + T_t + RTT/2 + T_c + result/downlink + RTT/2
    objective_s: float     # J = B_c + B_t + P
    bytes_per_request: float
    accuracy_drop: float   # additive estimate over sent tensors (the planner re-measures jointly)
    edge_memory_bytes: float
    propagation_s: float = 0.0   # RTT/2 when anything is sent: adds to the latency, not to the period
    edge_overhead_s: float = 0.0  # the runtime's per-request CPU on the edge, included in edge_s
    cloud_overhead_s: float = 0.0  # the runtime's per-request CPU in the cloud, included in cloud_s


@dataclass(frozen=True, kw_only=True)
class SplitInferenceSolution(Solution):
    """A cut (device-side set) and the bits of every sent tensor; `objective` is J (s), `metrics` the
    `SplitMetrics` of exactly this choice. Status INFEASIBLE: no cut met T_max / epsilon (COACH then
    returns the min-latency cut, and `params["fix"]` says what bound would be feasible)."""

    on_edge: np.ndarray             # bool (n,)
    bits: Mapping[int, int]         # sent tensor index -> bits
