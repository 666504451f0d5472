"""The geo-train (CoCoDC) problem and solution records. Times in seconds, sizes in bytes, rates in bits/s.

M regions train one model; every H inner steps (a window) each region must have sent every fragment at
least once. A fragment is a contiguous group of decoder layers (the first also holds the embeddings, the
last the final norm and head). The plan chooses P fragments, N sends per window (slot h = H / N inner
steps, one fragment all-reduced per slot) and the in-flight delay tau (inner steps between a send and its
merge, tau < h as in torchft: one fragment in flight).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.common import Solution


@dataclass(frozen=True)
class GeoTrainProblem:
    """Everything the geo-train solvers read.

    `step_time_s[m]` is region m's compute time of one inner step; the slowest region paces every slot
    (the all-reduce waits for it). The WAN is a ring through every region: its slowest link rate and its
    largest RTT bound an all-reduce. `slot_overhead_s` is the fixed per-slot cost outside the data plane
    (torchft's quorum and commit RPCs), an input the runtime measures; `step_jitter_s` the standard deviation
    of one step's compute time (a send near the hiding edge is exposed in the slots whose steps ran fast).
    """

    region_names: tuple[str, ...]
    step_time_s: np.ndarray            # (M,)
    link_rate_bps: float               # slowest link on the ring (bits/s)
    rtt_s: float                       # largest round-trip time on the ring (s)
    layer_bytes: tuple[int, ...]       # bytes of each decoder layer at the sync dtype (L,)
    embed_bytes: int                   # token embeddings (in the first fragment)
    head_bytes: int                    # final norm + LM head (in the last fragment)
    inner_steps: int                   # H
    max_fragments: int = 8             # largest P tried
    max_exposed_fraction: float = 0.05  # exposed comm allowed, as a fraction of the compute step time
    fixed_fragments: int | None = None  # P, when the user fixes it
    fixed_sends: int | None = None      # N, when the user fixes it
    slot_overhead_s: float = 0.0
    step_jitter_s: float = 0.0         # std of one inner step's compute time of the slowest region (s), measured
    score_bytes_per_fragment: int = 8   # the drift score all-reduced per fragment per slot (float64)
    step_tie_fraction: float = 0.01    # step times within this share of the compute step count as equal

    @property
    def num_regions(self) -> int:
        """M."""
        return len(self.region_names)

    @property
    def num_layers(self) -> int:
        """L."""
        return len(self.layer_bytes)

    @property
    def model_bytes(self) -> int:
        """Bytes of the whole model at the sync dtype."""
        return int(sum(self.layer_bytes) + self.embed_bytes + self.head_bytes)

    @property
    def pace_step_s(self) -> float:
        """Compute time of one inner step of the slowest region."""
        return float(np.max(self.step_time_s))


@dataclass(frozen=True)
class ScheduleMetrics:
    """Predicted figures of one schedule (cost model in solvers/geo_train/cost.py)."""

    step_time_s: float                 # mean wall time per inner step, exposed comm included
    compute_step_s: float              # t: the slowest region's compute per step
    exposed_comm_s_per_step: float     # blocked on the WAN, per inner step
    hidden_comm_s_per_step: float      # transfer time overlapped with compute, per inner step
    fragment_sync_s: tuple[float, ...]  # T_frag of each fragment (s)
    hidden: tuple[bool, ...]           # whether each fragment's send is hidden (T_frag <= tau * t)
    payload_bytes_per_window: float    # all-reduce payload per region per H steps (fragments + scores)
    wire_bytes_per_window: float       # ring volume sent per region per H steps
    link_utilisation: float            # busy time of the link / wall time


@dataclass(frozen=True, kw_only=True)
class GeoTrainSolution(Solution):
    """A schedule: fragments (layer groups), N, h, tau, and its metrics."""

    groups: tuple[tuple[int, ...], ...] = ()
    fragment_bytes: tuple[int, ...] = ()
    inner_steps: int = 0               # H
    sends_per_window: int = 0          # N
    slot_steps: int = 0                # h
    delay_steps: int = 0               # tau
    choice: str = "adaptive"           # adaptive | round-robin
    merge: str = "taylor"              # taylor | alpha-blend | blocking
    metrics: ScheduleMetrics | None = None
