"""Random fed-compress problems for solver tests (numpy only, so the torch-blocked purity test can use them)."""
from __future__ import annotations

import numpy as np

from solvers.fed_compress.problem import FedCompressProblem, sample_participation

# digits-cnn's tensors (conv1 w/b, conv2 w/b, fc1 w/b, fc2 w/b)
DIGITS_NUMELS = (144, 16, 4608, 32, 32768, 64, 640, 10)


def random_problem(rng: np.random.Generator, n: int = 20, rounds: int = 8, fraction: float = 0.3,
                   classes: int = 10, numels: tuple[int, ...] = DIGITS_NUMELS, budget: float | None = None,
                   batch_grid: tuple[int, ...] = tuple(range(8, 65))) -> FedCompressProblem:
    """A heterogeneous population: Dirichlet(0.3) label counts, 10x compute spread, 20x link spread."""
    counts = np.zeros((n, classes), dtype=np.int64)
    for i in range(n):
        p = rng.dirichlet(np.full(classes, 0.3))
        counts[i] = rng.multinomial(int(rng.integers(10, 200)), p)
        if counts[i].sum() == 0:
            counts[i, 0] = 1
    speed = rng.uniform(0.1, 1.0, n)
    link = np.exp(rng.uniform(np.log(2e5), np.log(4e6), n))      # 1.6 - 32 Mbit/s in bytes/s
    return FedCompressProblem(
        client_ids=tuple(f"dev-{i:03d}" for i in range(n)),
        label_counts=counts,
        tensor_numels=numels,
        iter_fixed_s=0.002 / speed,
        iter_per_sample_s=0.0004 / speed,
        downlink_bytes_per_s=link * 5,
        uplink_bytes_per_s=link,
        latency_s=rng.uniform(0.01, 0.1, n),
        memory_bytes=rng.uniform(1.0, 4.0, n) * 2**20,
        train_fixed_bytes=0.5 * 2**20,
        train_bytes_per_sample=40_000.0,
        selected=sample_participation(n, rounds, fraction, int(rng.integers(1 << 30))),
        batch_grid=batch_grid,
        local_iters=20,
        down_budget_bytes=budget,
    )
