"""The fed-lora (FedQuad) problem and solution records: dense per-device arrays, names only in `device_ids`.

Symbols follow docs/fed-lora.md, "Cost model". Devices i = 0..n−1 in the lowering's order (sorted ids);
blocks are counted from the input, so LoRA depth d trains the top d blocks and, with q quantised
blocks, blocks L−d .. L−d+q−1 (0-based) store their saved activations quantised. Depth 0 means the
device sits out. Times in seconds, sizes in bytes, bandwidths in bytes/s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from solvers.common import Solution


@dataclass(frozen=True)
class FedLoraProblem:
    """Everything the fed-lora solvers read.

    `memory_table_bytes[d, q]` is the peak training memory M(d, q) of the model at the configured batch
    and sequence length (the same for every device; +inf where q > d or d = 0). Per-device step times
    come from the device's hardware profile: `forward_s` (whole model), `backward_first_s` (head and
    the bottom trainable block), `backward_mid_s` (each further trainable block), `quant_first_s` /
    `quant_mid_s` (quantising and restoring one block's saved activations). A round is
    `local_steps[i]` steps plus sending the LoRA (and head) parameters of the trained blocks down and
    up, plus `latency_s[i]`.
    """

    device_ids: tuple[str, ...]
    num_blocks: int                         # L
    memory_table_bytes: np.ndarray          # (L+1, L+1) M(d, q)
    memory_budget_bytes: np.ndarray         # (n,) M_i, memory available for training
    forward_s: np.ndarray                   # (n,) F_i
    backward_first_s: np.ndarray            # (n,)
    backward_mid_s: np.ndarray              # (n,)
    quant_first_s: np.ndarray               # (n,)
    quant_mid_s: np.ndarray                 # (n,)
    local_steps: np.ndarray                 # (n,) τ_i
    uplink_bytes_per_s: np.ndarray          # (n,)
    downlink_bytes_per_s: np.ndarray        # (n,)
    latency_s: np.ndarray                   # (n,) per-round fixed overhead
    weights: np.ndarray                     # (n,) w_i = n_i / Σ n
    lora_block_bytes: float                 # P_lora per block (B)
    head_bytes: float = 0.0                 # trainable head parameters sent every round (B)
    act_bits: int = 8                       # b_a
    gamma: float = 0.1                      # γ(b_a): utility discount per quantised block
    depth_exponent: float = 1.0             # α: u(d, q) = d^α − γ·q (1 = the spec's linear utility; < 1 concave)
    memory_margin: float = 0.1              # μ
    d_min: int = 1
    deadline_s: float = math.inf            # T_dead
    coverage_kappa: float = 0.0             # κ (0 = off)
    coverage_blocks: int = 0                # D_cov

    @property
    def num_devices(self) -> int:
        """n."""
        return len(self.device_ids)

    def usable_memory_bytes(self) -> np.ndarray:
        """(1 − μ)·M_i (B)."""
        return (1.0 - self.memory_margin) * np.asarray(self.memory_budget_bytes, dtype=float)

    def check(self) -> None:
        """Raise ValueError on malformed arrays (a lowering bug, not a user error)."""
        n, L = self.num_devices, self.num_blocks
        if L < 1:
            raise ValueError("num_blocks must be >= 1")
        if np.asarray(self.memory_table_bytes).shape != (L + 1, L + 1):
            raise ValueError(f"memory_table_bytes must have shape ({L + 1}, {L + 1})")
        for name in ("memory_budget_bytes", "forward_s", "backward_first_s", "backward_mid_s", "quant_first_s",
                     "quant_mid_s", "local_steps", "uplink_bytes_per_s", "downlink_bytes_per_s", "latency_s",
                     "weights"):
            a = np.asarray(getattr(self, name))
            if a.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
            if not np.all(np.isfinite(a)) or np.any(a < 0):
                raise ValueError(f"{name} must be finite and non-negative")
        if np.any(np.asarray(self.uplink_bytes_per_s) <= 0) or np.any(np.asarray(self.downlink_bytes_per_s) <= 0):
            raise ValueError("link bandwidths must be positive")
        if not 1 <= self.d_min <= L:
            raise ValueError("d_min must lie in 1..L")
        if not 0 <= self.coverage_blocks <= L:
            raise ValueError("coverage_blocks must lie in 0..L")
        if not 0 < self.depth_exponent <= 1 or self.gamma < 0:
            raise ValueError("depth_exponent must lie in (0, 1] and gamma be >= 0")


@dataclass(frozen=True)
class FedLoraMetrics:
    """The cost model's numbers for one assignment (arrays in device order; depth 0 = sits out)."""

    round_time_s: float                     # T_round = max over participants of T_i
    progress_rate: float                    # R = Σ w_i u_i / T_round (1/s)
    utility: float                          # Σ w_i u_i
    device_round_s: np.ndarray              # T_i (NaN when sitting out)
    step_s: np.ndarray                      # t_i(d, q) per local step
    comm_s: np.ndarray                      # transfer + latency per round
    wait_s: np.ndarray                      # T_round − T_i (NaN when sitting out)
    peak_memory_bytes: np.ndarray           # M(d_i, q_i) (NaN when sitting out)
    memory_ok: np.ndarray                   # bool: M(d_i, q_i) <= (1 − μ) M_i (True when sitting out)
    coverage: np.ndarray                    # (L,) Σ w_i over devices training block l (0-based from input)
    spread: float                           # (max − min)/max of T_i over participants
    participants: int
    sitting_out: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class FedLoraSolution(Solution):
    """Per device: LoRA depth (0 = sits out) and number of quantised blocks; `metrics` is `FedLoraMetrics`."""

    depth: np.ndarray                       # int (n,)
    quant_blocks: np.ndarray                # int (n,)
    uncovered_blocks: tuple[int, ...] = field(default=())   # blocks (0-based) short of coverage κ
