"""Check every constraint of a fed-lora solution without calling a solver."""
from __future__ import annotations

import math

import numpy as np

from solvers.fed_lora.cost import evaluate, grid
from solvers.fed_lora.problem import FedLoraProblem, FedLoraSolution

REL_TOL = 1e-9


def _close(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= REL_TOL * max(1.0, abs(a), abs(b))


def validate(problem: FedLoraProblem, sol: FedLoraSolution) -> list[str]:
    """Violated constraints, one line each (empty when valid).

    Structure: one (depth, quant) per device; depth 0 (sits out) or d_min ≤ d ≤ L; 0 ≤ q ≤ d (q = 0 when
    sitting out). Budgets (for a solution that claims to be feasible): memory (1 − μ)·M_i, deadline,
    coverage κ of the top D_cov blocks unless reported uncovered; a device with a fitting option that sits
    out only under a baseline's policy (`params["baseline"]`). Metrics and objective equal a fresh evaluation.
    """
    out: list[str] = []
    n, L = problem.num_devices, problem.num_blocks
    ids = problem.device_ids
    d = np.asarray(sol.depth)
    q = np.asarray(sol.quant_blocks)
    if d.shape != (n,) or q.shape != (n,):
        return [f"depth and quant_blocks must have shape ({n},), got {d.shape} and {q.shape}"]
    for i in range(n):
        if d[i] != 0 and not problem.d_min <= d[i] <= L:
            out.append(f"device {ids[i]}: depth {d[i]} outside {problem.d_min}..{L}")
        if not 0 <= q[i] <= max(d[i], 0):
            out.append(f"device {ids[i]}: {q[i]} quantised blocks with depth {d[i]}")
    if out:
        return out
    m = evaluate(problem, d, q)
    if sol.feasible:
        usable = problem.usable_memory_bytes()
        for i in np.flatnonzero((d > 0) & ~m.memory_ok):
            out.append(f"device {ids[i]}: needs {m.peak_memory_bytes[i]:.0f} B, has {usable[i]:.0f} B after the margin")
        for i in np.flatnonzero((d > 0) & (m.device_round_s > problem.deadline_s * (1 + REL_TOL))):
            out.append(f"device {ids[i]}: round time {m.device_round_s[i]:.4g} s > deadline {problem.deadline_s:.4g} s")
        if problem.coverage_kappa > 0:
            for need in range(1, problem.coverage_blocks + 1):
                block = L - need
                if m.coverage[block] < problem.coverage_kappa * (1 - 1e-9) and block not in sol.uncovered_blocks:
                    out.append(f"block {block} trained by {m.coverage[block]:.3f} of the data < coverage {problem.coverage_kappa}")
        if "baseline" not in sol.params:
            fits, _, _, _ = grid(problem)
            for i in np.flatnonzero((d == 0) & fits.reshape(n, -1).any(axis=1)):
                out.append(f"device {ids[i]} sits out although it fits a configuration")
    if not _close(sol.objective, m.progress_rate):
        out.append(f"objective {sol.objective:.9g} differs from the evaluated R {m.progress_rate:.9g}")
    if sol.metrics is not None and not _close(sol.metrics.round_time_s, m.round_time_s):
        out.append(f"metrics round time {sol.metrics.round_time_s:.9g} s differs from {m.round_time_s:.9g} s")
    return out
