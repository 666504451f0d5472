"""Small synthetic dfgl problems for solver tests (no graph generation, no torch)."""
from __future__ import annotations

import numpy as np

from solvers.dfgl.problem import DfglProblem, SurrogateParams


def small_problem(m: int = 4, rounds: int = 6, seed: int = 0, degree: int = 1) -> DfglProblem:
    """m workers with skewed halos and heterogeneous links (a slow pair), links degrading mid-run."""
    rng = np.random.default_rng(seed)
    nodes = rng.integers(80, 200, m).astype(float)
    cross = rng.integers(5, 60, (m, m)).astype(float)
    cross = np.triu(cross, 1) + np.triu(cross, 1).T
    b = rng.uniform(0.5e6, 5e6, (m, m))
    b = np.sqrt(b * b.T)
    np.fill_diagonal(b, 0.0)
    bw = np.repeat(b[None], rounds, axis=0)
    bw[rounds // 2:, 0, 1] *= 0.1
    bw[rounds // 2:, 1, 0] *= 0.1
    lat = np.full((rounds, m, m), 0.005)
    return DfglProblem(worker_ids=tuple(f"w{i}" for i in range(m)), nodes_train=nodes,
                       local_edges=nodes * 4.0, cross_edges=cross, mean_degree=np.full(m, 5.0),
                       kappa_s=np.full(m, 2e-6), bandwidth_Bps=bw, latency_s=lat, model_bytes=4 * 20_000.0,
                       embedding_bytes=4 * 64.0, degree=degree, r_min=0.1, c_max=0.3, rho=10.0,
                       surrogate=SurrogateParams(drift_per_round=0.05))
