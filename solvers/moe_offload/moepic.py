"""MoEpic: per-layer VRAM budget and expert split ratio (fixed points inside, divide and conquer outside).

    solve(problem, MoEpicConfig()) -> MoeOffloadSolution

Pure: numpy only, no torch, no I/O. Deterministic for identical inputs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from solvers.common import InfeasibleError, Status, Stopwatch, TraceEvent
from solvers.moe_offload.cost import evaluate
from solvers.moe_offload.divide_and_conquer import allocate
from solvers.moe_offload.fixed_point import LayerCurve, inner_fixed_point, inner_scan
from solvers.moe_offload.problem import MoeOffloadProblem, MoeOffloadSolution


@dataclass(frozen=True)
class MoEpicConfig:
    """Solver settings: `inner` is "fixed_point" (the method) or "scan" (exact over the theta grid)."""

    inner: str = "fixed_point"
    policy: str = "lcp"
    perfect_prediction: bool = False   # bound: recall 1 everywhere (used with policy="belady")
    uniform_budget: bool = False       # ablation: B/L per layer instead of divide and conquer
    cpu_misses: bool = False           # extension: a layer may compute its misses on the host CPU
    split_misses: bool = False         # extension: a layer may split its misses between link + device and host
    prefill_weight: float = 0.0        # whole requests: add this times each layer's prefill time to its curve
                                       # (1/(N-1) for end-to-end time per output token; docs §12)


def running_argmin(values: np.ndarray) -> np.ndarray:
    """idx[x] = the last index achieving min(values[:x+1]) (relative tolerance 1e-12).

    Among budgets of equal predicted cost the largest is used: a bigger cache never hurts, and the
    analytic model is flat where it (optimistically) expects prefetching to hide every miss.
    """
    idx = np.zeros(len(values), dtype=np.int64)
    best = 0
    for x in range(1, len(values)):
        if values[x] <= values[best] * (1 + 1e-12):
            best = x
        idx[x] = best
    return idx


def layer_curves(problem: MoeOffloadProblem, config: MoEpicConfig) -> list[LayerCurve]:
    """Inner solves for every layer and budget."""
    curves = []
    for i in range(problem.num_layers):
        recall = 1.0 if config.perfect_prediction else None
        if config.inner == "scan":
            curves.append(inner_scan(problem, i, config.policy, recall, allow_cpu=config.cpu_misses,
                                      allow_split=config.split_misses))
        elif config.inner == "fixed_point":
            curves.append(inner_fixed_point(problem, i, config.policy, recall, allow_cpu=config.cpu_misses,
                                      allow_split=config.split_misses))
        else:
            raise ValueError(f"unknown inner solver {config.inner}")
    return curves


def solution_from_units(problem: MoeOffloadProblem, curves: list[LayerCurve], units: np.ndarray, config: MoEpicConfig,
                        status: Status, watch: Stopwatch, trace: list[TraceEvent]) -> MoeOffloadSolution:
    """Read each layer's decision at its budget (the cheapest point at or below it) and evaluate."""
    L = problem.num_layers
    thetas = np.zeros(L)
    caps = np.zeros(L, dtype=np.int64)
    pref = np.zeros(L, dtype=bool)
    cpu = np.zeros(L, dtype=bool)
    split = np.full(L, np.nan)
    for i, cv in enumerate(curves):
        at = int(running_argmin(cv.time_s)[min(int(units[i]), len(cv.time_s) - 1)])
        thetas[i], caps[i], pref[i] = cv.theta[at], cv.capacity[at], cv.prefetch[at]
        cpu[i] = bool(cv.cpu[at]) if cv.cpu is not None else False
        split[i] = cv.split[at] if cv.split is not None else np.nan
    recall = np.ones(L) if config.perfect_prediction else None
    metrics = evaluate(problem, thetas, caps, pref, config.policy, recall=recall, cpu_layers=cpu, split=split)
    return MoeOffloadSolution(status=status, budget_units=units.astype(np.int64), thetas=thetas, capacities=caps,
                              prefetch=pref, policy=config.policy, objective=metrics.tpot_s, metrics=metrics,
                              wall_time_s=watch.elapsed(), trace=tuple(trace), cpu_layers=cpu if cpu.any() else None,
                              split_fraction=split if np.isfinite(split).any() else None)


def solve(problem: MoeOffloadProblem, config: MoEpicConfig = MoEpicConfig()) -> MoeOffloadSolution:
    """Plan every layer's budget and split ratio for `problem`."""
    watch = Stopwatch()
    if problem.budget_bytes < 0:
        raise InfeasibleError(
            f"the expert cache budget is negative ({problem.budget_bytes / 2**30:.2f} GiB)",
            f"free at least {-problem.budget_bytes / 2**30:.2f} GiB more device memory (smaller context, fewer staging buffers) or use a larger device")
    trace: list[TraceEvent] = []
    curves = layer_curves(problem, config)
    for i, cv in enumerate(curves):
        trace.append(TraceEvent("inner", i, {"ratio_rounds": cv.rounds_ratio, "hide_rounds": cv.rounds_hide}))
    if config.prefill_weight > 0 and problem.prompt_tokens > 0 and problem.popularity is not None:
        from solvers.moe_offload.prefill import prefill_curve

        curves = [dataclasses.replace(cv, time_s=cv.time_s + config.prefill_weight
                                      * prefill_curve(problem, i, np.arange(len(cv.time_s))))
                  for i, cv in enumerate(curves)]
    G = problem.total_units
    if config.uniform_budget:
        units = np.full(problem.num_layers, min(G // problem.num_layers, problem.layer_units))
        trace.append(TraceEvent("uniform", 0, {"units_per_layer": int(units[0])}))
    else:
        units, value, pairs = allocate([cv.time_s for cv in curves], G)
        trace.append(TraceEvent("divide_and_conquer", 0, {"total_units": G, "pair_evaluations": pairs,
                                                          "objective_s": value + problem.other_compute_s}))
    status = Status.OPTIMAL if config.inner == "scan" and not config.uniform_budget else Status.FEASIBLE
    return solution_from_units(problem, curves, units, config, status, watch, trace)


def smallest_budget(problem: MoeOffloadProblem, config: MoEpicConfig, target_s: float, metric: str = "tpot"
                    ) -> tuple[float | None, float]:
    """Dual mode (MoEpic's second problem): the smallest expert budget (bytes, on the grid) whose best plan
    meets `target_s` for `metric` ("tpot": decode time per token; "ttft": prefill time), and the best value
    any budget up to the problem's reaches (s). Returns (None, best) when no budget does."""
    from solvers.moe_offload.divide_and_conquer import root_curve

    if metric == "tpot":
        curves = [cv.time_s for cv in layer_curves(problem, config)]
        extra = problem.other_compute_s
    elif metric == "ttft":
        from solvers.moe_offload.prefill import prefill_curve

        units = np.arange(problem.layer_units + 1)
        curves = [prefill_curve(problem, i, units) for i in range(problem.num_layers)]
        extra = problem.prefill_other_s
    else:
        raise ValueError(f"unknown dual-mode metric {metric}")
    f = root_curve(curves, problem.total_units) + extra
    ok = np.flatnonzero(f <= target_s * (1 + 1e-12))
    best = float(f.min())
    if len(ok) == 0:
        return None, best
    return float(ok[0]) * problem.budget_unit_bytes, best
