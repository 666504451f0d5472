"""The fed-lora cost model (docs/fed-lora.md, "Cost model"), apart from any search.

    M_i(d, q) = memory_table[d, q]                                       peak bytes (same model on every device)
    t_i(d, q) = F_i + B1_i + (d − 1)·Bmid_i + [q ≥ 1]·(c1_i + (q − 1)·cmid_i)      s per local step
    T_i(d, q) = τ_i·t_i(d, q) + P(d)/down_i + P(d)/up_i + lat_i,   P(d) = d·P_block + P_head
    u(d, q)   = d^α − γ·q               (α = 1: the spec's linear proxy; α < 1: concave, fitted from a pilot, §9.9)
    R         = Σ_i w_i·u(d_i, q_i) / max_i T_i(d_i, q_i)            over participating devices

Refinement of the spec's `Σ g_i(l) + q·c_i` [design, measured]: the bottom trainable block saves and
back-propagates less than the others (its input needs no gradient) and carries the head's backward,
so it has its own backward and quantisation terms (`*_first`), as measured by profilers/fine_tuning.
"""
from __future__ import annotations

import numpy as np

from solvers.fed_lora.problem import FedLoraMetrics, FedLoraProblem


def utility(problem: FedLoraProblem, depth: np.ndarray, quant: np.ndarray) -> np.ndarray:
    """u(d, q) = d^α − γ·q (0 for a device that sits out); broadcasts."""
    d = np.asarray(depth, dtype=float)
    return np.where(d > 0, np.maximum(d, 0.0) ** problem.depth_exponent - problem.gamma * np.asarray(quant, dtype=float),
                    0.0)


def step_time_s(problem: FedLoraProblem, depth: np.ndarray, quant: np.ndarray,
                devices: np.ndarray | slice = slice(None)) -> np.ndarray:
    """t_i(d, q) (s) for the given devices; `depth`/`quant` broadcast against them (leading axis = device)."""
    d = np.asarray(depth, dtype=float)
    q = np.asarray(quant, dtype=float)

    def per(a: np.ndarray) -> np.ndarray:
        v = np.asarray(a, dtype=float)[devices]
        return v.reshape(v.shape + (1,) * max(0, d.ndim - v.ndim))

    bwd = np.where(d >= 1, per(problem.backward_first_s) + np.maximum(d - 1, 0) * per(problem.backward_mid_s), 0.0)
    qt = np.where(q >= 1, per(problem.quant_first_s) + np.maximum(q - 1, 0) * per(problem.quant_mid_s), 0.0)
    return per(problem.forward_s) + bwd + qt


def transfer_bytes(problem: FedLoraProblem, depth: np.ndarray) -> np.ndarray:
    """P(d): LoRA parameters of d blocks plus the head, sent each way per round (B)."""
    d = np.asarray(depth, dtype=float)
    return np.where(d > 0, d * problem.lora_block_bytes + problem.head_bytes, 0.0)


def comm_time_s(problem: FedLoraProblem, depth: np.ndarray, devices: np.ndarray | slice = slice(None)) -> np.ndarray:
    """Download + upload + fixed latency per round (s)."""
    d = np.asarray(depth, dtype=float)

    def per(a: np.ndarray) -> np.ndarray:
        v = np.asarray(a, dtype=float)[devices]
        return v.reshape(v.shape + (1,) * max(0, d.ndim - v.ndim))

    p = transfer_bytes(problem, d)
    return p / per(problem.downlink_bytes_per_s) + p / per(problem.uplink_bytes_per_s) + per(problem.latency_s)


def round_time_s(problem: FedLoraProblem, depth: np.ndarray, quant: np.ndarray,
                 devices: np.ndarray | slice = slice(None)) -> np.ndarray:
    """T_i(d, q) (s)."""
    steps = np.asarray(problem.local_steps, dtype=float)[devices]
    d = np.asarray(depth, dtype=float)
    steps = steps.reshape(steps.shape + (1,) * max(0, d.ndim - steps.ndim))
    return steps * step_time_s(problem, depth, quant, devices) + comm_time_s(problem, depth, devices)


def memory_bytes(problem: FedLoraProblem, depth: np.ndarray, quant: np.ndarray) -> np.ndarray:
    """M(d, q) (B); +inf for q > d; NaN for a device that sits out."""
    d = np.asarray(depth, dtype=int)
    q = np.asarray(quant, dtype=int)
    table = np.asarray(problem.memory_table_bytes, dtype=float)
    safe_q = np.clip(q, 0, problem.num_blocks)
    m = table[np.clip(d, 0, problem.num_blocks), safe_q]
    m = np.where(q > d, np.inf, m)
    return np.where(d > 0, m, np.nan)


def grid(problem: FedLoraProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (d, q) option of every device: `fits` (n, L+1, L+1) bool (memory, q ≤ d, d ≥ d_min, deadline),
    `T` (n, L+1, L+1) round times, `u` (L+1, L+1) utilities, `mem` (L+1, L+1) bytes."""
    L = problem.num_blocks
    d = np.arange(L + 1)[:, None] * np.ones((1, L + 1), dtype=int)
    q = np.ones((L + 1, 1), dtype=int) * np.arange(L + 1)[None, :]
    mem = np.where((q <= d) & (d >= 1), np.asarray(problem.memory_table_bytes, dtype=float), np.inf)
    usable = problem.usable_memory_bytes()
    T = round_time_s(problem, d[None, :, :], q[None, :, :])
    fits = (mem[None, :, :] <= usable[:, None, None]) & (d >= problem.d_min)[None, :, :] & (q <= d)[None, :, :]
    fits &= T <= problem.deadline_s
    u = np.where(d >= 1, d.astype(float) ** problem.depth_exponent - problem.gamma * q, 0.0)
    return fits, T, u, mem


def coverage(problem: FedLoraProblem, depth: np.ndarray) -> np.ndarray:
    """(L,) data weight of the devices that train each block (0-based from the input)."""
    L = problem.num_blocks
    d = np.asarray(depth, dtype=int)
    w = np.asarray(problem.weights, dtype=float)
    # Block l (0-based) is trained by devices with d ≥ L − l.
    need = L - np.arange(L)
    return np.array([float(w[d >= k].sum()) for k in need])


def evaluate(problem: FedLoraProblem, depth: np.ndarray, quant: np.ndarray) -> FedLoraMetrics:
    """The metrics of one assignment (depth 0 = sits out)."""
    d = np.asarray(depth, dtype=int)
    q = np.asarray(quant, dtype=int)
    part = d > 0
    T_all = round_time_s(problem, d, q)
    T = np.where(part, T_all, np.nan)
    t_round = float(np.nanmax(T)) if part.any() else 0.0
    u = utility(problem, d, q)
    util = float(np.dot(np.asarray(problem.weights, dtype=float), u))
    rate = util / t_round if t_round > 0 else 0.0
    mem = memory_bytes(problem, d, q)
    ok = ~part | (mem <= problem.usable_memory_bytes() * (1 + 1e-12))
    tp = T[part]
    spread = float((tp.max() - tp.min()) / tp.max()) if tp.size and tp.max() > 0 else 0.0
    return FedLoraMetrics(
        round_time_s=t_round, progress_rate=rate, utility=util, device_round_s=T,
        step_s=np.where(part, step_time_s(problem, d, q), np.nan),
        comm_s=np.where(part, comm_time_s(problem, d), np.nan), wait_s=np.where(part, t_round - T_all, np.nan),
        peak_memory_bytes=mem, memory_ok=ok, coverage=coverage(problem, d), spread=spread,
        participants=int(part.sum()), sitting_out=tuple(int(i) for i in np.flatnonzero(~part)))
