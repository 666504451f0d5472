"""COACH split-inference solver: cost model, candidate-cut completeness, exact references, baselines, sanity.

Instances are small random DAGs, series-parallel graphs and chains built here (no torch).
"""
from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from solvers.common import InfeasibleError, Status
from solvers.split_inference import baselines
from solvers.split_inference.coach import (CoachConfig, accuracy_floor, accuracy_floor_linear, bit_ladder, prepare,
                                           repair, solve, solve_plan_table)
from solvers.split_inference.cost import (cut_structure, cut_tensors, edge_memory_bytes, evaluate, graph_index,
                                          is_downward_closed, overlap_simulation, prefix_cut_structure, prefix_sums,
                                          steady_state_period)
from solvers.split_inference.cuts import CutSettings, candidate_cuts, chain_cuts, dads_cut
from solvers.split_inference.exact import all_ideals, solve_cpsat, solve_enumerate
from solvers.split_inference.problem import SplitInferenceProblem, SplitInferenceSolution
from solvers.split_inference.validate import validate

log = logging.getLogger(__name__)


from tests.split_instances import SMALL_BITS, chain_edges, chain_of_blocks, make_problem, random_dag, sp_edges


def brute_force_ideals(p: SplitInferenceProblem) -> set[bytes]:
    """Every mask over 2^n subsets that contains the inputs and is closed under predecessors."""
    n = p.num_nodes
    masks = ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
    ok = masks[:, np.asarray(p.is_input)].all(axis=1)
    for u, v in p.edges:
        ok &= ~masks[:, v] | masks[:, u]
    return {np.packbits(m).tobytes() for m in masks[ok]}


def keys(masks: list[np.ndarray]) -> set[bytes]:
    return {np.packbits(m).tobytes() for m in masks}


# ----------------------------------------------------------------------------------------------- cost model

def test_stage_times_follow_the_spec_formulas_on_a_hand_example() -> None:
    rng = np.random.default_rng(0)
    p = make_problem(3, chain_edges(3), rng, edge_time_s=np.array([0.0, 0.01, 0.02]),
                     cloud_time_s=np.array([0.0, 0.002, 0.004]), out_elements=np.array([1000, 501, 10]),
                     bandwidth_bytes_per_s=1e5, rtt_s=0.01, downlink_bytes_per_s=1e4, result_bytes=100.0,
                     param_bytes=np.array([0.0, 10.0, 20.0]), out_bytes=np.array([4000.0, 2004.0, 40.0]))
    s = np.array([True, True, False])
    q = p.quant_s_fixed_edge + p.quant_s_per_element_edge * 501
    dq = p.dequant_s_fixed_cloud + p.dequant_s_per_element_cloud * 501
    m = evaluate(p, s, {1: 4})
    assert cut_tensors(p, s) == [1]
    assert m.bytes_per_request == math.ceil(501 * 4 / 8) + 8                    # 251 B payload + 8 B metadata
    assert m.edge_s == pytest.approx(0.01 + q)
    assert m.link_s == pytest.approx(259 / 1e5)                 # busy time: propagation does not hold the link
    assert m.propagation_s == pytest.approx(0.005)
    assert m.cloud_s == pytest.approx(0.004 + dq)
    assert m.latency_s == pytest.approx(m.edge_s + m.link_s + 0.005 + m.cloud_s + 100 / 1e4 + 0.005)
    # the window of 3 requests in flight binds here: each holds a slot for its whole latency
    assert m.period_s == pytest.approx(max(m.edge_s, m.link_s, m.cloud_s, m.latency_s / 3))
    assert m.latency_s / 3 > max(m.edge_s, m.link_s, m.cloud_s) and m.period_s == pytest.approx(m.latency_s / 3)
    deep = evaluate(replace(p, pipeline_depth=100), s, {1: 4})
    assert deep.period_s == pytest.approx(max(m.edge_s, m.link_s, m.cloud_s))
    assert m.objective_s == pytest.approx(abs(m.edge_s - m.cloud_s) + (m.period_s - m.link_s) + m.period_s)
    assert m.edge_memory_bytes == edge_memory_bytes(p, s) == 10.0 + 4000.0
    assert m.accuracy_drop == pytest.approx(float(p.accuracy_drop[1, SMALL_BITS.index(4)]))
    raw = evaluate(p, s, {1: 32})                                                  # native: no metadata, no (de)quantise
    assert raw.bytes_per_request == 501 * 4 and raw.edge_s == pytest.approx(0.01) and raw.accuracy_drop == 0.0
    everything = evaluate(p, np.ones(3, dtype=bool), {})                           # result stays on the device
    assert everything.link_s == 0.0 and everything.cloud_s == 0.0
    # all-device: one stage, no inter-stage bubbles: J = P = T_e
    assert everything.latency_s == pytest.approx(0.03) and everything.objective_s == pytest.approx(0.03)
    cloud = evaluate(p, np.array([True, False, False]), {})                        # the input goes at native bits
    assert cloud.bytes_per_request == 1000 * 4
    assert steady_state_period(deep) == pytest.approx(deep.period_s)


def test_overlap_simulation_on_a_two_tensor_cut() -> None:
    # 0 → 1 → 3, 0 → 2 → 3 with S = {0, 1}: tensor 0 leaves at t=1 while node 1 runs; the cloud runs node 2
    # on tensor 0 before tensor 1 arrives.
    rng = np.random.default_rng(0)
    p = make_problem(4, [(0, 1), (0, 2), (1, 3), (2, 3)], rng, edge_time_s=np.array([1.0, 2.0, 5.0, 5.0]),
                     cloud_time_s=np.array([1.0, 1.0, 0.5, 1.0]), out_elements=np.array([250, 500, 10, 10]),
                     bandwidth_bytes_per_s=1000.0, rtt_s=0.0, quant_s_fixed_edge=0.0, quant_s_per_element_edge=0.0,
                     dequant_s_fixed_cloud=0.0, dequant_s_per_element_cloud=0.0, result_bytes=0.0)
    s = np.array([True, True, False, False])
    ov = overlap_simulation(p, s, {})
    assert ov.edge_done_s == 3.0
    assert ov.arrival_s == {0: 2.0, 1: 5.0}                       # 1000 B and 2000 B at 1000 B/s, FIFO
    assert ov.link_overlap_s == pytest.approx(1.0)                # link busy [1, 2] and [3, 5]; T_e = 3
    assert ov.cloud_overlap_s == pytest.approx(0.5)               # node 2 runs [2, 2.5]
    m = evaluate(p, s, {})
    t_t, t_e, t_c = m.link_s, m.edge_s, m.cloud_s
    assert (t_e, t_t, t_c) == (3.0, 3.0, 1.5)
    assert m.objective_s == pytest.approx(abs(t_e - t_c) + abs(t_t - max(t_e, t_t - 1.0, t_c - 0.5)) + 3.0)
    assert m.objective_s == pytest.approx(4.5)


def test_prefix_structures_equal_mask_structures() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(3, 16))
        p = make_problem(n, random_dag(rng, n) if rng.random() < 0.5 else sp_edges(rng, n), rng)
        adj = graph_index(p)
        pre = prefix_sums(p, adj)
        found = candidate_cuts(p, adj)
        assert found.forms is not None
        for (last, extra), m in zip(found.forms, found.masks):
            a = prefix_cut_structure(p, adj, pre, last, extra, m)
            b = cut_structure(p, m, adj)
            assert a.tensors == b.tensors and a.output_on_edge == b.output_on_edge
            for x, y in ((a.edge_compute_s, b.edge_compute_s), (a.cloud_compute_s, b.cloud_compute_s),
                         (a.memory_bytes, b.memory_bytes), *zip(a.done_s, b.done_s)):
                assert x == pytest.approx(y, rel=1e-12, abs=1e-15)


def test_accuracy_floor_binary_search_equals_linear_scan() -> None:
    rng = np.random.default_rng(2)
    bits = (2, 3, 4, 5, 6, 8, 16)
    p = make_problem(40, chain_edges(40), rng, bits=bits)
    for v in range(40):                                   # monotone rows: binary search = linear scan
        assert accuracy_floor(p, v)[0] == accuracy_floor_linear(p, v)
        assert accuracy_floor(p, v)[1] <= math.ceil(math.log2(len(bit_ladder(p, v)))) + 1
    drops = np.array(p.accuracy_drop)
    # non-monotone: binary search probes 5 (ok), 3 (0.01), 4 (0.3) and would answer 5 bits; the probes rise
    # from 3 to 4 bits, so the linear scan decides: 2 bits
    drops[3] = [0.001, 0.01, 0.3, 0.004, 0.002, 0.003, 0.0]
    q = replace(p, accuracy_drop=drops)
    assert accuracy_floor(q, 3)[0] == accuracy_floor_linear(q, 3) == 2
    drops[4] = np.nan                                      # not quantisable at any measured width
    q = replace(p, accuracy_drop=drops)
    assert bit_ladder(q, 4) == (32,) and accuracy_floor(q, 4)[0] == 32


# ----------------------------------------------------------------------------------------------- candidate cuts

@pytest.mark.parametrize("settings", [CutSettings(), CutSettings(enumerate_small_blocks=False),
                                      CutSettings(enumerate_small_blocks=False, max_exhaustive_block=1)],
                         ids=["default", "recursion", "recursion-only"])
def test_candidate_cuts_are_every_ideal_on_series_parallel_graphs(settings: CutSettings) -> None:
    rng = np.random.default_rng(3)
    for _ in range(120):
        n = int(rng.integers(2, 15))
        p = make_problem(n, sp_edges(rng, n), rng)
        found = candidate_cuts(p, settings=settings)
        assert found.complete
        assert len(found.masks) == len(keys(found.masks))
        assert keys(found.masks) == brute_force_ideals(p)


def test_candidate_cuts_are_ideals_on_general_dags_and_complete_when_blocks_are_small() -> None:
    rng = np.random.default_rng(4)
    for _ in range(40):
        n = int(rng.integers(3, 15))
        p = make_problem(n, random_dag(rng, n), rng)
        every = brute_force_ideals(p)
        assert keys(candidate_cuts(p).masks) == every                    # all blocks ≤ 16: complete
        partial = candidate_cuts(p, settings=CutSettings(max_exhaustive_block=2, enumerate_small_blocks=False),
                                 dads=lambda: dads_cut(p))
        assert keys(partial.masks) <= every
        if not partial.complete:
            assert partial.dads is not None and np.packbits(partial.dads).tobytes() in keys(partial.masks)
    assert keys(all_ideals(p)) == every


def _braid(length: int) -> tuple[int, list[tuple[int, int]]]:
    """Three chains from the input to the sink with N-shaped cross edges: one irreducible block."""
    chains = [[1 + k * length + i for i in range(length)] for k in range(3)]
    n = 3 * length + 2
    edges = [(0, c[0]) for c in chains] + [(c[-1], n - 1) for c in chains]
    edges += [(c[i], c[i + 1]) for c in chains for i in range(length - 1)]
    edges += [(chains[k][i], chains[k + 1][i + 1]) for k in range(2) for i in range(0, length - 1, 3)]
    return n, sorted(edges)


def test_large_irreducible_block_uses_prefixes_and_the_dads_cut() -> None:
    n, edges = _braid(20)
    p = make_problem(n, edges, np.random.default_rng(23))
    settings = CutSettings(max_block_ideals=200)          # 62 nodes, far more than 200 ideals
    found = candidate_cuts(p, dads=lambda: dads_cut(p), settings=settings)
    assert not found.complete and found.dads is not None
    assert np.packbits(found.dads).tobytes() in keys(found.masks)
    assert all(is_downward_closed(p, m) for m in found.masks)
    sol = solve(p, CoachConfig(cut_settings=settings))
    assert validate(p, sol) == [] and sol.trace[0].values["every_ideal"] is False
    ds = baselines.dads(p)
    if ds.feasible:
        assert sol.objective <= ds.objective * (1 + 1e-12)


def test_floating_nodes_follow_their_consumers() -> None:
    # node 1 is a constant (no input among its ancestors) feeding node 3
    rng = np.random.default_rng(5)
    p = make_problem(5, [(0, 2), (1, 3), (2, 3), (3, 4)], rng)
    found = candidate_cuts(p)
    assert found.forms is None and not found.complete       # the constant never goes up alone
    for m in found.masks:
        assert is_downward_closed(p, m) and m[0]
        assert m[1] == m[3]
    sol = solve(p)
    assert validate(p, sol) == []


def test_chain_cuts_send_one_tensor() -> None:
    rng = np.random.default_rng(6)
    n, edges = chain_of_blocks(6)
    p = make_problem(n, edges, rng)
    cuts = chain_cuts(p)
    assert cuts[0].sum() == 1 and cuts[-1].all()
    assert all(len(cut_tensors(p, m)) == 1 for m in cuts[:-1])
    assert len(cuts) == 1 + 5 + 1                        # the input, 5 inner block outputs, everything


# ----------------------------------------------------------------------------------------------- exact references

def test_coach_equals_exhaustive_on_chains() -> None:
    rng = np.random.default_rng(7)
    for t in range(40):
        n = int(rng.integers(2, 13))
        bits = (2, 3, 4, 5, 6, 8, 16) if t % 2 else SMALL_BITS
        t_max = math.inf if t % 3 else float(rng.uniform(0.01, 0.05))
        p = make_problem(n, chain_edges(n), rng, bits=bits, t_max_s=t_max)
        sol, ref = solve(p), solve_enumerate(p)
        assert validate(p, sol) == [] and validate(p, ref) == []
        assert sol.feasible == ref.feasible
        assert np.array_equal(sol.on_edge, ref.on_edge)
        assert sol.objective == pytest.approx(ref.objective, rel=1e-12)
        assert dict(sol.bits) == dict(ref.bits)


def test_dads_equals_brute_force_min_latency_at_native_bits() -> None:
    rng = np.random.default_rng(8)
    for t in range(40):
        n = int(rng.integers(2, 13))
        p = make_problem(n, random_dag(rng, n) if t % 2 else sp_edges(rng, n), rng,
                         bandwidth_bytes_per_s=float(10 ** rng.uniform(5, 9)))
        best = min(evaluate(p, m, {}).latency_s for m in all_ideals(p))
        got = baselines.dads(p)
        assert validate(p, got) == []
        assert got.metrics.latency_s == pytest.approx(best, rel=1e-9)
        assert solve(p, CoachConfig(objective="latency", fixed_bits=64)).metrics.latency_s == pytest.approx(best, rel=1e-9)


def test_gap_to_exact_on_small_graphs() -> None:
    """Cut gap 0 at native bits (the cut search alone), and ≤ 3 % in J with the bit choice (docs/split-inference.md §3 step 6).

    The enumeration tries every bit vector only for ≤ 3 sent tensors, so COACH may come out below it.
    """
    rng = np.random.default_rng(9)
    worst = -math.inf
    for t in range(48):
        n = int(rng.integers(5, 21))
        edges = random_dag(rng, n) if t % 2 else sp_edges(rng, n)
        bits = (2, 3, 4, 5, 6, 8, 16) if t % 4 == 3 else SMALL_BITS
        p = make_problem(n, edges, rng, bits=bits, t_max_s=math.inf if t % 3 else 0.06)
        native = solve_enumerate(p, max_bit_tensors=0, enforce_accuracy=False)
        ours = solve(p, CoachConfig(fixed_bits=64))
        assert np.array_equal(ours.on_edge, native.on_edge)
        assert ours.objective == pytest.approx(native.objective, rel=1e-12)
        ref, sol = solve_enumerate(p), solve(p)
        assert validate(p, sol) == [] and validate(p, ref) == [] and sol.feasible == ref.feasible
        worst = max(worst, (sol.objective - ref.objective) / ref.objective)
    log.info("worst gap to the enumeration: %.2e", worst)
    assert worst <= 0.03


def _mixed_instance(rng: np.random.Generator, t: int) -> SplitInferenceProblem:
    """Random DAG with a second input, raw int64 / uint8 tensors, and sometimes T_max and memory caps."""
    n = int(rng.integers(4, 13))
    second = int(rng.integers(1, n - 1)) if t % 2 else None
    edges = {e for e in random_dag(rng, n) if e[1] != second}
    for v in range(1, n):
        if v != second and not any(e[1] == v for e in edges):
            edges.add((int(rng.integers(0, v)), v))
    for u in range(n - 1):
        if not any(e[0] == u for e in edges):
            edges.add((u, n - 1))
    is_input = np.zeros(n, dtype=bool)
    is_input[[0] + ([second] if second is not None else [])] = True
    raw = rng.random(n) < 0.2
    native = np.where(raw, 64, 32)
    native[0] = 8 if t % 3 == 0 else 32                     # a uint8 image input, sent as is
    return make_problem(n, sorted(edges), rng, is_input=is_input, native_bits=native, quantizable=native == 32,
                        t_max_s=math.inf if t % 3 else float(rng.uniform(0.01, 0.06)),
                        edge_memory_bytes=float(rng.uniform(2e5, 5e6)) if t % 4 == 0 else 1e12)


def test_coach_matches_exhaustive_with_several_inputs_raw_tensors_and_caps() -> None:
    rng = np.random.default_rng(22)
    solved = 0
    for t in range(80):
        p = _mixed_instance(rng, t)
        try:
            ref = solve_enumerate(p)
        except InfeasibleError:
            with pytest.raises(InfeasibleError):
                solve(p)
            continue
        sol = solve(p)
        solved += 1
        assert validate(p, sol) == [] and sol.feasible == ref.feasible
        if sol.feasible:
            assert sol.objective <= ref.objective * (1 + 1e-12)
        else:                                               # min-latency fallback
            assert sol.metrics.latency_s <= ref.metrics.latency_s * 1.02      # greedy repair of the floors
        for v, b in sol.bits.items():
            assert b == p.native_bits[v] or p.quantizable[v]
    assert solved > 50


def test_cpsat_matches_enumeration_on_chains_and_bounds_dags() -> None:
    rng = np.random.default_rng(10)
    for t in range(6):
        n = int(rng.integers(3, 10))
        p = make_problem(n, chain_edges(n), rng, t_max_s=math.inf if t % 2 else 0.05)
        ref = solve_enumerate(p)
        got = solve_cpsat(p)
        assert validate(p, got) == []
        # single-tensor cuts: the MILP is the same model, up to µs rounding of every time
        assert got.objective == pytest.approx(ref.objective, rel=2e-3)
    n = 20
    p = make_problem(n, random_dag(rng, n), rng)
    got = solve_cpsat(p)
    assert validate(p, got) == []
    assert got.params["bound_s"] <= got.params["milp_objective_s"] + 1e-9


# ----------------------------------------------------------------------------------------------- baselines

def test_plan_is_never_worse_than_a_feasible_baseline() -> None:
    rng = np.random.default_rng(11)
    for t in range(30):
        n = int(rng.integers(3, 18))
        p = make_problem(n, random_dag(rng, n) if t % 2 else sp_edges(rng, n), rng,
                         t_max_s=math.inf if t % 3 else 0.08, bits=(2, 3, 4, 5, 6, 8, 16))
        sol = solve(p)
        assert validate(p, sol) == []
        for base in baselines.BASELINES:
            b = base.solve(p)
            assert validate(p, b) == [], base.name
            assert b.params["baseline"] == base.name and "violations" in b.params
            assert b.feasible == (not b.params["violations"]), base.name
            if b.feasible and sol.feasible:
                assert sol.objective <= b.objective * (1 + 1e-12), base.name
        # the throughput and latency plans likewise, on their own figure (with the runtime's per-request cost)
        q = replace(p, request_edge_s=3e-4, request_cloud_s=3e-4, request_latency_s=2e-4)
        for obj, metric in (("throughput", "period_s"), ("latency", "latency_s")):
            mine = solve(q, CoachConfig(objective=obj))
            for base in baselines.BASELINES:
                b = base.solve(q)
                if b.feasible and mine.feasible:
                    assert getattr(mine.metrics, metric) <= getattr(b.metrics, metric) * (1 + 1e-12), (obj, base.name)
    assert len({b.name for b in baselines.BASELINES}) == len(baselines.BASELINES)


def test_baseline_policies() -> None:
    rng = np.random.default_rng(12)
    n, edges = chain_of_blocks(8)
    p = make_problem(n, edges, rng)
    assert baselines.all_edge(p).on_edge.all() and baselines.all_edge(p).bits == {}
    cloud = baselines.all_cloud(p)
    assert cloud.on_edge.sum() == 1 and cloud.bits == {0: 32}
    ns = baselines.neurosurgeon(p)
    assert len(ns.bits) <= 1 and all(b == 32 for b in ns.bits.values())
    ns8 = baselines.neurosurgeon_8bit(p)
    assert np.array_equal(ns8.on_edge, ns.on_edge) and all(b == 8 for b in ns8.bits.values())
    assert baselines.throughput_cut(p).metrics.period_s <= min(
        evaluate(p, m, {}).period_s for m in candidate_cuts(p).masks) + 1e-15
    assert all(b == 8 for b in baselines.fixed_8bit(p).bits.values())


# ----------------------------------------------------------------------------------------------- sanity (§9 check 6)

def _sanity_chain(n: int = 12, **overrides: object) -> SplitInferenceProblem:
    """Chain whose device time per node rises and cloud time falls; fixed 20k-element activations."""
    rng = np.random.default_rng(13)
    args: dict = dict(edge_time_s=np.linspace(0.5e-3, 4e-3, n), cloud_time_s=np.linspace(4e-3, 0.5e-3, n),
                      out_elements=np.full(n, 20_000), bandwidth_bytes_per_s=1e9, rtt_s=1e-4)
    args.update(overrides)
    return make_problem(n, chain_edges(n), rng, **args)


def test_cut_sits_near_the_crossing_of_device_and_cloud_time() -> None:
    p = _sanity_chain()
    sol = solve(p)
    k = int(sol.on_edge.sum()) - 1                           # last device node
    e = np.cumsum(p.edge_time_s)                             # T_e if the cut is after node i
    c = np.cumsum(p.cloud_time_s[::-1])[::-1]                # T_c of nodes i.. in the cloud
    crossing = int(np.argmin(np.abs(e[:-1] - c[1:])))
    assert abs(k - crossing) <= 1


def test_low_bandwidth_moves_the_cut_to_the_smallest_tensor() -> None:
    n = 12
    elems = np.full(n, 400_000)
    elems[7] = 1_000
    fast = _sanity_chain(n, out_elements=elems)
    slow = replace(fast, bandwidth_bytes_per_s=2e5)
    cut_fast, cut_slow = solve(fast), solve(slow)
    assert list(cut_slow.bits) == [7]
    assert list(cut_fast.bits) != [7]


def test_bits_rise_when_the_link_idles() -> None:
    # x → a → out: a is cheap on the device and costly in the cloud, out the reverse: the cut is {x, a}.
    rng = np.random.default_rng(14)
    p = make_problem(3, chain_edges(3), rng, edge_time_s=np.array([0.0, 1e-3, 50e-3]),
                     cloud_time_s=np.array([0.0, 20e-3, 10e-3]), out_elements=np.array([100_000, 20_000, 10]),
                     bits=(2, 3, 4, 5, 6, 8, 16))
    plans = solve_plan_table(p, [1e6, 1e7, 1e8, 1e9])
    floor = accuracy_floor(p, 1)[0]
    got = [pl.bits[1] for pl in plans]
    assert all(pl.bits.keys() == {1} for pl in plans)
    assert got == sorted(got) and got[0] == floor and got[-1] > floor
    idle = plans[-1].metrics
    assert idle.link_s <= max(idle.edge_s, idle.cloud_s)


# ----------------------------------------------------------------------------------------------- scale, determinism, API

def test_thousand_node_chain_of_blocks_is_fast() -> None:
    n, edges = chain_of_blocks(286)
    assert n >= 1000
    p = make_problem(n, edges, np.random.default_rng(15), bits=(2, 3, 4, 5, 6, 8, 16))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        sol = solve(p)
        times.append(time.perf_counter() - t0)
    print(f"\n1000-node chain of blocks: {n} nodes, {sol.params['candidates']} candidate cuts, "
          f"best of 3 solves {min(times) * 1e3:.0f} ms")
    assert validate(p, sol) == []
    assert min(times) < 2.0


def test_solve_is_deterministic() -> None:
    rng = np.random.default_rng(16)
    for _ in range(5):
        n = int(rng.integers(5, 30))
        p = make_problem(n, random_dag(rng, n), rng)
        a, b = solve(p), solve(p)
        assert np.array_equal(a.on_edge, b.on_edge) and dict(a.bits) == dict(b.bits) and a.objective == b.objective
        assert [e.values for e in a.trace] == [e.values for e in b.trace]
        ta, tb = solve_plan_table(p, [1e6, 1e7]), solve_plan_table(p, [1e6, 1e7])
        assert [x.objective for x in ta] == [y.objective for y in tb]


def test_plan_table_matches_a_solve_at_each_bandwidth() -> None:
    rng = np.random.default_rng(17)
    n = 14
    p = make_problem(n, sp_edges(rng, n), rng)
    levels = [p.bandwidth_bytes_per_s * f for f in np.logspace(-1, 1, 5)]
    for bw, plan in zip(levels, solve_plan_table(p, levels)):
        q = replace(p, bandwidth_bytes_per_s=bw)
        assert validate(q, plan) == []
        assert plan.objective == pytest.approx(solve(q).objective, rel=1e-12)
    zero = solve_plan_table(p, [0.0])[0]                      # no link: everything on the device
    assert zero.on_edge.all() and zero.bits == {}


def test_objectives_latency_and_throughput() -> None:
    rng = np.random.default_rng(18)
    for _ in range(10):
        n = int(rng.integers(3, 12))
        p = make_problem(n, random_dag(rng, n), rng)
        ref_lat = solve_enumerate(p, objective="latency")
        ref_p = solve_enumerate(p, objective="throughput")
        assert solve(p, CoachConfig(objective="latency")).metrics.latency_s == pytest.approx(ref_lat.metrics.latency_s, rel=1e-12)
        assert solve(p, CoachConfig(objective="throughput")).metrics.period_s == pytest.approx(ref_p.metrics.period_s, rel=1e-12)
    with pytest.raises(ValueError):
        solve(p, CoachConfig(objective="bubbles"))


def test_joint_accuracy_repair_raises_the_worst_tensor() -> None:
    rng = np.random.default_rng(19)
    p = make_problem(4, [(0, 1), (0, 2), (1, 3), (2, 3)], rng, epsilon=0.005)
    prep = prepare(p)
    cs = cut_structure(p, np.array([True, True, False, False]))
    drops = {v: float(p.accuracy_drop[v, SMALL_BITS.index(4)]) for v in cs.tensors}
    bits, m, steps = repair(p, prep, cs, {v: 4 for v in cs.tensors})
    assert m.accuracy_drop <= p.epsilon
    if sum(drops.values()) > p.epsilon:
        worst = max(drops, key=drops.get)
        assert steps >= 1 and bits[worst] > 4


# ----------------------------------------------------------------------------------------------- infeasible, validate

def test_memory_and_latency_infeasibility() -> None:
    rng = np.random.default_rng(20)
    n = 8
    p = make_problem(n, chain_edges(n), rng)
    need = min(edge_memory_bytes(p, m) for m in all_ideals(p))
    with pytest.raises(InfeasibleError, match="at least"):
        solve(replace(p, edge_memory_bytes=need * 0.5))
    tight = solve(replace(p, edge_memory_bytes=need))
    assert validate(replace(p, edge_memory_bytes=need), tight) == []
    late = replace(p, t_max_s=1e-6)
    sol = solve(late)
    assert not sol.feasible and "t_max_s" in sol.params["fix"]
    best = min(evaluate(late, m, {v: 32 for v in cut_tensors(late, m)}).latency_s for m in all_ideals(late))
    assert sol.metrics.latency_s <= best + 1e-12              # the min-latency cut, flagged
    assert validate(late, sol) == []


def test_validate_reports_broken_solutions() -> None:
    rng = np.random.default_rng(21)
    p = make_problem(4, [(0, 1), (0, 2), (1, 3), (2, 3)], rng)
    good = solve(p)
    assert validate(p, good) == []
    s = np.array([True, False, True, False])
    m = evaluate(p, s, {0: 32, 2: 32})

    def sol(on_edge: np.ndarray, bits: dict[int, int], metrics=m) -> SplitInferenceSolution:
        return SplitInferenceSolution(status=good.status, on_edge=on_edge, bits=bits, metrics=metrics,
                                      objective=metrics.objective_s)

    assert validate(p, sol(s, {0: 32, 2: 32})) == []
    assert any("input" in e for e in validate(p, sol(np.array([False, True, True, False]), {})))
    assert any("closed" in e for e in validate(p, sol(np.array([True, False, False, True]), {0: 32})))
    assert any("not sent" in e for e in validate(p, sol(s, {0: 32, 2: 32, 3: 8})))
    assert any("no bits" in e for e in validate(p, sol(s, {0: 32})))
    assert any("neither" in e for e in validate(p, sol(s, {0: 32, 2: 7})))
    assert any("metrics" in e for e in validate(p, sol(s, {0: 32, 2: 8})))
    nq = replace(p, quantizable=np.array([True, True, False, True]))
    assert any("non-quantisable" in e for e in validate(nq, sol(s, {0: 32, 2: 8}, evaluate(nq, s, {0: 32, 2: 8}))))
    small = replace(p, edge_memory_bytes=1.0)
    assert any("memory" in e for e in validate(small, sol(s, {0: 32, 2: 32})))



# ----------------------------------------------------------------------------------------------- objectives, bounds

def test_cpsat_bound_is_below_every_plan_for_every_objective() -> None:
    """A bound no plan beats: on DAGs where multi-tensor cuts win (fast link), CP-SAT's bound stays at or below
    COACH's plan and the exhaustive optimum, for J, the period and the latency."""
    rng = np.random.default_rng(30)
    multi_wins = 0
    for t in range(8):
        n = int(rng.integers(6, 13))
        p = make_problem(n, random_dag(rng, n), rng, bandwidth_bytes_per_s=1e12)    # the link is free
        for obj, metric in (("coach", "objective_s"), ("throughput", "period_s"), ("latency", "latency_s")):
            ref = solve_enumerate(p, objective=obj)
            plan = solve(p, CoachConfig(objective=obj))
            got = solve_cpsat(p, time_scale=1e9, objective=obj)
            bound = got.params["bound_s"]
            assert bound <= getattr(ref.metrics, metric) * (1 + 1e-9) + 1e-12
            assert bound <= getattr(plan.metrics, metric) * (1 + 1e-9) + 1e-12
            if obj != "coach":     # linear in the decisions: the MILP is exact up to ns rounding
                assert bound == pytest.approx(getattr(ref.metrics, metric), rel=1e-4, abs=1e-7)
            multi_wins += obj == "coach" and len(cut_tensors(p, ref.on_edge)) > 1
    assert multi_wins > 0, "no instance exercised a multi-tensor optimum"


def test_max_latency_and_min_throughput_constraints() -> None:
    rng = np.random.default_rng(31)
    checked = 0
    for t in range(12):
        n = int(rng.integers(4, 12))
        base = make_problem(n, random_dag(rng, n), rng)
        free_thr = solve_enumerate(base, objective="throughput")
        free_lat = solve_enumerate(base, objective="latency")
        # a latency plan under a throughput floor between the two optima's periods
        p_max = 0.5 * (free_thr.metrics.period_s + free_lat.metrics.period_s)
        p = replace(base, period_max_s=p_max)
        ref = solve_enumerate(p, objective="latency")
        sol = solve(p, CoachConfig(objective="latency"))
        assert validate(p, sol) == []
        if ref.feasible:
            assert sol.feasible and sol.metrics.period_s <= p_max * (1 + 1e-12)
            assert sol.metrics.latency_s == pytest.approx(ref.metrics.latency_s, rel=1e-12)
            checked += 1
        # a throughput plan under a latency cap between the two optima's latencies
        t_max = 0.5 * (free_thr.metrics.latency_s + free_lat.metrics.latency_s)
        q = replace(base, t_max_s=t_max)
        ref = solve_enumerate(q, objective="throughput")
        sol = solve(q, CoachConfig(objective="throughput"))
        if ref.feasible:
            assert sol.feasible and sol.metrics.latency_s <= t_max * (1 + 1e-12)
            assert sol.metrics.period_s == pytest.approx(ref.metrics.period_s, rel=1e-12)
            checked += 1
    assert checked >= 12
    # an impossible throughput floor: INFEASIBLE, the shortest period returned, and the fix names the period
    p = replace(base, period_max_s=1e-9)
    sol = solve(p, CoachConfig(objective="latency"))
    assert not sol.feasible and "period_max_s" in sol.params["fix"]
    assert sol.metrics.period_s == pytest.approx(solve_enumerate(base, objective="throughput").metrics.period_s, rel=0.05)


def test_per_request_overhead_counts_only_when_something_is_sent() -> None:
    rng = np.random.default_rng(32)
    p = make_problem(4, chain_edges(4), rng)
    q = replace(p, request_edge_s=1e-3, request_cloud_s=2e-3, request_latency_s=3e-3)
    split = np.array([True, True, False, False])
    a, b = evaluate(p, split, {}), evaluate(q, split, {})
    assert b.edge_s == pytest.approx(a.edge_s + 1e-3) and b.cloud_s == pytest.approx(a.cloud_s + 2e-3)
    assert b.latency_s == pytest.approx(a.latency_s + 6e-3)
    local = np.ones(4, dtype=bool)
    assert evaluate(q, local, {}) == evaluate(p, local, {})
    # enough overhead makes keeping everything on the device the throughput plan
    heavy = replace(p, request_edge_s=1.0, request_cloud_s=1.0)
    assert solve(heavy, CoachConfig(objective="throughput")).on_edge.all()


def test_cpsat_bound_is_deterministic_whatever_the_machine_load() -> None:
    """Same problem, same plan bytes: the bound's CP-SAT stops on its deterministic work counter, not the clock
    (a wall-clock limit made the bound, and so the plan, depend on the machine's load). The limit is set so the
    search stops before proving optimality, where a wall-clock stop would land on a different bound each run;
    a competing CPU-bound process changes the wall time of one run, not its answer."""
    rng = np.random.default_rng(5)
    n, edges = chain_of_blocks(16)
    p = make_problem(n, edges, rng, bandwidth_bytes_per_s=1e12)
    runs = [solve_cpsat(p, deterministic_limit=0.1, objective="coach", time_scale=1e9)]
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        runs.append(solve_cpsat(p, deterministic_limit=0.1, objective="coach", time_scale=1e9))
    finally:
        hog.kill()
        hog.wait()
    assert runs[0].status == Status.TIME_LIMIT and runs[0].params["bound_s"] > 0    # stopped by the limit, mid-proof
    for r in runs[1:]:
        assert (r.status, r.params["bound_s"], r.params["incumbent"], r.trace) == \
            (runs[0].status, runs[0].params["bound_s"], runs[0].params["incumbent"], runs[0].trace)
        assert not r.params["wall_backstop_hit"]
    # the wall-clock backstop, when it is what stops the search, says so
    stopped = solve_cpsat(p, deterministic_limit=1e6, wall_backstop_s=1e-3, objective="coach", time_scale=1e9)
    assert stopped.params["wall_backstop_hit"]


def test_edge_loop_cost_counts_for_every_request_cut_or_not() -> None:
    """request_loop_s adds to T_e of every cut, all-edge included, in the cost model, COACH's bound and CP-SAT."""
    rng = np.random.default_rng(3)
    base = make_problem(6, chain_edges(6), rng)
    loaded = replace(base, request_loop_s=0.004)
    for on in (np.ones(6, dtype=bool), np.array([True, True, True, False, False, False])):
        a, b = evaluate(base, on, {}), evaluate(loaded, on, {})
        assert b.edge_s == pytest.approx(a.edge_s + 0.004)
        assert b.edge_s - b.edge_overhead_s == pytest.approx(a.edge_s - a.edge_overhead_s)    # compute unchanged
    for obj in ("throughput", "latency"):
        ref = solve_enumerate(loaded, objective=obj)
        got = solve_cpsat(loaded, objective=obj, time_scale=1e9)
        metric = "period_s" if obj == "throughput" else "latency_s"
        assert got.params["bound_s"] == pytest.approx(getattr(ref.metrics, metric), rel=1e-4)


def test_robust_choice_minimises_the_worst_regret_over_the_spread() -> None:
    """Oracle: the candidate with the smallest worst regret over the corners, by brute force; a spread of (1, 1)
    keeps the plan; on a close call the nominal optimum is dropped for a cut that holds at every corner."""
    from solvers.split_inference.robust import PLAN, robust_choice, scaled

    # input + 3 nodes: all-edge (3 x 10 ms) against all-cloud (3 x 9.5 ms behind a 28.5 ms link): nominally the
    # cloud wins throughput by 5 %; with the cloud 30 % slower and the edge 20 % faster it is 54 % behind, while
    # all-edge is at worst 37 % behind (edge 30 % slower, cloud 20 % faster: the link holds the cloud at 28.5 ms)
    n = 4
    rng = np.random.default_rng(0)
    kw = dict(edge_time_s=np.array([0, 0.010, 0.010, 0.010]), cloud_time_s=np.array([0, 0.0095, 0.0095, 0.0095]),
              rtt_s=0.0, pipeline_depth=100,
              out_elements=np.full(n, 1000), quant_s_fixed_edge=0.0, quant_s_per_element_edge=0.0,
              dequant_s_fixed_cloud=0.0, dequant_s_per_element_cloud=0.0)
    p = make_problem(n, chain_edges(n), rng, **kw)
    p = replace(p, bandwidth_bytes_per_s=baselines.all_cloud(p).metrics.bytes_per_request / 0.0285)
    cloud = baselines.all_cloud(p)
    edge = baselines.all_edge(p)
    assert cloud.metrics.period_s < edge.metrics.period_s                  # the nominal optimum sends
    cands = {PLAN: cloud, "all_edge": edge}
    assert robust_choice(p, cands, "throughput", (1.0, 1.0)).chosen == PLAN
    rc = robust_choice(p, cands, "throughput", (0.8, 1.3))
    assert rc.chosen == "all_edge" and rc.worst_regret[PLAN] == pytest.approx(1.3 * 28.5 / 24)
    assert rc.worst_corner[PLAN] == (0.8, 1.3) and rc.worst_regret["all_edge"] == pytest.approx(1.3 * 30 / 28.5)
    # brute force over the corners, on random instances and every objective
    for t in range(4):
        q = make_problem(8, random_dag(rng, 8), rng)
        cs = {PLAN: solve(q, CoachConfig(objective="throughput")), **{b.name: b.solve(q) for b in baselines.BASELINES}}
        for obj, metric in (("throughput", "period_s"), ("latency", "latency_s"), ("coach", "objective_s")):
            rc = robust_choice(q, cs, obj, (0.7, 1.5))
            worst = {}
            for name, s in cs.items():
                regs = []
                for a, b in rc.corners:
                    qs = scaled(q, a, b)
                    vals = {k: getattr(evaluate(qs, v.on_edge, v.bits), metric) for k, v in cs.items()}
                    regs.append(vals[name] / min(vals.values()))
                worst[name] = max(regs)
            assert worst[rc.chosen] == pytest.approx(min(worst.values()), rel=1e-9)
            assert rc.worst_regret[rc.chosen] == pytest.approx(worst[rc.chosen], rel=1e-9)


def test_quantise_time_follows_the_calibrated_rate_of_each_bit_width() -> None:
    """Sub-byte packing is far slower per element than 8-bit: the per-bit rates replace the flat one, in the cost
    model and in CP-SAT's bound alike; widths without a rate keep the flat rate."""
    from solvers.split_inference.cost import dequantise_s, quantise_s

    rng = np.random.default_rng(4)
    base = make_problem(6, chain_edges(6), rng)
    p = replace(base, quant_s_per_element_edge_by_bits=((4, 3e-8), (8, 2e-9)),
                dequant_s_per_element_cloud_by_bits=((4, 2e-8),))
    v, n = 2, float(base.out_elements[2])
    assert quantise_s(p, v, 4) == pytest.approx(p.quant_s_fixed_edge + 3e-8 * n)
    assert quantise_s(p, v, 8) == pytest.approx(p.quant_s_fixed_edge + 2e-9 * n)
    assert quantise_s(p, v, 2) == pytest.approx(quantise_s(base, v, 2))
    assert dequantise_s(p, v, 4) == pytest.approx(p.dequant_s_fixed_cloud + 2e-8 * n)
    for obj in ("throughput", "latency"):
        ref = solve_enumerate(p, objective=obj)
        got = solve_cpsat(p, objective=obj, time_scale=1e9)
        metric = "period_s" if obj == "throughput" else "latency_s"
        assert got.params["bound_s"] == pytest.approx(getattr(ref.metrics, metric), rel=1e-4)
