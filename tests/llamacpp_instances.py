"""Random llama.cpp placement problems for solver tests (numpy only)."""
from __future__ import annotations

import numpy as np

from solvers.moe_offload.llamacpp.problem import LlamaCppProblem

GROUPS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp")


def random_problem(rng: np.random.Generator, layers: int = 4, shared: bool = False, dense_first: int = 0,
                   budget_share: float | None = None) -> LlamaCppProblem:
    """L blocks with routed (and optionally shared) expert groups; sizes in MB-ish integers, times in ms-ish."""
    G = 6 if shared else 3
    present = np.zeros((layers, G), dtype=bool)
    present[dense_first:, :] = True
    size = rng.integers(50, 400, size=(layers, G)).astype(np.int64) * 1_000_003
    size[~present] = 0
    gpu_s = size * rng.uniform(0.5, 1.5, size=(layers, G)) * 1e-12
    host_s = gpu_s * rng.uniform(3, 20, size=(layers, G))
    rest = rng.integers(20, 80, size=layers).astype(np.int64) * 1_000_003
    rest_gpu = rest * 1e-12
    rest_host = rest_gpu * rng.uniform(5, 15, size=layers)
    total = int(rest.sum() + size.sum())
    share = rng.uniform(0.2, 0.9) if budget_share is None else budget_share
    return LlamaCppProblem(
        layer_names=tuple(f"blk.{i}" for i in range(layers)), group_names=GROUPS[:G], group_present=present,
        group_bytes=size, group_gpu_s=gpu_s, group_host_s=host_s, rest_bytes=rest, rest_gpu_s=rest_gpu,
        rest_host_s=rest_host, switch_s=float(rng.uniform(0, 2e-5)),
        group_segments=((0, 1, 2), (3, 4, 5)) if shared else ((0, 1, 2),),
        output_bytes=int(rng.integers(10, 100)) * 1_000_003, output_gpu_s=1e-4, output_host_s=float(rng.uniform(2e-4, 2e-3)),
        budget_bytes=int(share * total))
