"""The fed-compress (Caesar) problem and solution records: dense arrays, names only in `client_ids`.

Symbols follow docs/fed-compress.md, "What it decides" and "Cost model". Rounds t = 1..R; `selected[t-1]` are the devices of S_t.
Decisions are stored as FRACTIONS OF VALUES KEPT in (0, 1] (1 = uncompressed); the spec's θ is the
dropped fraction, θ = 1 − keep. Times in seconds, sizes in bytes, bandwidths in bytes per second.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.common import Solution, Status


@dataclass(frozen=True)
class FedCompressProblem:
    """Everything the fed-compress solvers read: the population, the model's tensors and the schedule.

    Time of one local iteration of device i at batch β is `iter_fixed_s[i] + iter_per_sample_s[i]·β`
    (μ_i(β) = a_i + b_i·β); a round costs `local_iters` iterations plus both transfers plus
    `latency_s[i]`. Training memory at batch β is `train_fixed_bytes + train_bytes_per_sample·β`
    and must fit `memory_bytes[i]`. `label_counts[i, c]` is device i's number of samples of class c
    (n_i is the row sum; every row must be positive). `selected` lists, per round, the indices of
    the participating devices (sorted); participation is decided outside the solver (seeded).
    """

    client_ids: tuple[str, ...]
    label_counts: np.ndarray          # int (N, C)
    tensor_numels: tuple[int, ...]    # P_j of every model tensor, in state_dict order
    iter_fixed_s: np.ndarray          # a_i (N,)
    iter_per_sample_s: np.ndarray     # b_i (N,)
    downlink_bytes_per_s: np.ndarray  # BWd_i (N,)
    uplink_bytes_per_s: np.ndarray    # BWu_i (N,)
    latency_s: np.ndarray             # lat_i (N,): fixed per-round overhead
    memory_bytes: np.ndarray          # memory available for training (N,)
    train_fixed_bytes: float          # weights, gradients, optimiser state (B)
    train_bytes_per_sample: float     # activations kept for backward, per sample (B)
    selected: tuple[tuple[int, ...], ...]   # S_t for t = 1..R
    batch_grid: tuple[int, ...] = tuple(range(8, 65))
    local_iters: int = 20             # τ
    min_compress_numel: int = 1024
    down_budget_bytes: float | None = None   # per-round downlink budget (budgeted mode only)

    @property
    def num_clients(self) -> int:
        """N, devices in the population."""
        return len(self.client_ids)

    @property
    def num_rounds(self) -> int:
        """R, planned rounds."""
        return len(self.selected)

    @property
    def samples(self) -> np.ndarray:
        """n_i, local training samples (N,)."""
        return np.asarray(self.label_counts).sum(axis=1)

    @property
    def model_numel(self) -> int:
        """Σ_j P_j."""
        return int(sum(self.tensor_numels))

    @property
    def full_model_bytes(self) -> int:
        """4·Σ_j P_j: the model (or an update) as dense fp32."""
        return 4 * self.model_numel

    def selected_mask(self) -> np.ndarray:
        """Bool (R, N): device i participates in round t."""
        mask = np.zeros((self.num_rounds, self.num_clients), dtype=bool)
        for r, sel in enumerate(self.selected):
            mask[r, list(sel)] = True
        return mask

    def first_contact_mask(self) -> np.ndarray:
        """Bool (R, N): round t is device i's first participation (docs/fed-compress.md, "Accounting").

        No device holds a model before its first download, in any configuration, so that download is the
        dense model whatever the configuration's ratio.
        """
        mask = self.selected_mask()
        first = mask & (np.cumsum(mask, axis=0) == 1)
        return first

    def batch_cap(self) -> np.ndarray:
        """Largest grid batch that fits each device's memory (N,), 0 where even the smallest does not fit."""
        grid = np.asarray(self.batch_grid, dtype=float)
        need = self.train_fixed_bytes + self.train_bytes_per_sample * grid            # (G,)
        fits = need[None, :] <= np.asarray(self.memory_bytes, dtype=float)[:, None] * (1 + 1e-12)
        cap = np.where(fits, grid[None, :], 0.0).max(axis=1)
        return cap.astype(np.int64)


def sample_participation(num_clients: int, rounds: int, fraction: float, seed: int) -> tuple[tuple[int, ...], ...]:
    """S_t for t = 1..R: each round draws max(1, round(fraction·N)) devices without replacement (seeded)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"participation fraction must lie in (0, 1], got {fraction!r}")
    k = max(1, int(round(fraction * num_clients)))
    rng = np.random.default_rng(seed)
    return tuple(tuple(sorted(int(i) for i in rng.choice(num_clients, size=k, replace=False))) for _ in range(rounds))


@dataclass(frozen=True)
class FedCompressMetrics:
    """The cost model's figures for one schedule of decisions. Arrays are (R, N), 0 where not selected."""

    bytes_down: np.ndarray        # B
    bytes_up: np.ndarray          # B
    compute_s: np.ndarray         # τ·μ_i(β_i)
    time_s: np.ndarray            # M_i: compute + transfers + latency
    round_time_s: np.ndarray      # (R,): max_i M_i over S_t (0 for an empty round)
    waiting_s: np.ndarray         # (R, N): T_round − M_i
    traffic_bytes: np.ndarray     # (R,): Σ_i bytes_down + bytes_up
    samples_per_s: np.ndarray     # (R,): τ·Σ_i β_i / T_round

    @property
    def total_traffic_bytes(self) -> float:
        """Σ over rounds of the round's traffic (B)."""
        return float(self.traffic_bytes.sum())

    @property
    def mean_traffic_bytes_per_round(self) -> float:
        """Mean traffic per round (B)."""
        return float(self.traffic_bytes.mean()) if self.traffic_bytes.size else 0.0

    @property
    def mean_round_time_s(self) -> float:
        """Mean predicted round time (s)."""
        return float(self.round_time_s.mean()) if self.round_time_s.size else 0.0

    @property
    def total_time_s(self) -> float:
        """Σ round times (s): the schedule's predicted wall time."""
        return float(self.round_time_s.sum())


@dataclass(frozen=True, kw_only=True)
class FedCompressSolution(Solution):
    """Per round and device: kept fractions both directions and batch size, plus how to encode.

    `keep_down`, `keep_up` are float (R, N) and `batch` int (R, N), all 0 where the device is not
    selected. `down_codec` is "caesar" (top-K exact + signs, device-side recovery when `recovery`)
    or "dense"; `up_codec` is "topk", "quant" (stochastic, `quant_bits` bits) or "dense";
    `error_feedback` keeps a per-client residual of the upload codec. `deviation_proxy` says that a
    budgeted plan used the staleness proxy instead of measured deviations.
    """

    keep_down: np.ndarray
    keep_up: np.ndarray
    batch: np.ndarray
    down_codec: str = "caesar"
    up_codec: str = "topk"
    recovery: bool = True
    error_feedback: bool = False
    quant_bits: int = 0
    deviation_proxy: bool = False


@dataclass(frozen=True)
class DownloadBudgetProblem:
    """One round of budgeted download (docs/fed-compress.md, "Algorithm" step 1): pick θ_i from `thetas` for every selected device.

    `deviation[i, c]` = Dev_i(thetas[c]) = ‖w − ŵ_i‖²/‖w‖² (measured by the server, or the proxy);
    `theta_bytes[c]` the download bytes at thetas[c]; `forced_full[i]`: no previous model, θ = 0.
    """

    thetas: np.ndarray        # ascending, thetas[0] = 0
    theta_bytes: np.ndarray   # (G,) B
    deviation: np.ndarray     # (n, G)
    forced_full: np.ndarray   # bool (n,)
    budget_bytes: float

    def bytes_per_theta(self) -> np.ndarray:
        """Download bytes for each grid ratio (B)."""
        return np.asarray(self.theta_bytes, dtype=float)

    def min_bytes(self) -> float:
        """Bytes with every device at its most compressed allowed ratio (B)."""
        b = self.bytes_per_theta()
        return float(np.where(self.forced_full, b[0], b[-1]).sum())

    def solution(self, pick: np.ndarray, status: Status, wall_time_s: float,
                 bound: float | None = None) -> "BudgetSolution":
        """The solution record for grid positions `pick`."""
        n = len(pick)
        dev = float(np.asarray(self.deviation, dtype=float)[np.arange(n), pick].sum())
        used = float(self.bytes_per_theta()[pick].sum())
        return BudgetSolution(status=status, objective=dev, bound=bound, wall_time_s=wall_time_s,
                              thetas=np.asarray(self.thetas)[pick], positions=np.asarray(pick), bytes_used=used)


@dataclass(frozen=True, kw_only=True)
class BudgetSolution(Solution):
    """θ per device (and its grid position) for one budgeted round; objective = Σ Dev_i."""

    thetas: np.ndarray
    positions: np.ndarray
    bytes_used: float
