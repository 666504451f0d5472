"""The fed-expand (FedBE) problem and solution records: dense per-client arrays, names only in `client_ids`.

Symbols follow docs/fed-expand.md, "Cost model". Clients c = 0..n−1 in the lowering's order (sorted ids);
added blocks j = 0..P−1 from the input side: block j is inserted after base block `added_after[j]`, so in
the expanded stack of E = L + P blocks it sits at index e_j = added_after[j] + 1 + j. A client that trains
the set S_c runs its backward from the output down to e_{min S_c}: everything above that index costs
backward time and saved activations, whatever is trained there. Times in seconds (host CPU seconds scaled
to each device by `slowdown`), sizes in bytes, bandwidths in bytes/s.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from solvers.common import Solution


@dataclass(frozen=True)
class FedExpandProblem:
    """Everything the fed-expand solvers read (see the module docstring)."""

    client_ids: tuple[str, ...]
    num_base_blocks: int                    # L
    added_after: tuple[int, ...]            # (P,) base block index each added block follows, increasing
    samples: np.ndarray                     # (n,) local training samples
    home: np.ndarray                        # (n, P) bool: block j is in the home subset of client c's cluster
    cluster: np.ndarray                     # (n,) cluster of each client (by data signature)
    memory_budget_bytes: np.ndarray         # (n,) memory the client offers to training (margin applied)
    deadline_s: np.ndarray                  # (n,) longest round the client may take (inf = none)
    slowdown: np.ndarray                    # (n,) host CPU seconds -> device seconds
    uplink_bytes_per_s: np.ndarray          # (n,)
    downlink_bytes_per_s: np.ndarray        # (n,)
    latency_s: np.ndarray                   # (n,) fixed per-round overhead
    local_steps: int                        # τ
    frozen_bytes: float                     # base weights and buffers held by every client (B)
    block_bytes: float                      # parameters of one block (B)
    optimizer_factor: float                 # per trained parameter byte: gradient + Adam moments (3 for fp32 Adam)
    act_fixed_bytes: float                  # saved for backward by the head whenever a block trains (B)
    act_block_bytes: float                  # saved per block at or above the lowest trained block (B)
    act_train_bytes: float                  # saved in addition per trained block (its linear inputs) (B)
    workspace_bytes: float                  # transient peak of one block (B)
    forward_s: float                        # host forward of the whole expanded model per step (s)
    backward_fixed_s: float                 # host backward of the head per step (s)
    backward_block_s: float                 # host backward per block at or above the lowest trained one (s)
    backward_train_s: float                 # host backward in addition per trained block (weight gradients) (s)
    home_bonus: float = 1.0                 # extra utility of a block in the client's home subset

    @property
    def num_clients(self) -> int:
        """n."""
        return len(self.client_ids)

    @property
    def num_added(self) -> int:
        """P."""
        return len(self.added_after)

    @property
    def depth(self) -> int:
        """E = L + P, blocks of the expanded model."""
        return self.num_base_blocks + self.num_added

    def expanded_index(self) -> np.ndarray:
        """(P,) e_j: index of added block j in the expanded stack."""
        return np.asarray(self.added_after, dtype=int) + 1 + np.arange(self.num_added)

    def value(self) -> np.ndarray:
        """(n, P) utility of client c training block j: n_c·(1 + bonus·home_cj)."""
        return self.samples[:, None] * (1.0 + self.home_bonus * self.home.astype(float))


@dataclass(frozen=True)
class FedExpandMetrics:
    """Per-client predictions of one assignment (arrays in client order) and the round figures."""

    round_time_s: np.ndarray                # (n,) 0 for a client that sits out
    memory_bytes: np.ndarray                # (n,) 0 for a client that sits out
    bytes_per_round: np.ndarray             # (n,) down + up
    lowest_trained: np.ndarray              # (n,) expanded index of the lowest trained block (-1 = none)
    within_budgets: np.ndarray              # (n,) bool: memory and deadline met
    uncovered: tuple[int, ...]              # added blocks nobody trains
    utility: float                          # Σ_c Σ_j value_cj·x_cj / Σ_c n_c

    @property
    def round_s(self) -> float:
        """Slowest client's round (s)."""
        return float(np.max(self.round_time_s)) if len(self.round_time_s) else 0.0

    @property
    def total_bytes(self) -> float:
        """Bytes moved per round, all clients (B)."""
        return float(np.sum(self.bytes_per_round))


@dataclass(frozen=True, kw_only=True)
class FedExpandSolution(Solution):
    """Block assignment: `assign[c, j]` True when client c trains added block j (every round)."""

    assign: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
