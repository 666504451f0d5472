"""Exact placement solver for llama.cpp's space: a Pareto-frontier dynamic programme over blocks.

The problem is a multiple-choice knapsack with a prefix rule. Every GPU block picks one subset of its
offloadable groups (cost: its time; weight: its exact VRAM bytes); the first `c` blocks may instead sit
wholly in host memory (`-ngl`), and the output head goes to the GPU only when no block is in host
memory (llama.cpp offloads the output layer only when -ngl exceeds the block count).

Going backwards over the blocks, F_l holds every non-dominated (VRAM, time) pair of the suffix of GPU
blocks l..L-1 with VRAM within the budget: F_l = prune(options_l (+) F_{l+1}), where prune keeps, in
order of increasing VRAM, only points that are strictly faster than every cheaper one. No budget grid
is involved, so the answer is optimal for the cost model with exact byte counts:
    min over c and the output's side of  host_prefix_time(c) + output time + min{t in F_c : v <= budget - output bytes}.
Ties go to fewer host blocks, the output on the GPU, then less VRAM. Pointers kept with every frontier
point rebuild the decisions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.common import InfeasibleError, Status, Stopwatch, TraceEvent
from solvers.moe_offload.llamacpp.cost import evaluate, host_layer_time_s, layer_options
from solvers.moe_offload.llamacpp.problem import LlamaCppProblem, LlamaCppSolution

GIB = float(1 << 30)


@dataclass(frozen=True)
class Frontier:
    """Non-dominated (VRAM, time) points of a suffix of blocks, VRAM ascending and time strictly descending;
    `choice` is the option of the first block of the suffix and `nxt` the point of the next frontier."""

    vram: np.ndarray
    time: np.ndarray
    choice: np.ndarray
    nxt: np.ndarray


def prune(vram: np.ndarray, time: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the Pareto points among (vram, time) with vram <= cap, ordered by vram."""
    keep = np.flatnonzero(vram <= cap)
    if keep.size == 0:
        return keep
    order = keep[np.lexsort((time[keep], vram[keep]))]
    t = time[order]
    best_before = np.minimum.accumulate(np.concatenate(([np.inf], t[:-1])))
    return order[t < best_before]


def frontiers(problem: LlamaCppProblem) -> tuple[list[Frontier], list[np.ndarray]]:
    """F_0 .. F_L (F_L is the empty suffix) and every block's option masks."""
    L = problem.num_layers
    cap = int(problem.budget_bytes)
    out: list[Frontier] = [None] * (L + 1)  # type: ignore[list-item]
    out[L] = Frontier(np.zeros(1, dtype=np.int64), np.zeros(1), np.full(1, -1), np.full(1, -1))
    masks_all: list[np.ndarray] = [None] * L  # type: ignore[list-item]
    for l in range(L - 1, -1, -1):
        masks, ov, ot = layer_options(problem, l)
        masks_all[l] = masks
        nxt = out[l + 1]
        v = (ov[:, None] + nxt.vram[None, :]).ravel()
        t = (ot[:, None] + nxt.time[None, :]).ravel()
        idx = prune(v, t, cap)
        k, j = np.divmod(idx, nxt.vram.size)
        out[l] = Frontier(v[idx], t[idx], k, j)
    return out, masks_all


def solve(problem: LlamaCppProblem) -> LlamaCppSolution:
    """The fastest placement within the VRAM budget (raises InfeasibleError when none fits)."""
    watch = Stopwatch()
    L, G = problem.num_layers, problem.num_groups
    fr, masks = frontiers(problem)
    trace = [TraceEvent("frontier", l, {"points": int(fr[l].vram.size)}) for l in range(L)]
    best: tuple[float, int, int, int, int] | None = None   # (time, host blocks, output side, vram, point)
    prefix = 0.0
    host_options = range(L + 1) if problem.allow_host_layers else range(1)
    for c in host_options:
        if c > 0:
            prefix += host_layer_time_s(problem, c - 1)
        for out_gpu in ((1, 0) if c == 0 else (0,)):
            left = problem.budget_bytes - (problem.output_bytes if out_gpu else 0)
            f = fr[c]
            pos = int(np.searchsorted(f.vram, left, side="right")) - 1
            if pos < 0:
                continue
            boundary = problem.switch_s if 0 < c < L else 0.0
            total = prefix + boundary + (problem.output_gpu_s if out_gpu else problem.output_host_s) + float(f.time[pos])
            key = (total, c, -out_gpu, int(f.vram[pos]), pos)
            if best is None or key[0] < best[0] * (1 - 1e-12) or (abs(key[0] - best[0]) <= best[0] * 1e-12 and key[1:4] < best[1:4]):
                best = key
    if best is None:
        # the lightest placement keeps every group in host memory: only the rest of the GPU blocks
        need = min(int(problem.rest_bytes[c:].sum()) for c in host_options)
        raise InfeasibleError(
            f"no llama.cpp placement fits: even the smallest needs {need / GIB:.2f} GiB for weights and KV cache on the GPU, "
            f"above the {problem.budget_bytes / GIB:.2f} GiB left after compute buffers and the margin",
            f"use a device with at least {(need - problem.budget_bytes) / GIB + 0.05:.1f} GiB more memory, a smaller --quant, "
            "or a shorter --context")
    _, c, neg_out, _, pos = best
    gpu = np.zeros((L, G), dtype=bool)
    for l in range(c, L):
        f = fr[l]
        gpu[l] = masks[l][int(f.choice[pos])]
        pos = int(f.nxt[pos])
    m = evaluate(problem, c, gpu, bool(-neg_out))
    return LlamaCppSolution(status=Status.OPTIMAL, objective=m.tpot_s, metrics=m, wall_time_s=watch.elapsed(),
                            trace=tuple(trace), host_layers=c, gpu_groups=gpu, output_on_gpu=bool(-neg_out),
                            params={"method": "exact Pareto-frontier DP over blocks (multiple-choice knapsack, exact bytes)",
                                    "max_frontier_points": max(int(f.vram.size) for f in fr)})
