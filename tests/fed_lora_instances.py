"""Random fed-lora problems for the solver tests and the purity check (no torch)."""
from __future__ import annotations

import numpy as np

from solvers.fed_lora.problem import FedLoraProblem


def memory_table(L: int, weights: float, per_block: float, act: float, act_q: float, head: float = 0.0) -> np.ndarray:
    """M(d, q) = weights + d·per_block + head + (d − q)·act + q·act_q (+inf for q > d or d = 0)."""
    t = np.full((L + 1, L + 1), np.inf)
    for d in range(1, L + 1):
        for q in range(d + 1):
            t[d, q] = weights + d * per_block + head + (d - q) * act + q * act_q
    return t


def random_problem(rng: np.random.Generator, n: int = 5, L: int = 4, coverage: float = 0.0,
                   cov_blocks: int = 0, tight: bool = True) -> FedLoraProblem:
    """Heterogeneous devices: speeds over ~5x, memory budgets that make some depths need quantisation."""
    act = float(rng.uniform(50, 200))
    table = memory_table(L, 100.0, 2.0, act, act * float(rng.uniform(0.25, 0.5)))
    finite = table[np.isfinite(table)]
    lo, hi = finite.min(), finite.max()
    budget = rng.uniform(lo * 0.95 if tight else lo, hi * 1.2, n) / 0.9
    speed = rng.uniform(1.0, 5.0, n)
    fwd = rng.uniform(0.5, 1.5) / speed
    w = rng.uniform(0.2, 1.0, n)
    return FedLoraProblem(
        device_ids=tuple(f"dev-{i}" for i in range(n)), num_blocks=L, memory_table_bytes=table,
        memory_budget_bytes=budget, forward_s=fwd, backward_first_s=fwd * rng.uniform(0.3, 0.6),
        backward_mid_s=fwd / L * rng.uniform(0.8, 1.6), quant_first_s=fwd * 0.02, quant_mid_s=fwd * 0.03,
        local_steps=np.full(n, 10.0), uplink_bytes_per_s=rng.uniform(1e2, 1e3, n),
        downlink_bytes_per_s=rng.uniform(5e2, 5e3, n), latency_s=rng.uniform(0.0, 0.5, n), weights=w / w.sum(),
        lora_block_bytes=float(rng.uniform(10, 200)), head_bytes=5.0, gamma=0.1,
        coverage_kappa=coverage, coverage_blocks=cov_blocks)
