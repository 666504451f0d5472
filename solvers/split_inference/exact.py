"""Exact references for split inference (docs/split-inference.md §3 step 6).

(a) `solve_enumerate`: every downward-closed S containing the inputs × every bit vector over the ladders
    (`bits_options` below native, and native) when at most 3 tensors are sent (native bits for more),
    evaluated with the cost model (overlap simulator for multi-tensor cuts) and the additive ΔAcc.
    Graphs of at most 20 nodes.
(b) `solve_cpsat`: a MILP relaxation in CP-SAT with integer time units (every cost rounded down, every
    limit rounded up, so the MILP's optimum is never above the cost model's). Throughput (min P) and
    latency (min Lat) are linear in the decisions, so for them the MILP is exact up to that rounding. COACH's
    J is not: the bubble B_t of a multi-tensor cut comes from the overlap simulation. The MILP models it by
    B_t ≥ P − T_t for a cut that sends one tensor (exact there) and B_t ≥ max(0, T_e − T_t) for several
    (always true: B_t = |T_t − max(T_e, …)| ≥ T_e − T_t), so CP-SAT's bound `params["bound_s"]` is a true
    lower bound on J over every cut and bit vector (an earlier version charged every cut the single-tensor
    bubble, and a multi-tensor plan could beat that "bound"). The MILP's own answer is re-evaluated with the
    cost model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import product

import numpy as np

from solvers.common import InfeasibleError, Status, Stopwatch, TraceEvent
from solvers.split_inference.coach import OBJECTIVES, bit_ladder, rank_key
from solvers.split_inference.cost import (graph_index, cut_structure, dequantise_s, is_quantised, quantise_s,
                                          stage_times, tensor_accuracy_drop, tensor_bytes)
from solvers.split_inference.cuts import ideals
from solvers.split_inference.problem import SplitInferenceProblem, SplitInferenceSolution

MAX_ENUMERATE_NODES = 20


def all_ideals(problem: SplitInferenceProblem) -> list[np.ndarray]:
    """Every downward-closed device set that contains the inputs (bool masks)."""
    adj = graph_index(problem)
    n = problem.num_nodes
    inputs = np.asarray(problem.is_input, dtype=bool)
    out = []
    for s in ideals(list(range(n)), {v: adj.pred[v] for v in range(n)}):
        m = np.zeros(n, dtype=bool)
        m[sorted(s)] = True
        if (m | ~inputs).all():
            out.append(m)
    return out


def _memory_error(problem: SplitInferenceProblem, need: float) -> InfeasibleError:
    return InfeasibleError(
        f"no partition fits the edge memory budget of {problem.edge_memory_bytes / 2**20:.2f} MiB",
        f"raise the edge memory to at least {need / 2**20:.2f} MiB")


def solve_enumerate(problem: SplitInferenceProblem, objective: str = "coach", max_bit_tensors: int = 3,
                    enforce_accuracy: bool = True) -> SplitInferenceSolution:
    """Brute force over ideals × bit vectors (graphs ≤ 20 nodes); ties broken as COACH breaks them."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}")
    if problem.num_nodes > MAX_ENUMERATE_NODES:
        raise ValueError(f"enumeration is limited to {MAX_ENUMERATE_NODES} nodes, got {problem.num_nodes}")
    watch = Stopwatch()
    adj = graph_index(problem)
    best = fallback = None
    evaluated = 0
    restricted = False            # some cut had its bits fixed to native: optimal only over what was tried
    min_mem = math.inf
    for mask in all_ideals(problem):
        cs = cut_structure(problem, mask, adj)
        min_mem = min(min_mem, cs.memory_bytes)
        if cs.memory_bytes > problem.edge_memory_bytes * (1 + 1e-12):
            continue
        if len(cs.tensors) <= max_bit_tensors:
            vectors = product(*(bit_ladder(problem, v) for v in cs.tensors))
        else:
            restricted = restricted or any(len(bit_ladder(problem, v)) > 1 for v in cs.tensors)
            vectors = iter([tuple(int(problem.native_bits[v]) for v in cs.tensors)])
        for vec in vectors:
            bits = dict(zip(cs.tensors, vec))
            if enforce_accuracy and sum(tensor_accuracy_drop(problem, v, b) for v, b in bits.items()) \
                    > problem.epsilon * (1 + 1e-12):
                continue
            m = stage_times(problem, cs, bits, adj)
            evaluated += 1
            k = rank_key(objective, m, cs.tensors)
            lat_k = (round(m.latency_s, 12),) + k
            if fallback is None or lat_k < fallback[0]:
                fallback = (lat_k, mask, bits, m)
            if not (math.isfinite(m.latency_s) and m.latency_s <= problem.t_max_s * (1 + 1e-12)
                    and m.period_s <= problem.period_max_s * (1 + 1e-12)):
                continue
            if best is None or k < best[0]:
                best = (k, mask, bits, m)
    if fallback is None:
        raise _memory_error(problem, min_mem)
    feasible = best is not None
    _, mask, bits, m = best if best is not None else fallback
    status = Status.INFEASIBLE if not feasible else Status.FEASIBLE if restricted else Status.OPTIMAL
    return SplitInferenceSolution(status=status, on_edge=mask.copy(), bits=bits, metrics=m, objective=m.objective_s,
                                  wall_time_s=watch.elapsed(),
                                  trace=(TraceEvent("enumerate", 0, {"evaluated": evaluated}),),
                                  params={"method": "enumerate", "objective": objective,
                                          "max_bit_tensors": max_bit_tensors, "bits_restricted": restricted})


def solve_cpsat(problem: SplitInferenceProblem, deterministic_limit: float = 5.0, wall_backstop_s: float = 600.0,
                seed: int = 0, time_scale: float = 1e6, accuracy_scale: float = 1e9, objective: str = "coach",
                hint: SplitInferenceSolution | None = None) -> SplitInferenceSolution:
    """CP-SAT MILP relaxation (module docstring) with times in integer units of 1/time_scale s (µs by default);
    `objective` is "coach" (J), "throughput" (P) or "latency" (Lat).

    Deterministic: one worker, CP-SAT's interleaved (deterministic) search, a fixed seed and a limit in CP-SAT's
    deterministic time (`deterministic_limit`, its work counter in nominal seconds), so the same problem gives the
    same answer and bound whatever the machine's load. `wall_backstop_s` only guards against a run that never
    ends; `params["wall_backstop_hit"]` says when it, not the deterministic limit, stopped the search (then the
    answer depends on the load). A single worker without the interleaved search ran out of memory (19 GB) on
    ResNet-50's J model."""
    from ortools.sat.python import cp_model

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}")

    watch = Stopwatch()
    adj = graph_index(problem)
    n = problem.num_nodes
    bw = problem.bandwidth_bytes_per_s

    def us(t: float) -> int:          # costs round down: the MILP never charges more than the cost model
        return int(math.floor(t * time_scale + 1e-9))

    def limit(t: float) -> int:       # limits round up: the MILP never excludes what the cost model allows
        return int(math.ceil(t * time_scale * (1 + 1e-12)))

    model = cp_model.CpModel()
    # [Variable] x_v = 1: node v runs on the device
    x = [model.new_bool_var(f"x_{v}") for v in range(n)]
    # [Constraint] inputs on the device
    for v in np.flatnonzero(np.asarray(problem.is_input, dtype=bool)):
        model.add(x[int(v)] == 1)
    # [Constraint] downward closure: x_w ≤ x_v for (v, w) ∈ E
    for v, w in zip(adj.src, adj.dst):
        model.add(x[int(w)] <= x[int(v)])
    # [Variable] y_v = 1: tensor v is sent; z_{v,b}: sent at b bits
    y: dict[int, cp_model.IntVar] = {}
    z: dict[tuple[int, int], cp_model.IntVar] = {}
    for v in range(n):
        if not adj.succ[v]:
            continue
        y[v] = model.new_bool_var(f"y_{v}")
        # [Constraint] y_v = x_v ∧ (some consumer in the cloud); both upper bounds keep −T_t from rewarding sends
        model.add(y[v] <= x[v])
        model.add(y[v] <= sum(1 - x[w] for w in adj.succ[v]))
        for w in adj.succ[v]:
            model.add(y[v] >= x[v] - x[w])
        # [Constraint] one bit width per sent tensor
        for b in bit_ladder(problem, v):
            z[v, b] = model.new_bool_var(f"z_{v}_{b}")
        model.add(sum(z[v, b] for b in bit_ladder(problem, v)) == y[v])
    # [Variable] any_sent = 1 when V_p ≠ ∅ (RTT/2 is paid once)
    any_sent = model.new_bool_var("any_sent")
    for v in y:
        model.add(any_sent >= y[v])
    model.add(any_sent <= sum(y.values()))
    te = [us(float(t)) for t in problem.edge_time_s]
    tc = [us(float(t)) for t in problem.cloud_time_s]
    big = sum(te) + sum(tc)
    link = {}
    for (v, b) in z:
        link[v, b] = us(tensor_bytes(problem, v, b) / bw) if bw > 0 else 10 ** 15
        big += us(quantise_s(problem, v, b)) + us(dequantise_s(problem, v, b)) + link[v, b]
    o_e, o_c, o_l = us(problem.request_edge_s), us(problem.request_cloud_s), us(problem.request_latency_s)
    big += us(problem.rtt_s) + o_e + o_c + o_l + us(problem.request_loop_s) + 1
    T_e = model.new_int_var(0, big, "T_e")
    T_t = model.new_int_var(0, big, "T_t")
    T_c = model.new_int_var(0, big, "T_c")
    P = model.new_int_var(0, 2 * big + us(problem.result_bytes / problem.downlink_bytes_per_s + problem.rtt_s), "P")
    D = model.new_int_var(0, big, "D")
    # [Constraint] stage times (docs/split-inference.md §2)
    model.add(T_e == sum(te[v] * x[v] for v in range(n)) + o_e * any_sent + us(problem.request_loop_s)
              + sum(us(quantise_s(problem, v, b)) * z[v, b] for (v, b) in z if is_quantised(problem, v, b)))
    model.add(T_c == sum(tc[v] * (1 - x[v]) for v in range(n)) + o_c * any_sent
              + sum(us(dequantise_s(problem, v, b)) * z[v, b] for (v, b) in z if is_quantised(problem, v, b)))
    model.add(T_t == sum(link[v, b] * z[v, b] for (v, b) in z))       # busy time; RTT/2 counts in the latency
    # [Constraint] P = max stage, D = |T_e − T_c|
    for t in (T_e, T_t, T_c):
        model.add(P >= t)
    model.add(D >= T_e - T_c)
    model.add(D >= T_c - T_e)
    # [Constraint] Lat (cost.stage_sums): the stages, RTT/2 and the runtime's round trip when anything is sent,
    # the return leg when the output is in the cloud
    ret = us(problem.result_bytes / problem.downlink_bytes_per_s + problem.rtt_s / 2)
    Lat = model.new_int_var(0, 2 * big + ret, "Lat")
    model.add(Lat == T_e + T_t + (us(problem.rtt_s / 2) + o_l) * any_sent + T_c + ret * (1 - x[problem.output_node]))
    # [Constraint] the window: depth requests in flight, each holding a slot for its latency (P ≥ Lat / depth)
    model.add(max(1, problem.pipeline_depth) * P >= Lat)
    # [Constraint] latency bound (--max-latency) and period bound (--min-throughput)
    if math.isfinite(problem.t_max_s):
        model.add(Lat <= limit(problem.t_max_s))
    if math.isfinite(problem.period_max_s):
        model.add(P <= limit(problem.period_max_s))
    # [Constraint] additive accuracy drop ≤ ε (drops rounded down, ε up)
    drops = {(v, b): tensor_accuracy_drop(problem, v, b) for (v, b) in z}
    model.add(sum(int(math.floor(d * accuracy_scale)) * z[k] for k, d in drops.items() if d > 0)
              <= int(math.ceil(problem.epsilon * accuracy_scale)))
    # [Constraint] edge memory: Σ params on the device + the largest device activation
    act = model.new_int_var(0, int(np.ceil(problem.out_bytes.max())) if n else 0, "max_activation")
    for v in range(n):
        model.add(act >= int(np.ceil(problem.out_bytes[v])) * x[v])
    model.add(sum(int(np.ceil(problem.param_bytes[v])) * x[v] for v in range(n)) + act
              <= int(np.floor(problem.edge_memory_bytes)))
    # [Variable] a = 1 when every node runs on the device; w = P * a
    a = model.new_bool_var("all_device")
    for v in range(n):
        model.add(a <= x[v])
    model.add(a >= sum(x) - (n - 1))
    w = model.new_int_var(0, big, "P_all_device")
    model.add(w <= P)
    model.add(w <= big * a)
    model.add(w >= P - big * (1 - a))
    # [Variable] multi = 1 when two or more tensors are sent; B_t the link's bubble
    multi = model.new_bool_var("multi_tensor")
    model.add(sum(y.values()) >= 2 * multi)
    model.add(sum(y.values()) <= 1 + len(y) * multi)
    Bt = model.new_int_var(0, big, "B_t")
    # [Constraint] B_t = P − T_t for one tensor (exact); B_t ≥ T_e − T_t for any cut (a valid lower bound)
    model.add(Bt >= P - T_t - big * multi)
    model.add(Bt >= T_e - T_t)
    if objective == "throughput":
        model.minimize(P)
    elif objective == "latency":
        model.minimize(Lat)
    else:
        # [Objective] J = D + B_t + P; all-device: J = P (no inter-stage bubbles, see cost.py)
        model.minimize(D + Bt + P - 2 * w)
    if hint is not None:            # a known plan (COACH's) as a starting point: CP-SAT then works on the bound
        on = np.asarray(hint.on_edge, dtype=bool)
        for v in range(n):
            model.add_hint(x[v], bool(on[v]))
        for (v, b), var in z.items():
            model.add_hint(var, int(hint.bits.get(v, -1)) == b and v in hint.bits)
        for v, var in y.items():
            model.add_hint(var, v in hint.bits)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.interleave_search = True
    solver.parameters.random_seed = seed
    solver.parameters.max_deterministic_time = float(deterministic_limit)
    solver.parameters.max_time_in_seconds = float(wall_backstop_s)
    status = solver.solve(model)
    # unproven and short of the deterministic limit: the wall clock stopped it
    backstop = status not in (cp_model.OPTIMAL, cp_model.INFEASIBLE) and solver.deterministic_time < deterministic_limit
    if status == cp_model.INFEASIBLE:
        raise InfeasibleError("the MILP has no feasible partition under the edge memory, T_max and epsilon",
                              "raise the edge memory or t_max_s (solve with COACH to see the min-latency plan)")
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.UNKNOWN):
        raise RuntimeError(f"CP-SAT returned {solver.status_name(status)}")
    # floors only lower P and Lat; J's |T_e − T_c| and −T_t can move either way by the rounded terms
    slack = 2 * (n + len(z) + 4) if objective == "coach" else 0
    incumbent = status != cp_model.UNKNOWN          # UNKNOWN: the time ran out before any solution; the bound holds
    mask = np.array([bool(solver.value(x[v])) for v in range(n)]) if incumbent else np.ones(n, dtype=bool)
    bits = {v: b for (v, b), var in z.items() if solver.value(var)} if incumbent else {}
    cs = cut_structure(problem, mask, adj)
    m = stage_times(problem, cs, bits, adj)
    st = Status.OPTIMAL if status == cp_model.OPTIMAL else Status.TIME_LIMIT
    return SplitInferenceSolution(status=st, on_edge=mask, bits=bits, metrics=m, objective=m.objective_s,
                                  wall_time_s=watch.elapsed(),
                                  trace=(TraceEvent("cpsat", 0, {"status": solver.status_name(status),
                                                                 "deterministic_s": round(solver.deterministic_time, 6)}),),
                                  params={"method": "cpsat", "objective": objective, "incumbent": incumbent,
                                          "deterministic_limit": float(deterministic_limit),
                                          "wall_backstop_hit": bool(backstop),
                                          "milp_objective_s": solver.objective_value / time_scale if incumbent else None,
                                          # every rounded term moves |T_e − T_c| or −T_t by < 1 unit: subtract
                                          # that slack so the bound holds for the unrounded cost model too
                                          "bound_s": max(0.0, solver.best_objective_bound - slack) / time_scale,
                                          "time_scale": time_scale})


@dataclass(frozen=True)
class SplitExactReference:
    """The exact reference the planner reports as the bound: enumeration up to `max_enumerate_nodes` nodes,
    CP-SAT (limited in deterministic time, integer nanoseconds) up to `max_cpsat_nodes`, nothing above."""

    name: str = "exact"
    max_enumerate_nodes: int = 20
    max_cpsat_nodes: int = 600

    def unsupported(self, problem: SplitInferenceProblem) -> str | None:
        """Why no exact reference runs on this instance, or None."""
        if problem.num_nodes > self.max_cpsat_nodes:
            return f"{problem.num_nodes} nodes is above the {self.max_cpsat_nodes}-node CP-SAT limit"
        return None

    def solve(self, problem: SplitInferenceProblem, deterministic_limit: float, objective: str = "coach",
              hint: SplitInferenceSolution | None = None, wall_backstop_s: float = 600.0) -> SplitInferenceSolution:
        """Exhaustive enumeration on small graphs, else CP-SAT, for `objective`. `params["bound_s"]` is the value in
        seconds of the objective (J, P or Lat), `params["is_bound"]` whether no plan can go below it, and
        `params["kind"]` says how it was obtained."""
        if problem.num_nodes <= self.max_enumerate_nodes:
            sol = solve_enumerate(problem, objective=objective)
            m = sol.metrics
            value = {"coach": m.objective_s, "throughput": m.period_s, "latency": m.latency_s}[objective]
            restricted = bool(sol.params.get("bits_restricted"))
            kind = ("exhaustive enumeration of every cut x bit vector" if not restricted else
                    "reference, not a bound: enumeration of every cut, bits enumerated on cuts of <= 3 tensors only")
            return replace(sol, params={**sol.params, "kind": kind, "bound_s": value, "is_bound": not restricted})
        sol = solve_cpsat(problem, deterministic_limit=deterministic_limit, wall_backstop_s=wall_backstop_s,
                          time_scale=1e9, objective=objective, hint=hint)  # ns
        what = {"coach": "J with the bubble of multi-tensor cuts relaxed", "throughput": "the period, exact",
                "latency": "the latency, exact"}[objective]
        kind = f"CP-SAT MILP ({what}; additive accuracy)"
        kind += (", optimal" if sol.status == Status.OPTIMAL else
                 f", {sol.status.value} ({deterministic_limit:g} deterministic s): CP-SAT's lower bound")
        if sol.params.get("wall_backstop_hit"):
            kind += f" (stopped by the {wall_backstop_s:g} s wall-clock backstop: depends on this machine's load)"
        return replace(sol, params={**sol.params, "kind": kind, "is_bound": True})
