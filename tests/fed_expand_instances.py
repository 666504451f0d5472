"""Small fed-expand problems for solver tests (pure numpy)."""
from __future__ import annotations

import numpy as np

from solvers.fed_expand.clustering import cluster_signatures, home_subsets
from solvers.fed_expand.problem import FedExpandProblem


def random_problem(seed: int, n: int = 5, L: int = 8, P: int = 3, deadline: float = np.inf) -> FedExpandProblem:
    """n clients with random memory, speed, data; P blocks interleaved over L (SmolLM2:8L-like constants)."""
    rng = np.random.default_rng(seed)
    sig = rng.dirichlet([0.3] * 4, size=n)
    samples = rng.integers(10, 300, n).astype(float)
    cluster = cluster_signatures(sig, P)
    after = tuple(int(round((k + 1) * L / P)) - 1 for k in range(P))
    return FedExpandProblem(
        client_ids=tuple(f"c{i}" for i in range(n)), num_base_blocks=L, added_after=after, samples=samples,
        home=home_subsets(cluster, samples, P), cluster=cluster,
        memory_budget_bytes=rng.uniform(3.3e8, 6.5e8, n), deadline_s=np.full(n, deadline),
        slowdown=rng.uniform(1.0, 6.0, n), uplink_bytes_per_s=np.full(n, 2.5e6), downlink_bytes_per_s=np.full(n, 1e7),
        latency_s=np.full(n, 0.02), local_steps=10, frozen_bytes=2.26e8, block_bytes=1.42e7, optimizer_factor=3.0,
        act_fixed_bytes=1.2e7, act_block_bytes=9.4e6, act_train_bytes=4.9e6, workspace_bytes=9.4e6, forward_s=0.3,
        backward_fixed_s=0.1, backward_block_s=0.043, backward_train_s=0.019)
