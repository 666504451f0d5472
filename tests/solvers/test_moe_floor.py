"""The physical floor: below every configuration the simulator runs (brute force over placements on small
instances), exact in the closed-form cases, and consistent with its own dual search."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from profilers.synthetic_traces import generate_trace
from runtime.sim.moe_offload import SimConfig, SimLayer, simulate
from solvers.moe_offload.floor import FloorConfig, physical_floor, window_requests
from solvers.moe_offload.problem import MoeOffloadProblem

L, N, K = 2, 4, 2
U, BW, P = 1e8, 1e10, 4e10          # tau = 10 ms, one expert at peak DRAM = 2.5 ms
HOST = 0.8 * P                      # the host computes at 80 % of peak
B_X, ATTN, OTHER = 0.5e-3, 0.2e-3, 0.1e-3
WARMUP, W = 16, 40


def small_problem(budget_experts: float, host: bool = True) -> MoeOffloadProblem:
    """Two layers of four experts, top-2; the floor reads only timing, bytes and the budget."""
    return MoeOffloadProblem(
        layer_names=("l0", "l1"), num_experts=N, top_k=K, k_prefetch=K, expert_bytes=U, intermediate_size=64,
        theta_granularity=16, bandwidth_bytes_per_s=BW, expert_compute_s=B_X, attention_compute_s=np.full(L, ATTN),
        other_compute_s=OTHER, hit_curves={}, recall=np.zeros(L), distinct_experts=np.full(L, float(K)),
        budget_bytes=budget_experts * U, budget_unit_bytes=U / 4,
        host_expert_compute_s=U / HOST if host else None, host_dram_bytes_per_s=P if host else None)


def simulated(trace, layers: list[SimLayer]) -> float:
    cfg = SimConfig(tuple(layers), U, BW, B_X, [ATTN] * L, OTHER, U / HOST, host_dram_bytes_per_s=P)
    return simulate(trace.experts, trace.predicted, cfg, tokens=W, warmup=WARMUP).tpot_s


@pytest.mark.parametrize("preset,seed", [("bursty", 1), ("moepic-calibrated", 2)])
def test_floor_is_below_every_simulated_placement(preset: str, seed: int) -> None:
    trace = generate_trace(L, N, K, preset, tokens=WARMUP + W, seed=seed)
    budget = 2
    floor = physical_floor(small_problem(budget), trace.experts[WARMUP:WARMUP + W]).tpot_s
    subsets = [s for r in range(budget + 1) for s in itertools.combinations(range(N), r)]
    best = np.inf
    runs = 0
    for s0, s1 in itertools.product(subsets, subsets):
        if len(s0) + len(s1) > budget:
            continue
        for mode in ("cpu", "split0", "split50", "split100", "gpu", "gpu-prefetch", "hybrimoe"):
            lays = []
            for s in (s0, s1):
                if mode == "cpu":
                    lays.append(SimLayer(len(s), 1.0, prefetch=False, mode="cpu", initial_resident=s))
                elif mode.startswith("split"):
                    lays.append(SimLayer(len(s), 1.0, prefetch=False, mode="split", split=int(mode[5:]) / 100,
                                         initial_resident=s))
                elif mode.startswith("gpu"):
                    lays.append(SimLayer(len(s), 1.0 if s else 0.0, prefetch=mode == "gpu-prefetch"))
                else:
                    lays.append(SimLayer(len(s), 1.0, mode="hybrimoe", initial_resident=s, prefetch_size=1))
            best = min(best, simulated(trace, lays))
            runs += 1
    assert runs > 100
    assert floor <= best * (1 + 1e-9), (floor, best)
    # and it is not vacuous: at least what the device must do, and within a factor of two of the best placement
    assert floor >= OTHER + L * ATTN
    assert best / floor < 2.0


def test_floor_equals_the_all_resident_plan_and_the_host_assist_closed_form() -> None:
    trace = generate_trace(L, N, K, "bursty", tokens=WARMUP + W, seed=3)
    window = trace.experts[WARMUP:WARMUP + W]
    all_resident = OTHER + L * (ATTN + K * B_X)           # every expert on the device: the plan's time
    no_host = physical_floor(small_problem(L * N, host=False), window)
    assert no_host.tpot_s == pytest.approx(all_resident, rel=1e-6)
    # with a host the floor may also let the host compute some rows of a resident expert in parallel:
    # per request min over the split of max(host, device) = a b / (a + b), a = U / P at peak
    a = U / P
    with_host = physical_floor(small_problem(L * N), window)
    assert with_host.tpot_s == pytest.approx(OTHER + L * (ATTN + K * a * B_X / (a + B_X)), rel=1e-6)
    assert with_host.tpot_s <= all_resident
    assert with_host.binding == "device"


def test_floor_without_cache_is_the_dram_time_of_every_expert() -> None:
    trace = generate_trace(L, N, K, "moepic-calibrated", tokens=WARMUP + W, seed=4)
    f = physical_floor(small_problem(0), trace.experts[WARMUP:WARMUP + W])
    # nothing resident: every activated expert's bytes come from DRAM at peak (2.5 ms each), K per layer
    assert f.tpot_s == pytest.approx(L * K * U / P, rel=1e-3)
    assert f.binding == "dram"


def test_floor_window_requests_and_search_are_deterministic() -> None:
    w = np.array([[[0, 1]], [[1, 1]], [[2, 0]]])  # (W=3, L=1, k=2); a repeated expert counts once per step
    (steps, prev), = window_requests(w)
    assert steps.tolist() == [0, 0, 1, 2, 2]
    assert prev.tolist() == [-1, -1, 1, -1, 0]
    trace = generate_trace(L, N, K, "bursty", tokens=WARMUP + W, seed=5)
    p = small_problem(1.5)
    a = physical_floor(p, trace.experts[WARMUP:WARMUP + W], FloorConfig(max_oracles=10))
    b = physical_floor(p, trace.experts[WARMUP:WARMUP + W], FloorConfig(max_oracles=10))
    assert a.tpot_s == b.tpot_s and a.oracles == b.oracles
    # more dual evaluations can only raise (never lower) the best bound found
    c = physical_floor(p, trace.experts[WARMUP:WARMUP + W], FloorConfig(max_oracles=3))
    assert c.tpot_s <= a.tpot_s + 1e-15
    assert a.upper_model_s >= a.tpot_s


def test_floor_is_below_the_exact_lp_on_a_tiny_window() -> None:
    """The dual bound never exceeds the floor problem's exact LP relaxation (solved directly)."""
    from scipy.optimize import linprog
    import scipy.sparse as sp

    trace = generate_trace(1, 3, 2, "bursty", tokens=30, seed=6)
    window = trace.experts[10:22]
    prob = dataclasses.replace(small_problem(1.0), layer_names=("l0",), attention_compute_s=np.array([ATTN]),
                               recall=np.zeros(1), distinct_experts=np.array([2.0]), num_experts=3)
    floor = physical_floor(prob, window).tpot_s
    (st, prev), = window_requests(window)
    R, Wn = len(st), window.shape[0]
    # variables: x (kept), adm (admitted), y (bypass copy), z_t (step time), c (capacity), T
    nx = 3 * R + Wn + 2
    X, A, Y, Z, C, T = 0, R, 2 * R, 3 * R, 3 * R + Wn, 3 * R + Wn + 1
    rows, rhs = [], []

    def row(entries: dict[int, float], b: float) -> None:
        rows.append(entries)
        rhs.append(b)

    a, tau = U / P, U / BW
    for j in range(R):
        row({X + j: 1, A + j: 1, Y + j: 1}, 1.0)                            # host share >= 0
        if prev[j] >= 0:
            row({X + j: 1, X + prev[j]: -1, A + prev[j]: -1}, 0.0)          # keep only what was resident
    for t in range(Wn):
        occ: dict[int, float] = {C: -1.0}
        for j in range(R):
            lo = st[prev[j]] if prev[j] >= 0 else -1
            if st[j] == t:
                occ[X + j] = occ.get(X + j, 0) + 1
                occ[A + j] = occ.get(A + j, 0) + 1
            elif lo < t < st[j]:
                occ[X + j] = occ.get(X + j, 0) + 1
        row(occ, 0.0)                                                        # capacity
        at = [j for j in range(R) if st[j] == t]
        host = {Z + t: -1.0}
        dev = {Z + t: -1.0}
        for j in at:
            for v in (X, A, Y):
                host[v + j] = -a
                dev[v + j] = B_X
        row(host, -a * len(at))                                              # z >= host time
        row(dev, 0.0)                                                        # z >= device time
    row({**{Z + t: 1.0 for t in range(Wn)}, T: -1.0}, -Wn * (OTHER + ATTN))  # T >= critical path
    row({**{X + j: -a for j in range(R)}, T: -1.0}, -a * R)                 # T >= DRAM
    row({**{A + j: tau for j in range(R)}, **{Y + j: tau for j in range(R)}, T: -1.0}, 0.0)   # T >= link
    row({C: 1.0}, 1.0)                                                       # budget: one expert
    m = sp.lil_matrix((len(rows), nx))
    for r, entries in enumerate(rows):
        for col, v in entries.items():
            m[r, col] = v
    bounds = [(0, 1)] * (3 * R) + [(0, None)] * Wn + [(0, 3), (0, None)]
    cost = np.zeros(nx)
    cost[T] = 1.0
    res = linprog(cost, A_ub=m.tocsr(), b_ub=np.array(rhs), bounds=bounds, method="highs")
    assert res.status == 0
    lp = res.x[T] / Wn
    assert floor <= lp * (1 + 1e-6)
    assert floor >= 0.97 * lp, (floor, lp)     # the dual search is close to the LP optimum on this instance
