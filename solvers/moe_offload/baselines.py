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
| llamacpp_cpu_moe   | llama.cpp --n-cpu-moe      | 1     | first N layers on the CPU, the rest whole | - | none |
| ktransformers      | kTransformers static map   | -     | none: every routed expert on the host     | - | none |
| hybrimoe           | HybriMoE (DAC 2025)        | 1     | uniform, whole experts | minus recent score | next-layer top scores |

HybriMoE runs in the simulator (its per-step host/device split and its MRS cache); its predicted figure is an
analytic estimate (LCP hit curve, expected two-ended schedule) and it is outside the plan space (a per-step
dynamic split), so the plan is reported against it, not guaranteed to beat it.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from solvers.common import Baseline, Status, Stopwatch, TraceEvent
from solvers.moe_offload.cost import PredictedMetrics, capacity, evaluate
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
    """llama.cpp `--n-cpu-moe N`: the experts of the first N MoE layers stay in host memory and compute on the CPU
    (llama.cpp's help: "keep the MoE weights of the first N layers in the CPU"); the remaining layers keep all
    their experts on the GPU. N is the smallest that fits the budget."""
    if problem.host_expert_compute_s is None:
        raise ValueError(_no_host_bandwidth(problem))
    w = Stopwatch()
    L, N = problem.num_layers, problem.num_experts
    n_gpu = int(min(L, np.floor(problem.budget_bytes / (N * problem.expert_bytes) + 1e-9)))
    caps = np.array([N if i >= L - n_gpu else 0 for i in range(L)], dtype=np.int64)
    cpu = np.ones(L, dtype=bool)  # every layer in CPU-miss mode: none (first N) or all (the rest) of its experts on the GPU
    thetas = np.where(caps > 0, 1.0, 0.0)
    pref = np.zeros(L, dtype=bool)
    m = evaluate(problem, thetas, caps, pref, "lcp", cpu_layers=cpu)
    units = np.ceil(caps * problem.expert_bytes / problem.budget_unit_bytes - 1e-9).astype(np.int64)
    return MoeOffloadSolution(status=Status.FEASIBLE, budget_units=units, thetas=thetas, capacities=caps, prefetch=pref,
                              policy="static", objective=m.tpot_s, metrics=m, wall_time_s=w.elapsed(),
                              cpu_layers=cpu, params={"baseline": "llamacpp_cpu_moe", "n_cpu_moe": L - n_gpu,
                                                      "gpu_layers_whole": n_gpu,
                                                      "host_expert_compute_ms": problem.host_expert_compute_s * 1e3})


def ktransformers_static(problem: MoeOffloadProblem) -> MoeOffloadSolution:
    """kTransformers' static mapping: every routed expert on the host CPU, attention and shared experts on
    the device; no expert cache (the budget is not used for experts)."""
    if problem.host_expert_compute_s is None:
        raise ValueError(_no_host_bandwidth(problem))
    w = Stopwatch()
    L = problem.num_layers
    caps = np.zeros(L, dtype=np.int64)
    split = np.zeros(L)   # a split layer with nothing copied: misses computed where they live
    m = evaluate(problem, np.zeros(L), caps, np.zeros(L, dtype=bool), "static", split=split)
    return MoeOffloadSolution(status=Status.FEASIBLE, budget_units=np.zeros(L, dtype=np.int64), thetas=np.zeros(L),
                              capacities=caps, prefetch=np.zeros(L, dtype=bool), policy="static", objective=m.tpot_s,
                              metrics=m, wall_time_s=w.elapsed(), split_fraction=split,
                              params={"baseline": "ktransformers", "routed_experts": "host CPU",
                                      "attention_and_shared_experts": "device",
                                      "host_expert_compute_ms": problem.host_expert_compute_s * 1e3})


def hss_expert_phase(cached: int, uncached: int, gpu_s: float, cpu_s: float, move_s: float) -> tuple[float, int]:
    """HybriMoE's two-ended greedy for one decode step (one token per expert): (expert-phase time s, experts moved).

    The queue holds the cached experts, then the uncached ones. The head is offered to the device (an
    uncached head waits for its copy; copies are serialised), the tail to the host; whichever side
    would finish first takes its candidate. Our own rendering of the published schedule.
    """
    queue = ["c"] * cached + ["u"] * uncached
    gpu_t = cpu_t = move_t = 0.0
    moved = 0
    while queue:
        head = queue[0]
        g = gpu_s + (max(0.0, move_t + move_s - gpu_t) if head == "u" else 0.0)
        if gpu_t + g <= cpu_t + cpu_s:
            if head == "u":
                move_t += move_s
                moved += 1
            gpu_t += g
            queue.pop(0)
        else:
            cpu_t += cpu_s
            queue.pop()
    return max(gpu_t, cpu_t), moved


def hybrimoe(problem: MoeOffloadProblem, prefetch_size: int = 0, mrs_alpha: float = 0.5) -> MoeOffloadSolution:
    """HybriMoE (Zhong et al., DAC 2025): a whole-expert cache of the same size in every layer with
    "minus recent score" eviction, a per-step host/device split of the activated experts that balances
    their finish times (experts moved to the device are admitted), and prefetch of the next layer's
    highest-score experts. The simulator runs the policy itself; this analytic estimate uses the LCP hit
    curve for the MRS cache (both weigh frequency and recency) and the expected two-ended schedule.
    """
    if problem.host_expert_compute_s is None:
        raise ValueError(_no_host_bandwidth(problem))
    w = Stopwatch()
    L = problem.num_layers
    c = uniform_capacity(problem)
    env = problem.envelope("lcp")
    times = np.zeros(L)
    hits = np.zeros(L)
    bytes_ = np.zeros(L)
    b, t_cpu, tau = problem.expert_compute_s, problem.host_expert_compute_s, problem.transfer_s
    for i in range(L):
        h = float(env[i][c])
        n = max(int(round(float(problem.distinct_experts[i]))), 1)
        exp_t = exp_moved = 0.0
        for miss in range(n + 1):
            prob = math.comb(n, miss) * (1 - h) ** miss * h ** (n - miss)
            t_phase, moved = hss_expert_phase(n - miss, miss, b, t_cpu, tau)
            exp_t += prob * t_phase
            exp_moved += prob * moved
        times[i] = problem.attention_compute_s[i] + exp_t
        hits[i] = h
        bytes_[i] = exp_moved * problem.expert_bytes
    stall = times - problem.layer_compute_s()
    weights = problem.distinct_experts
    m = PredictedMetrics(times, stall, hits, bytes_, float(times.sum() + problem.other_compute_s),
                         float((hits * weights).sum() / weights.sum()), float(bytes_.sum()))
    caps = np.full(L, c, dtype=np.int64)
    units = np.ceil(caps * problem.expert_bytes / problem.budget_unit_bytes - 1e-9).astype(np.int64)
    return MoeOffloadSolution(status=Status.FEASIBLE, budget_units=units, thetas=np.where(caps > 0, 1.0, 0.0),
                              capacities=caps, prefetch=np.zeros(L, dtype=bool), policy="mrs", objective=m.tpot_s,
                              metrics=m, wall_time_s=w.elapsed(),
                              params={"baseline": "hybrimoe", "cache_per_layer": c, "eviction": "minus recent score",
                                      "mrs_alpha": mrs_alpha, "routing_score": "1/k per activated expert (traces hold no router probabilities)",
                                      "prefetch_size": prefetch_size, "schedule": "two-ended greedy, balance finish times",
                                      "host_expert_compute_ms": t_cpu * 1e3})


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
    Baseline("llamacpp_cpu_moe", "llama.cpp --n-cpu-moe N: the first N layers' experts computed on the host CPU, the "
             "rest on the GPU",
             llamacpp_cpu_moe, in_space=True, unsupported=_no_host_bandwidth),
    Baseline("ktransformers", "kTransformers static mapping: routed experts on the host CPU, attention and shared experts "
             "on the device", ktransformers_static, in_space=True, unsupported=_no_host_bandwidth),
    Baseline("hybrimoe", "HybriMoE (DAC 2025): per-step host/device split balancing finish times, MRS cache, "
             "score-driven prefetch", hybrimoe, unsupported=_no_host_bandwidth),
)

# baselines whose configuration uses the host CPU: in the plan space only when the plan may use it too
HOST_BASELINES = ("llamacpp_cpu_moe", "ktransformers", "hybrimoe")


def baseline(name: str) -> Baseline:
    """One baseline by name."""
    return next(b for b in BASELINES if b.name == name)
