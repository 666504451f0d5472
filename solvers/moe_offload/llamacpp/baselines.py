"""The placements people use with llama.cpp today, each on the same problem and cost model.

| name            | rule (parameters shown in the plan)                                                        |
|-----------------|---------------------------------------------------------------------------------------------|
| cpu_moe         | `-ngl 99 --cpu-moe`: every routed-expert tensor in host memory, everything else on the GPU   |
| n_cpu_moe       | `-ngl 99 --n-cpu-moe N`: routed experts of blocks 0..N-1 in host memory (llama.cpp's         |
|                 | `llm_ffn_exps_block_regex(i)` for i < N); N is the fastest that fits, as a user sweeping N    |
|                 | (or llama.cpp's `--fit`) would find it                                                       |
| layer_fill      | `-ngl N` without overrides, N as large as fits: whole blocks (weights + KV cache) on the GPU, |
|                 | the greedy rule of front ends that offer "GPU layers"; llama.cpp offloads the last N blocks  |
|                 | and the output head only when N exceeds the block count                                      |

Every baseline lies inside the planner's space, so the exact solver is never slower than any of them.
A baseline whose rule cannot fit the budget returns status INFEASIBLE with its VRAM in the metrics.
"""
from __future__ import annotations

import numpy as np

from solvers.common import Baseline, Status, Stopwatch, TraceEvent
from solvers.moe_offload.llamacpp.cost import evaluate
from solvers.moe_offload.llamacpp.problem import LlamaCppProblem, LlamaCppSolution

EXPERT_GROUPS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")


def _expert_columns(problem: LlamaCppProblem) -> np.ndarray:
    return np.array([g in EXPERT_GROUPS for g in problem.group_names])


def _placement(problem: LlamaCppProblem, host_layers: int, gpu: np.ndarray, out_gpu: bool, params: dict,
               watch: Stopwatch, trace: tuple[TraceEvent, ...] = ()) -> LlamaCppSolution:
    gpu = gpu & problem.group_present
    gpu[:host_layers] = False
    m = evaluate(problem, host_layers, gpu, out_gpu)
    status = Status.FEASIBLE if m.vram_bytes <= problem.budget_bytes else Status.INFEASIBLE
    return LlamaCppSolution(status=status, objective=m.tpot_s, metrics=m, wall_time_s=watch.elapsed(), trace=trace,
                            host_layers=host_layers, gpu_groups=gpu, output_on_gpu=out_gpu, params=params)


def cpu_moe(problem: LlamaCppProblem) -> LlamaCppSolution:
    """`-ngl 99 --cpu-moe`."""
    w = Stopwatch()
    gpu = np.tile(~_expert_columns(problem), (problem.num_layers, 1))
    return _placement(problem, 0, gpu, True, {"ngl": 99, "cpu_moe": True}, w)


def n_cpu_moe_placement(problem: LlamaCppProblem, n: int) -> np.ndarray:
    """GPU groups under `--n-cpu-moe n`: routed experts of blocks 0..n-1 in host memory."""
    gpu = np.ones((problem.num_layers, problem.num_groups), dtype=bool)
    gpu[:n, _expert_columns(problem)] = False
    return gpu


def n_cpu_moe(problem: LlamaCppProblem) -> LlamaCppSolution:
    """`-ngl 99 --n-cpu-moe N` with the fastest N that fits (every N from 0 to the block count is tried)."""
    w = Stopwatch()
    sweep = []
    best: LlamaCppSolution | None = None
    for n in range(problem.num_layers + 1):
        s = _placement(problem, 0, n_cpu_moe_placement(problem, n), True, {"ngl": 99, "n_cpu_moe": n}, w)
        sweep.append(TraceEvent("n_cpu_moe", n, {"tpot_s": s.objective, "vram_bytes": s.metrics.vram_bytes,
                                                 "fits": s.feasible}))
        if s.feasible and (best is None or s.objective < best.objective * (1 - 1e-12)):
            best = s
    if best is None:  # nothing fits: report the lightest rule (every expert in host memory)
        best = _placement(problem, 0, n_cpu_moe_placement(problem, problem.num_layers), True,
                          {"ngl": 99, "n_cpu_moe": problem.num_layers}, w)
    return LlamaCppSolution(status=best.status, objective=best.objective, metrics=best.metrics, wall_time_s=w.elapsed(),
                            trace=tuple(sweep), host_layers=0, gpu_groups=best.gpu_groups, output_on_gpu=True,
                            params=dict(best.params))


def layer_fill(problem: LlamaCppProblem) -> LlamaCppSolution:
    """`-ngl N`, N the most whole blocks (the output head counting as one more) that fit."""
    w = Stopwatch()
    L = problem.num_layers
    full = np.ones((L, problem.num_groups), dtype=bool)
    for ngl in range(L + 1, -1, -1):
        host = L - min(ngl, L)
        s = _placement(problem, host, full.copy(), ngl > L, {"ngl": ngl}, w)
        if s.feasible or ngl == 0:
            return s
    raise AssertionError("unreachable")


BASELINES: tuple[Baseline, ...] = (
    Baseline("cpu_moe", "llama.cpp -ngl 99 --cpu-moe: every routed-expert tensor in host memory", cpu_moe, in_space=True),
    Baseline("n_cpu_moe", "llama.cpp -ngl 99 --n-cpu-moe N: routed experts of the first N blocks in host memory, "
             "the fastest N that fits", n_cpu_moe, in_space=True),
    Baseline("layer_fill", "front ends' GPU layers (-ngl N): as many whole blocks as fit on the GPU, the rest on the host",
             layer_fill, in_space=True),
)


def baseline(name: str) -> Baseline:
    """One baseline by name."""
    return next(b for b in BASELINES if b.name == name)
