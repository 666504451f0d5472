"""Check every constraint of a moe-offload solution without calling a solver."""
from __future__ import annotations

import numpy as np

from solvers.moe_offload.problem import MoeOffloadProblem, MoeOffloadSolution

REL_TOL = 1e-9


def validate(problem: MoeOffloadProblem, sol: MoeOffloadSolution) -> list[str]:
    """Violated constraints, one line each (empty when the solution is valid)."""
    out: list[str] = []
    L, N = problem.num_layers, problem.num_experts
    arrays = [("budget_units", sol.budget_units), ("thetas", sol.thetas), ("capacities", sol.capacities),
              ("prefetch", sol.prefetch)]
    if sol.split_fraction is not None:
        arrays.append(("split_fraction", sol.split_fraction))
    for name, arr in arrays:
        if len(arr) != L:
            out.append(f"{name} has {len(arr)} entries for {L} layers")
    if out:
        return out
    used = sol.capacities * sol.thetas * problem.expert_bytes
    total = float(used.sum())
    if total > problem.budget_bytes * (1 + REL_TOL) + 1.0:
        out.append(f"cached tops use {total:.0f} B, above the budget {problem.budget_bytes:.0f} B")
    # (layer budgets are in grid units rounded up for whole-expert baselines; the binding constraint is
    # the bytes the cached tops take, checked above)
    grid = problem.thetas()
    for i in range(L):
        if not np.isclose(grid, sol.thetas[i], atol=1e-9).any():
            out.append(f"layer {problem.layer_names[i]}: theta {sol.thetas[i]} is not on the grid")
        if not 0 <= sol.capacities[i] <= N:
            out.append(f"layer {problem.layer_names[i]}: capacity {sol.capacities[i]} outside 0..{N}")
        if sol.thetas[i] == 0 and sol.capacities[i] != 0:
            out.append(f"layer {problem.layer_names[i]}: theta 0 with {sol.capacities[i]} cached tops")
        if sol.cpu_layers is not None and sol.cpu_layers[i] and sol.capacities[i] > 0 and sol.thetas[i] != 1.0:
            out.append(f"layer {problem.layer_names[i]}: a CPU-miss layer keeps whole experts (theta 1), not {sol.thetas[i]}")
        if sol.split_layers()[i]:
            a = float(sol.split_fraction[i])
            if not np.isclose(grid, a, atol=1e-9).any():
                out.append(f"layer {problem.layer_names[i]}: split fraction {a} is not on the grid")
            if sol.capacities[i] > 0 and sol.thetas[i] != 1.0:
                out.append(f"layer {problem.layer_names[i]}: a split layer keeps whole experts (theta 1), not {sol.thetas[i]}")
            if problem.host_expert_compute_s is None:
                out.append(f"layer {problem.layer_names[i]}: split without a host compute time")
        if used[i] > sol.budget_units[i] * problem.budget_unit_bytes * (1 + REL_TOL) + 1.0:
            out.append(f"layer {problem.layer_names[i]}: {used[i]:.0f} B cached, above its budget "
                       f"{sol.budget_units[i] * problem.budget_unit_bytes:.0f} B")
    if not np.isfinite(sol.objective) or sol.objective <= 0:
        out.append(f"objective {sol.objective} is not a positive time")
    return out
