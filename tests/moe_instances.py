"""Random moe-offload problem instances for solver tests (hand-built hit curves, no torch)."""
from __future__ import annotations

import numpy as np

from solvers.moe_offload.problem import MoeOffloadProblem


def s_curve(n: int, midpoint: float, steepness: float) -> np.ndarray:
    """S-shaped hit curve h(C), C = 0..n: convex below the midpoint, concave above, h(0) = 0."""
    c = np.arange(n + 1, dtype=float)
    raw = 1.0 / (1.0 + np.exp(-steepness * (c - midpoint)))
    raw = (raw - raw[0]) / (raw[-1] - raw[0])
    return raw


def concave_curve(n: int, power: float) -> np.ndarray:
    """Concave curve h(C) = (C/n)^power with power < 1."""
    return (np.arange(n + 1) / n) ** power


def random_problem(rng: np.random.Generator, layers: int = 3, experts: int = 8, top_k: int = 2,
                   budget_share: float | None = None, units_per_expert: int = 4, f: int = 64, g: int = 8,
                   compute_ratio: float | None = None) -> MoeOffloadProblem:
    """A small random instance: mixed S-shaped and concave curves, random recall and timings."""
    curves = []
    for _ in range(layers):
        if rng.random() < 0.5:
            curves.append(s_curve(experts, rng.uniform(1, experts / 2), rng.uniform(0.5, 3)))
        else:
            curves.append(concave_curve(experts, rng.uniform(0.3, 0.9)))
    h = np.array(curves) * rng.uniform(0.8, 1.0, size=(layers, 1))
    u_e = 1e8
    bw = 1e10
    tau = u_e / bw
    ratio = compute_ratio if compute_ratio is not None else rng.choice([0.02, 0.2, 1.0, 3.0])
    t_x = tau * ratio
    share = budget_share if budget_share is not None else rng.uniform(0.05, 0.9)
    budget = share * layers * experts * u_e
    return MoeOffloadProblem(
        layer_names=tuple(f"layer{i}" for i in range(layers)),
        num_experts=experts, top_k=top_k, k_prefetch=top_k, expert_bytes=u_e, intermediate_size=f,
        theta_granularity=g, bandwidth_bytes_per_s=bw, expert_compute_s=t_x,
        attention_compute_s=rng.uniform(0.1, 2.0, size=layers) * tau, other_compute_s=0.1 * tau,
        hit_curves={"lcp": h, "lru": h * 0.9, "lfu": h * 0.95, "belady": np.minimum(1.0, h * 1.1)},
        recall=np.concatenate([[0.0], rng.uniform(0.3, 0.95, size=layers - 1)]),
        distinct_experts=np.full(layers, float(top_k)), budget_bytes=budget,
        budget_unit_bytes=u_e / units_per_expert)
