"""Check every constraint of a fed-compress solution without calling a solver."""
from __future__ import annotations

import math

import numpy as np

from solvers.fed_compress.cost import evaluate
from solvers.fed_compress.problem import FedCompressProblem, FedCompressSolution

REL_TOL = 1e-9
DOWN_CODECS = ("caesar", "dense")
UP_CODECS = ("topk", "quant", "dense")


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=REL_TOL, atol=1e-12))


def validate(problem: FedCompressProblem, sol: FedCompressSolution) -> list[str]:
    """Violated constraints, one line each (empty when the solution is valid).

    Always: array shapes; kept fractions in (0, 1] for selected devices and 0 elsewhere; batches on the
    grid, within each device's memory, 0 where not selected; known codecs; metrics and objective equal
    to a fresh evaluation by the cost model. When the solution claims feasibility and the problem has a
    downlink budget: every round's download bytes within it.
    """
    out: list[str] = []
    R, N = problem.num_rounds, problem.num_clients
    ids = problem.client_ids
    for name in ("keep_down", "keep_up", "batch"):
        arr = np.asarray(getattr(sol, name))
        if arr.shape != (R, N):
            out.append(f"{name} has shape {arr.shape}, expected ({R}, {N})")
    if out:
        return out
    if sol.down_codec not in DOWN_CODECS:
        out.append(f"unknown download codec {sol.down_codec!r}")
    if sol.up_codec not in UP_CODECS:
        out.append(f"unknown upload codec {sol.up_codec!r}")
    if sol.up_codec == "quant" and not 1 <= sol.quant_bits <= 16:
        out.append(f"quantised upload needs 1..16 bits, got {sol.quant_bits}")
    mask = problem.selected_mask()
    kd, ku, batch = np.asarray(sol.keep_down, float), np.asarray(sol.keep_up, float), np.asarray(sol.batch)
    for name, keep in (("download", kd), ("upload", ku)):
        bad = np.argwhere(mask & ~((keep > 0) & (keep <= 1.0 + 1e-12)))
        for r, i in bad[:5]:
            out.append(f"round {r + 1}, {ids[i]}: {name} ratio {keep[r, i]!r} outside (0, 1]")
        extra = np.argwhere(~mask & (keep != 0))
        for r, i in extra[:5]:
            out.append(f"round {r + 1}, {ids[i]}: {name} ratio set for a device that is not selected")
    grid = set(int(g) for g in problem.batch_grid)
    cap = problem.batch_cap()
    for r, i in np.argwhere(mask):
        b = int(batch[r, i])
        if b not in grid:
            out.append(f"round {r + 1}, {ids[i]}: batch {b} is not on the batch grid")
        elif b > cap[i] and sol.feasible:
            need = problem.train_fixed_bytes + problem.train_bytes_per_sample * b
            out.append(f"round {r + 1}, {ids[i]}: batch {b} needs {need:.0f} B, more than its "
                       f"{float(problem.memory_bytes[i]):.0f} B of memory")
    if np.any(~mask & (batch != 0)):
        out.append("batch set for a device that is not selected")
    if out:
        return out
    m = evaluate(problem, kd, ku, batch, up_codec=sol.up_codec, quant_bits=sol.quant_bits)
    got = sol.metrics
    for field in ("bytes_down", "bytes_up", "time_s", "round_time_s", "traffic_bytes", "samples_per_s"):
        if not _close(np.asarray(getattr(got, field)), np.asarray(getattr(m, field))):
            out.append(f"metrics.{field} differs from the cost model's evaluation")
    if not math.isclose(sol.objective, m.total_traffic_bytes, rel_tol=REL_TOL):
        out.append(f"objective {sol.objective!r} differs from the total traffic {m.total_traffic_bytes!r}")
    if sol.feasible and problem.down_budget_bytes is not None:
        per_round = m.bytes_down.sum(axis=1)
        for r in np.flatnonzero(per_round > problem.down_budget_bytes * (1 + REL_TOL)):
            out.append(f"round {r + 1}: download {per_round[r]:.0f} B exceeds the budget {problem.down_budget_bytes:.0f} B")
    return out
