"""Check every constraint of a split-inference solution without calling a solver."""
from __future__ import annotations

import math

import numpy as np

from solvers.split_inference.cost import graph_index, cut_tensors, evaluate, is_downward_closed
from solvers.split_inference.problem import SplitInferenceProblem, SplitInferenceSolution

REL_TOL = 1e-9


def _close(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= REL_TOL * max(1.0, abs(a), abs(b))


def validate(problem: SplitInferenceProblem, sol: SplitInferenceSolution) -> list[str]:
    """Violated constraints, one line each (empty when the solution is valid).

    Structure (always): inputs on the device, S downward closed, bits for exactly the sent tensors, each in
    `bits_options` ∪ {native} and not above native, integer/bool tensors raw, metrics equal to a fresh
    evaluation. Budgets (only when `sol.feasible`): edge memory, T_max, additive ΔAcc ≤ ε.
    """
    out: list[str] = []
    n = problem.num_nodes
    names = problem.node_names
    s = np.asarray(sol.on_edge)
    if s.shape != (n,) or s.dtype != bool:
        return [f"on_edge must be a bool array of shape ({n},), got {s.dtype} {s.shape}"]
    adj = graph_index(problem)
    for v in np.flatnonzero(np.asarray(problem.is_input, dtype=bool) & ~s):
        out.append(f"input {names[v]} is not on the device")
    if not is_downward_closed(problem, s, adj):
        bad = adj.dst[s[adj.dst] & ~s[adj.src]]
        out.append(f"device set is not closed under predecessors (e.g. {names[int(bad[0])]} has a cloud input)")
    sent = cut_tensors(problem, s, adj)
    extra = sorted(set(sol.bits) - set(sent))
    missing = [v for v in sent if v not in sol.bits]
    if extra:
        out.append(f"bits given for tensors that are not sent: {', '.join(names[v] for v in extra)}")
    if missing:
        out.append(f"no bits for sent tensors: {', '.join(names[v] for v in missing)}")
    for v in sent:
        if v not in sol.bits:
            continue
        b, native = int(sol.bits[v]), int(problem.native_bits[v])
        if b > native:
            out.append(f"{names[v]}: {b} bits above its native {native}")
        elif b != native and b not in problem.bits_options:
            out.append(f"{names[v]}: {b} bits is neither native nor in bits_options {problem.bits_options}")
        elif b < native and not problem.quantizable[v]:
            out.append(f"{names[v]}: non-quantisable tensor sent at {b} bits instead of native {native}")
        elif b < native and not math.isfinite(float(problem.accuracy_drop[v, problem.bits_options.index(b)])):
            out.append(f"{names[v]}: no accuracy measurement at {b} bits")
    if out:
        return out
    m = evaluate(problem, s, sol.bits, adj)
    for field in ("edge_s", "link_s", "cloud_s", "period_s", "latency_s", "objective_s", "bytes_per_request",
                  "accuracy_drop", "edge_memory_bytes"):
        got, want = getattr(sol.metrics, field), getattr(m, field)
        if not _close(got, want):
            out.append(f"metrics.{field} = {got!r} but the cost model gives {want!r}")
    if not _close(sol.objective, m.objective_s):
        out.append(f"objective {sol.objective!r} differs from J = {m.objective_s!r}")
    if sol.feasible:
        if m.edge_memory_bytes > problem.edge_memory_bytes * (1 + REL_TOL):
            out.append(f"edge memory {m.edge_memory_bytes:.0f} B exceeds the budget {problem.edge_memory_bytes:.0f} B")
        if not m.latency_s <= problem.t_max_s * (1 + REL_TOL):
            out.append(f"latency {m.latency_s:.6g} s exceeds T_max {problem.t_max_s:.6g} s")
        if m.accuracy_drop > problem.epsilon * (1 + REL_TOL):
            out.append(f"accuracy drop {m.accuracy_drop:.4g} exceeds epsilon {problem.epsilon:g}")
    return out
