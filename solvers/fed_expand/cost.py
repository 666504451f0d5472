"""The fed-expand cost model (docs/fed-expand.md, "Cost model"), apart from any search.

For client c training the set S (lowest block at expanded index e = e_{min S}, E blocks in all):

    t_c(S)   = τ·[F + Bh + (E − e)·Bb + |S|·Bt]·slow_c                              compute per round (s)
    bytes(S) = 2·|S|·W_block                                                 down + up per round (B)
    T_c(S)   = t_c(S) + |S|·W_block/down_c + |S|·W_block/up_c + lat_c        round time (s)
    M(S)     = W_frozen + P·W_block + |S|·(W_block·k_opt + A_train) + A_head + (E − e)·A_block + M_ws

F, Bh, Bb, Bt, A_head, A_block, A_train (M_ws = A_block, one block's transient) are measured on this CPU (profilers/block_expansion.py: saved-tensor hooks
and CPU seconds of real steps of the expanded model). Feasibility for a fixed lowest block is monotone in
|S|, so `max_count[c, j]` (the most blocks client c can train with block j lowest) says everything the
solvers need.
"""
from __future__ import annotations

import numpy as np

from solvers.fed_expand.problem import FedExpandMetrics, FedExpandProblem


def round_time_s(p: FedExpandProblem, c: int, lowest: int, count: int) -> float:
    """T_c for `count` blocks with added block `lowest` the lowest (s); 0 when count is 0."""
    if count <= 0:
        return 0.0
    e = int(p.expanded_index()[lowest])
    step = p.forward_s + p.backward_fixed_s + (p.depth - e) * p.backward_block_s + count * p.backward_train_s
    moved = count * p.block_bytes
    return float(p.local_steps * step * p.slowdown[c] + moved / p.downlink_bytes_per_s[c]
                 + moved / p.uplink_bytes_per_s[c] + p.latency_s[c])


def memory_bytes(p: FedExpandProblem, lowest: int, count: int) -> float:
    """M for `count` blocks with added block `lowest` the lowest (B); 0 when count is 0."""
    if count <= 0:
        return 0.0
    e = int(p.expanded_index()[lowest])
    return float(p.frozen_bytes + p.num_added * p.block_bytes + count * (p.block_bytes * p.optimizer_factor + p.act_train_bytes)
                 + p.act_fixed_bytes + (p.depth - e) * p.act_block_bytes + p.workspace_bytes)


def fits(p: FedExpandProblem, c: int, lowest: int, count: int) -> bool:
    """Whether client c can train `count` blocks with `lowest` the lowest, within memory and deadline."""
    return (memory_bytes(p, lowest, count) <= p.memory_budget_bytes[c] * (1 + 1e-12)
            and round_time_s(p, c, lowest, count) <= p.deadline_s[c] * (1 + 1e-12))


def max_count(p: FedExpandProblem) -> np.ndarray:
    """(n, P) the most blocks client c can train with added block j the lowest (0 = none fits)."""
    n, P = p.num_clients, p.num_added
    out = np.zeros((n, P), dtype=int)
    for c in range(n):
        for j in range(P):
            k = 0
            for cnt in range(1, P - j + 1):
                if fits(p, c, j, cnt):
                    k = cnt
                else:
                    break
            out[c, j] = k
    return out


def capacity(p: FedExpandProblem) -> np.ndarray:
    """(n,) cap_c: the most added blocks client c can train in a round (any lowest position)."""
    return max_count(p).max(axis=1) if p.num_added else np.zeros(p.num_clients, dtype=int)


def evaluate(p: FedExpandProblem, assign: np.ndarray) -> FedExpandMetrics:
    """Predictions for an assignment (n, P) bool."""
    assign = np.asarray(assign, dtype=bool)
    n = p.num_clients
    T, M, B, low = np.zeros(n), np.zeros(n), np.zeros(n), np.full(n, -1)
    ok = np.ones(n, dtype=bool)
    e = p.expanded_index()
    for c in range(n):
        js = np.flatnonzero(assign[c])
        if not len(js):
            continue
        lo, cnt = int(js[0]), len(js)
        T[c], M[c] = round_time_s(p, c, lo, cnt), memory_bytes(p, lo, cnt)
        B[c] = 2 * cnt * p.block_bytes
        low[c] = int(e[lo])
        ok[c] = fits(p, c, lo, cnt)
    uncovered = tuple(int(j) for j in np.flatnonzero(~assign.any(axis=0))) if n else tuple(range(p.num_added))
    total = float(np.sum(p.samples)) or 1.0
    util = float(np.sum(p.value() * assign)) / total
    return FedExpandMetrics(round_time_s=T, memory_bytes=M, bytes_per_round=B, lowest_trained=low,
                            within_budgets=ok, uncovered=uncovered, utility=util)
