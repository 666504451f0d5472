"""Baselines (docs/split-inference.md §3), each returning the same `SplitInferenceSolution` as COACH.

| name               | partition                                                   | bits           |
|--------------------|-------------------------------------------------------------|----------------|
| all_edge           | S = V (nothing sent)                                        | –              |
| all_cloud          | S = inputs                                                  | native         |
| neurosurgeon       | min-Lat single-tensor cut (dominator-chain vertices)        | native         |
| neurosurgeon_8bit  | Neurosurgeon's cut                                          | 8 (floats)     |
| dads               | min s–t cut for Lat on the DAG (networkx max-flow)          | native         |
| throughput_cut     | min P over COACH's candidate cuts                           | native         |
| fixed_8bit         | COACH's cut search (min J) with every float tensor at 8 bits | 8              |

A baseline follows its own policy and ignores the constraints it does not model; `feasible` says
whether its plan meets edge memory, T_max and ε (status INFEASIBLE when not), and `params["violations"]`
lists what it breaks.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from solvers.common import Baseline, Status, Stopwatch
from solvers.split_inference.coach import CoachConfig, fixed_bits_of, prepare, rank_key, solve
from solvers.split_inference.cost import graph_index, cut_structure, stage_times
from solvers.split_inference.cuts import chain_cuts, dads_cut
from solvers.split_inference.problem import SplitInferenceProblem, SplitInferenceSolution, SplitMetrics


def violations(problem: SplitInferenceProblem, m: SplitMetrics) -> list[str]:
    """Constraints a plan with metrics `m` breaks (edge memory, T_max, ε), one phrase each."""
    out = []
    if m.edge_memory_bytes > problem.edge_memory_bytes * (1 + 1e-12):
        out.append(f"edge memory {m.edge_memory_bytes:.0f} B > {problem.edge_memory_bytes:.0f} B")
    if not (m.latency_s <= problem.t_max_s * (1 + 1e-12)):
        out.append(f"latency {m.latency_s:.6g} s > T_max {problem.t_max_s:.6g} s")
    if m.period_s > problem.period_max_s * (1 + 1e-12):
        out.append(f"period {m.period_s:.6g} s > P_max {problem.period_max_s:.6g} s")
    if m.accuracy_drop > problem.epsilon * (1 + 1e-12):
        out.append(f"accuracy drop {m.accuracy_drop:.4g} > epsilon {problem.epsilon:g}")
    return out


def _solution(problem: SplitInferenceProblem, on_edge: np.ndarray, bits: Mapping[int, int], name: str,
              params: dict, watch: Stopwatch, metrics: SplitMetrics | None = None) -> SplitInferenceSolution:
    adj = graph_index(problem)
    cs = cut_structure(problem, on_edge, adj)
    full_bits = {v: int(bits.get(v, problem.native_bits[v])) for v in cs.tensors}
    m = metrics or stage_times(problem, cs, full_bits, adj)
    bad = violations(problem, m)
    return SplitInferenceSolution(status=Status.INFEASIBLE if bad else Status.FEASIBLE, on_edge=cs.on_edge.copy(),
                                  bits=full_bits, metrics=m, objective=m.objective_s, wall_time_s=watch.elapsed(),
                                  params={"baseline": name, "cut_tensors": list(cs.tensors), **params,
                                          "violations": bad})


def all_edge(problem: SplitInferenceProblem) -> SplitInferenceSolution:
    """The whole model on the device; only the result stays there."""
    w = Stopwatch()
    return _solution(problem, np.ones(problem.num_nodes, dtype=bool), {}, "all_edge", {"partition": "S = V"}, w)


def all_cloud(problem: SplitInferenceProblem) -> SplitInferenceSolution:
    """The inputs are sent at native bits (uint8 images stay uint8) and the cloud runs everything."""
    w = Stopwatch()
    return _solution(problem, np.asarray(problem.is_input, dtype=bool).copy(), {}, "all_cloud",
                     {"partition": "S = inputs", "bits": "native"}, w)


def _neurosurgeon_cut(problem: SplitInferenceProblem) -> np.ndarray:
    adj = graph_index(problem)
    best = None
    for m in chain_cuts(problem, adj):
        cs = cut_structure(problem, m, adj)
        if cs.memory_bytes > problem.edge_memory_bytes * (1 + 1e-12):
            continue
        met = stage_times(problem, cs, {}, adj)
        k = rank_key("latency", met, cs.tensors)
        if best is None or k < best[0]:
            best = (k, m)
    if best is None:                     # nothing fits the memory: the smallest device part
        return np.asarray(problem.is_input, dtype=bool).copy()
    return best[1]


def neurosurgeon(problem: SplitInferenceProblem) -> SplitInferenceSolution:
    """Latency-optimal single cut: one tensor sent, the cut on the sink's dominator chain, native bits."""
    w = Stopwatch()
    return _solution(problem, _neurosurgeon_cut(problem), {}, "neurosurgeon",
                     {"search": "dominator-chain vertices", "criterion": "min latency", "bits": "native"}, w)


def neurosurgeon_8bit(problem: SplitInferenceProblem) -> SplitInferenceSolution:
    """Neurosurgeon's cut with every quantisable (float) cut tensor sent at 8 bits."""
    w = Stopwatch()
    mask = _neurosurgeon_cut(problem)
    cs = cut_structure(problem, mask)
    return _solution(problem, mask, fixed_bits_of(problem, cs, 8), "neurosurgeon_8bit",
                     {"search": "dominator-chain vertices", "criterion": "min latency at native bits", "bits": 8}, w)


def dads(problem: SplitInferenceProblem) -> SplitInferenceSolution:
    """DADS: min s–t cut of Σ_S t_e + Σ_{V∖S} t_c + transfer, then compared with all-device.

    The cut value leaves out RTT and the result's return leg, which every plan that sends something pays
    and the all-device plan does not, so the lower latency of the two is the exact min-latency partition.
    """
    w = Stopwatch()
    adj = graph_index(problem)
    cut = dads_cut(problem, adj)
    everything = np.ones(problem.num_nodes, dtype=bool)
    a = stage_times(problem, cut_structure(problem, cut, adj), {}, adj)
    b = stage_times(problem, cut_structure(problem, everything, adj), {}, adj)
    pick = cut if a.latency_s <= b.latency_s else everything
    return _solution(problem, pick, {}, "dads", {"search": "min s-t cut (max-flow)", "criterion": "min latency",
                                                 "bits": "native"}, w)


def throughput_cut(problem: SplitInferenceProblem) -> SplitInferenceSolution:
    """Min pipeline cycle P over COACH's candidate cuts (memory-feasible), native bits."""
    w = Stopwatch()
    prep = prepare(problem)
    best = None
    for cs in prep.cuts:
        met = stage_times(problem, cs, {}, prep.adj)
        k = rank_key("throughput", met, cs.tensors)
        if best is None or k < best[0]:
            best = (k, cs)
    assert best is not None
    return _solution(problem, best[1].on_edge, {}, "throughput_cut",
                     {"search": "COACH candidate cuts", "criterion": "min period", "bits": "native"}, w)


def fixed_8bit(problem: SplitInferenceProblem) -> SplitInferenceSolution:
    """COACH's cut search (min J under T_max and memory) with every float cut tensor at 8 bits, ε ignored."""
    w = Stopwatch()
    bits = 8 if 8 in problem.bits_options else int(np.max(problem.native_bits))   # 8 not measured: native
    sol = solve(problem, CoachConfig(fixed_bits=bits, enforce_accuracy=False))
    return _solution(problem, sol.on_edge, sol.bits, "fixed_8bit",
                     {"search": "COACH candidate cuts", "criterion": "min J", "bits": bits}, w)


BASELINES: tuple[Baseline, ...] = (
    Baseline("all_edge", "whole model on the device, nothing sent", all_edge),
    Baseline("all_cloud", "inputs sent at native precision, the cloud runs the whole model", all_cloud),
    Baseline("neurosurgeon", "Neurosurgeon: latency-optimal single-tensor cut on the dominator chain, native bits",
             neurosurgeon),
    Baseline("neurosurgeon_8bit", "Neurosurgeon's cut with float cut tensors quantised to 8 bits", neurosurgeon_8bit),
    Baseline("dads", "DADS: min s-t cut for latency on the DAG (max-flow), native bits", dads),
    Baseline("throughput_cut", "min pipeline cycle P over COACH's candidate cuts, native bits", throughput_cut),
    Baseline("fixed_8bit", "COACH's cut search with every float cut tensor at 8 bits (accuracy cap not enforced)",
             fixed_8bit),
)


def baseline(name: str) -> Baseline:
    """One baseline by name."""
    return next(b for b in BASELINES if b.name == name)
