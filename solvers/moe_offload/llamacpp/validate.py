"""Check every constraint of a llama.cpp placement without calling a solver."""
from __future__ import annotations

import numpy as np

from solvers.moe_offload.llamacpp.cost import evaluate
from solvers.moe_offload.llamacpp.problem import LlamaCppProblem, LlamaCppSolution


def validate(problem: LlamaCppProblem, sol: LlamaCppSolution) -> list[str]:
    """Violated constraints, one line each (empty when valid). INFEASIBLE baselines are checked for shape only."""
    out: list[str] = []
    L, G = problem.num_layers, problem.num_groups
    if sol.gpu_groups.shape != (L, G):
        return [f"gpu_groups has shape {sol.gpu_groups.shape}, expected {(L, G)}"]
    if not 0 <= sol.host_layers <= L:
        out.append(f"host_layers {sol.host_layers} outside 0..{L}")
    if sol.host_layers and not problem.allow_host_layers:
        out.append("host blocks are not allowed in this problem")
    if sol.output_on_gpu and sol.host_layers > 0:
        out.append("the output head is on the GPU while blocks stay in host memory (llama.cpp offloads it only "
                   "when -ngl exceeds the block count)")
    if (sol.gpu_groups & ~problem.group_present).any():
        out.append("a group the block does not have is placed on the GPU")
    if sol.gpu_groups[: sol.host_layers].any():
        out.append("a host block has a group on the GPU")
    m = evaluate(problem, sol.host_layers, sol.gpu_groups, sol.output_on_gpu)
    if sol.feasible and m.vram_bytes > problem.budget_bytes:
        out.append(f"VRAM {m.vram_bytes} B above the budget {problem.budget_bytes} B")
    if not np.isclose(m.tpot_s, sol.objective, rtol=1e-9):
        out.append(f"objective {sol.objective} differs from the cost model's {m.tpot_s}")
    return out
