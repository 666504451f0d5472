"""Baselines at the same expert-cache budget, each following its system's published policy.

Every baseline returns a `MoeOffloadSolution` (same type as MoEpic) whose `params` show the policy
parameters it ran with. Whole-expert baselines use theta = 1; "uniform" means the same cache size in
every MoE layer, floor((B / L) / U_e) experts.

| name               | system it follows          | theta | per-layer size          | policy | prefetch          |
|--------------------|----------------------------|-------|-------------------------|--------|-------------------|
| prefetch_only      | prefetch-based offloading  | 0     | 0 (staging only)        | -      | predicted experts |
| mixtral_offloading | Eliseev & Mazur 2023       | 1     | uniform                 | LRU    | speculative (next-layer gate) |
| moe_infinity       | MoE-Infinity               | 1     | uniform (one global ratio) | LFU | next-layer prefetch |
| cache_only         | cache-based offloading     | 1     | uniform                 | LCP    | none              |
| uniform_split      | MoEpic without per-layer planning | best single theta | uniform | LCP | predicted |
| adapmoe_dp         | AdapMoE                    | 1     | DP over per-layer sizes | LCP    | predicted         |
| llamacpp_cpu_moe   | llama.cpp --n-cpu-moe      | 1     | first n layers whole, the rest on the CPU | - | none |
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from solvers.common import Baseline, Status, Stopwatch, TraceEvent
from solvers.moe_offload.cost import capacity, evaluate
from solvers.moe_offload.divide_and_conquer import allocate
from solvers.moe_offload.fixed_point import inner_scan
from solvers.moe_offload.problem import MoeOffloadProblem, MoeOffloadSolution


def _whole(problem: MoeOffloadProblem, caps: np.ndarray, policy: str, prefetch: bool, name: str,
           params: dict, watch: Stopwatch, units: np.ndarray | None = None) -> MoeOffloadSolution:
    L = problem.num_layers
    thetas = np.where(caps > 0, 1.0, 0.0)
    pref = np.full(L, prefetch and problem.k_prefetch > 0)
    m = evaluate(problem, thetas, caps, pref, policy)
    if units is None:
        units = np.ceil(caps * problem.expert_bytes / problem.budget_unit_bytes - 1e-9).astype(np.int64)
    return MoeOffloadSolution(status=Status.FEASIBLE, budget_units=units, thetas=thetas, capacities=caps.astype(np.int64),
                              prefetch=pref, policy=policy, objective=m.tpot_s, metrics=m,
                              wall_time_s=watch.elapsed(), params={"baseline": name, **params})


def uniform_capacity(problem: MoeOffloadProblem) -> int:
    """floor((B / L) / U_e), capped at N."""
    return int(min(problem.num_experts, np.floor(problem.budget_bytes / problem.num_layers / problem.expert_bytes + 1e-9)))


def prefetch_only(problem: MoeOffloadProblem) -> MoeOffloadSolution:
    """theta = 0: nothing cached, predicted experts prefetched whole."""
    w = Stopwatch()
    return _whole(problem, np.zeros(problem.num_layers, dtype=np.int64), "lcp", True, "prefetch_only",
                  {"theta": 0.0, "k_prefetch": problem.k_prefetch}, w)


def mixtral_offloading(problem: MoeOffloadProblem) -> MoeOffloadSolution:
    """LRU cache of whole experts, the same size in every layer, speculative next-layer prefetch."""
    w = Stopwatch()
    c = uniform_capacity(problem)
    return _whole(problem, np.full(problem.num_layers, c), "lru", True, "mixtral_offloading",
                  {"theta": 1.0, "cache_per_layer": c, "offload_per_layer": problem.num_experts - c,
                   "eviction": "lru", "speculative_prefetch": True}, w)


def moe_infinity(problem: MoeOffloadProblem) -> MoeOffloadSolution:
    """Frequency (LFU) cache of whole experts under one global memory ratio, next-layer prefetch."""
    w = Stopwatch()
    c = uniform_capacity(problem)
    ratio = problem.budget_bytes / (problem.num_layers * problem.num_experts * problem.expert_bytes)
    return _whole(problem, np.full(problem.num_layers, c), "lfu", True, "moe_infinity",
                  {"theta": 1.0, "device_memory_ratio": round(float(ratio), 4), "cache_per_layer": c,
                   "eviction": "lfu", "prefetch": True}, w)


def cache_only(problem: MoeOffloadProblem) -> MoeOffloadSolution:
    """LCP cache of whole experts, uniform size, no prefetch."""
    w = Stopwatch()
    c = uniform_capacity(problem)
    return _whole(problem, np.full(problem.num_layers, c), "lcp", False, "cache_only",
                  {"theta": 1.0, "cache_per_layer": c, "eviction": "lcp", "prefetch": False}, w)


def uniform_split(problem: MoeOffloadProblem) -> MoeOffloadSolution:
    """One global theta (best of a sweep over the grid), uniform budget, LCP + prefetch."""
    w = Stopwatch()
    L = problem.num_layers
    units_per_layer = min(problem.total_units // L, problem.layer_units)
    per_layer = units_per_layer * problem.budget_unit_bytes
    best: MoeOffloadSolution | None = None
    sweep = []
    for th in problem.thetas():
        caps = np.full(L, int(capacity(problem, per_layer, th)))
        thetas = np.full(L, th)
        pref = np.full(L, problem.k_prefetch > 0)
        m = evaluate(problem, thetas, caps, pref, "lcp")
        sweep.append((float(th), m.tpot_s))
        if best is None or m.tpot_s < best.objective - 1e-15:
            units = np.full(L, units_per_layer)
            best = MoeOffloadSolution(status=Status.FEASIBLE, budget_units=units, thetas=thetas, capacities=caps,
                                      prefetch=pref, policy="lcp", objective=m.tpot_s, metrics=m,
                                      params={"baseline": "uniform_split", "theta": round(float(th), 6),
                                              "eviction": "lcp", "prefetch": True})
    assert best is not None
    return replace(best, wall_time_s=w.elapsed(),
                              trace=tuple(TraceEvent("theta_sweep", j, {"theta": t, "tpot_s": v}) for j, (t, v) in enumerate(sweep)),
                              params=best.params)


def adapmoe_dp(problem: MoeOffloadProblem) -> MoeOffloadSolution:
    """Whole experts (theta = 1), per-layer cache sizes by DP over the budget, LCP + prefetch."""
    w = Stopwatch()
    one = np.array([1.0])
    curves = [inner_scan(problem, i, "lcp", thetas=one, prefetch_options=(True,)) for i in range(problem.num_layers)]
    units, _, _ = allocate([c.time_s for c in curves], problem.total_units)
    caps = np.array([int(curves[i].capacity[units[i]]) for i in range(problem.num_layers)])
    # a layer given units it cannot use keeps the capacity those units allow
    return _whole(problem, caps, "lcp", True, "adapmoe_dp", {"theta": 1.0, "sizing": "dp", "eviction": "lcp",
                                                             "prefetch": True}, w, units)


def llamacpp_cpu_moe(problem: MoeOffloadProblem) -> MoeOffloadSolution:
    """llama.cpp `--n-cpu-moe`: the first n MoE layers keep all experts on the GPU, the rest run on the CPU."""
    if problem.host_expert_compute_s is None:
        raise ValueError(_no_host_bandwidth(problem))
    w = Stopwatch()
    L, N = problem.num_layers, problem.num_experts
    n_gpu = int(min(L, np.floor(problem.budget_bytes / (N * problem.expert_bytes) + 1e-9)))
    caps = np.array([N if i < n_gpu else 0 for i in range(L)], dtype=np.int64)
    cpu = np.ones(L, dtype=bool)  # every layer in CPU-miss mode, with all (first n) or none of its experts on the GPU
    thetas = np.where(caps > 0, 1.0, 0.0)
    pref = np.zeros(L, dtype=bool)
    m = evaluate(problem, thetas, caps, pref, "lcp", cpu_layers=cpu)
    units = np.ceil(caps * problem.expert_bytes / problem.budget_unit_bytes - 1e-9).astype(np.int64)
    return MoeOffloadSolution(status=Status.FEASIBLE, budget_units=units, thetas=thetas, capacities=caps, prefetch=pref,
                              policy="static", objective=m.tpot_s, metrics=m, wall_time_s=w.elapsed(),
                              cpu_layers=cpu, params={"baseline": "llamacpp_cpu_moe", "n_cpu_moe": L - n_gpu,
                                                      "gpu_layers_whole": n_gpu,
                                                      "host_expert_compute_ms": problem.host_expert_compute_s * 1e3})


def _no_host_bandwidth(problem: MoeOffloadProblem) -> str | None:
    return "has no host memory bandwidth figure" if problem.host_expert_compute_s is None else None


BASELINES: tuple[Baseline, ...] = (
    Baseline("prefetch_only", "theta=0: no cache, predicted experts prefetched whole", prefetch_only, in_space=True),
    Baseline("mixtral_offloading", "mixtral-offloading: whole-expert LRU cache, same size every layer, speculative prefetch",
             mixtral_offloading),
    Baseline("moe_infinity", "MoE-Infinity: whole-expert frequency (LFU) cache, one global memory ratio, prefetch",
             moe_infinity),
    Baseline("cache_only", "whole-expert LCP cache, same size every layer, no prefetch", cache_only, in_space=True),
    Baseline("uniform_split", "MoEpic split with one global theta (best of a sweep) and a uniform budget", uniform_split,
             in_space=True),
    Baseline("adapmoe_dp", "AdapMoE-style: whole experts, per-layer cache sizes by DP, LCP + prefetch", adapmoe_dp,
             in_space=True),
    # in the plan space only when CPU-miss layers are allowed (the family checks its option)
    Baseline("llamacpp_cpu_moe", "llama.cpp --n-cpu-moe: first layers' experts on the GPU, the rest computed on the host CPU",
             llamacpp_cpu_moe, in_space=True, unsupported=_no_host_bandwidth),
)


def baseline(name: str) -> Baseline:
    """One baseline by name."""
    return next(b for b in BASELINES if b.name == name)
