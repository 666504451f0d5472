"""The moe-offload problem and solution records (dense arrays; names only in `layer_names`).

Symbols follow docs/moe-offload.md §2: L MoE layers, N experts, top-k, U_e bytes per expert, BW the
host->device bandwidth, t_x one expert's compute per step, h_i(C) hit curves, p_i predictor recall,
k_i distinct experts per step, B the expert-cache budget and u the budget unit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from solvers.common import Solution


@dataclass(frozen=True)
class MoeOffloadProblem:
    """Everything the moe-offload solvers read. Times in seconds, sizes in bytes."""

    layer_names: tuple[str, ...]
    num_experts: int
    top_k: int
    k_prefetch: int
    expert_bytes: float
    intermediate_size: int
    theta_granularity: int
    bandwidth_bytes_per_s: float
    expert_compute_s: float
    attention_compute_s: np.ndarray
    other_compute_s: float
    hit_curves: Mapping[str, np.ndarray]
    recall: np.ndarray
    distinct_experts: np.ndarray
    budget_bytes: float
    budget_unit_bytes: float
    host_expert_compute_s: float | None = None   # one whole expert computed on the host (sustained DRAM rate), s
    host_dram_bytes_per_s: float | None = None   # peak host DRAM bandwidth P, shared by host compute and link copies
    # whole requests (docs §12): prefill of `prompt_tokens` tokens (batch x prompt), then `output_tokens` decode steps
    prompt_tokens: int = 0
    output_tokens: int = 1
    ubatch: int = 512                            # llama.cpp's physical batch, for its prefill rules
    expert_flops_per_token: float = 0.0          # FLOPs of one expert for one token
    device_flops_per_s: float = 1.0              # sustained device FLOP/s at the serving dtype
    host_flops_per_s: float | None = None        # sustained host CPU FLOP/s
    prefill_attention_s: np.ndarray | None = None  # per MoE layer: attention, router, shared experts over the prompt
    prefill_other_s: float = 0.0                 # dense layers and the LM head for the prompt
    popularity: np.ndarray | None = None         # (L, N) share of activations per expert in the trace

    @property
    def num_layers(self) -> int:
        """L."""
        return len(self.layer_names)

    @property
    def transfer_s(self) -> float:
        """tau_U: time to move one whole expert over the link (s)."""
        return self.expert_bytes / self.bandwidth_bytes_per_s

    @property
    def theta_hide(self) -> float:
        """tau_U / (tau_U + t_x): above it a bottom loads while its top computes."""
        return self.transfer_s / (self.transfer_s + self.expert_compute_s)

    @property
    def total_units(self) -> int:
        """G: the whole budget in units."""
        return int(np.floor(self.budget_bytes / self.budget_unit_bytes + 1e-9))

    @property
    def layer_units(self) -> int:
        """G_i: units that hold every expert of one layer whole (more is never useful)."""
        return int(np.ceil(self.num_experts * self.expert_bytes / self.budget_unit_bytes - 1e-9))

    def thetas(self) -> np.ndarray:
        """The split-ratio grid Theta = {j*g/f} plus 1."""
        f, g = self.intermediate_size, self.theta_granularity
        grid = [j * g / f for j in range(f // g + 1)]
        if grid[-1] < 1.0:
            grid.append(1.0)
        return np.array(grid)

    def layer_compute_s(self) -> np.ndarray:
        """T^c_i: stall-free compute of layer i (attention + router + k_i experts)."""
        return self.attention_compute_s + self.distinct_experts * self.expert_compute_s

    def prefetch_window_s(self) -> np.ndarray:
        """W_i: from the post_attn tap of layer i-1 to layer i's expert dispatch (0 for the first layer)."""
        w = np.zeros(self.num_layers)
        w[1:] = self.distinct_experts[:-1] * self.expert_compute_s + self.attention_compute_s[1:]
        return w

    def envelope(self, policy: str) -> np.ndarray:
        """h-hat: the nondecreasing envelope of the hit curves, (L, N+1)."""
        return np.maximum.accumulate(np.asarray(self.hit_curves[policy]), axis=1)


@dataclass(frozen=True, kw_only=True)
class MoeOffloadSolution(Solution):
    """Per-layer decisions; `objective` is the predicted time per decode step (s) and `metrics` the
    cost model's `PredictedMetrics` for exactly these decisions."""

    budget_units: np.ndarray     # x_i
    thetas: np.ndarray           # theta_i
    capacities: np.ndarray       # C_i, tops that fit
    prefetch: np.ndarray         # bool: prefetch predicted experts in layer i
    policy: str                  # eviction policy of the cache ("static": a fixed hot set, no eviction)
    cpu_layers: np.ndarray | None = None  # bool: CPU-miss layers (static hot set on the device, misses on the host CPU)
    split_fraction: np.ndarray | None = None  # split layers: the copied fraction alpha of each miss (NaN: not split)

    def split_layers(self) -> np.ndarray:
        """bool per layer: misses split between link + device (top rows) and host (bottom rows)."""
        if self.split_fraction is None:
            return np.zeros(len(self.thetas), dtype=bool)
        return np.isfinite(self.split_fraction)

    def miss_mode(self, layer: int) -> str:
        """How layer `layer` serves its misses: "link", "host" or "split"."""
        if self.split_layers()[layer]:
            return "split"
        if self.cpu_layers is not None and self.cpu_layers[layer]:
            return "host"
        return "link"

    def budget_bytes(self, problem: MoeOffloadProblem) -> np.ndarray:
        """Bytes each layer's cache actually holds (C_i * theta_i * U_e)."""
        return self.capacities * self.thetas * problem.expert_bytes
