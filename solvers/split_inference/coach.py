"""COACH offline solve (docs/split-inference.md §3): candidate cuts × transmission bits between an accuracy floor and a
bubble-balancing ceiling, minimising J = B_c + B_t + P under T_max, ε and the edge memory.

    solve(problem, CoachConfig()) -> SplitInferenceSolution
    solve_plan_table(problem, bandwidths) -> one solution per bandwidth level

Steps (numbered as in docs/split-inference.md §3):
  2. candidate cuts from `cuts.candidate_cuts` plus all-device, all-cloud and (when the listing was
     partial) the DADS cut; cuts above the edge memory are dropped.
  3. floors b*(v), memoised per tensor (binary search over the bit ladder, linear scan if non-monotone).
  4. per cut, a common offset over every tensor's ladder (ladder_v[floor_v + o]) is raised by binary
     search while T_t ≤ max(T_e, T_c) and Lat ≤ T_max (the ceiling). We evaluate the floors, the
     ceiling, one offset past it, native bits and (multi-tensor cuts) the fixed 8-bit vector, and keep
     the best. For one tensor this is exact: among quantised levels J = B_c + 2·max(M, T_t) − T_t is
     V-shaped in T_t with its minimum at T_t = M = max(T_e, T_c), and native bits are evaluated apart.
  5. joint (additive) ΔAcc check with the repair loop on the `repair_top` best cuts.
  5b. [our addition] a common offset is coarse for multi-tensor cuts (gaps up to ~25 % in J against
     the exhaustive reference), so multi-tensor cuts are refined by branch and bound: in order of a
     lower bound on J over all their bit vectors, every vector of the box [floor, native] when it has at
     most `exhaustive_bits_box` points (local search otherwise), until the bound cannot beat the best.
  6. argmin J; ties: lower Lat, fewer tensors, earlier in topological order.

Every cut's best option that already passes the joint check stays in the pool, so a repair never makes
the plan worse than a cut that needed none. Pure: numpy + networkx, no I/O, deterministic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Mapping, Sequence

import numpy as np

from solvers.common import InfeasibleError, Status, Stopwatch, TraceEvent
from solvers.split_inference.cost import (CutStructure, GraphIndex, StageSums, cut_structure, graph_index,
                                          period_of, prefix_cut_structure, prefix_sums, stage_sums, stage_times,
                                          tensor_accuracy_drop, tensor_cost)
from solvers.split_inference.cuts import CutSettings, candidate_cuts, dads_cut
from solvers.split_inference.problem import SplitInferenceProblem, SplitInferenceSolution, SplitMetrics


OBJECTIVES = ("coach", "latency", "throughput")
FIXED_BITS_REFERENCE = 8  # bits of the "fixed 8-bit" baseline, also tried on every multi-tensor cut
PREFIX_EXTRA_MAX = 48     # above this many nodes past the prefix, numpy on the whole mask is faster
TIME_DIGITS = 12          # ranking rounds times to 1 ps so that equal sums in another order tie


@dataclass(frozen=True)
class CoachConfig:
    """Solver settings.

    objective: "coach" (min J), "latency" (min Lat) or "throughput" (min P).
    fixed_bits: send every quantisable cut tensor at these bits (native if lower), no floors, ceiling,
        repair or refinement; `fixed_bits=8` is the "fixed 8-bit" baseline, a value ≥ every native width
        means no quantisation. Must be one of `bits_options` otherwise.
    enforce_accuracy: require the additive ΔAcc ≤ ε (off only for baselines that ignore accuracy).
    repair_top: how many of the best cuts get the joint-accuracy repair (step 5 of docs/split-inference.md §3: 3).
    refine_max_cuts: at most this many multi-tensor cuts get the bit refinement (0: off, COACH's steps only).
    exhaustive_bits_box: refine by trying every bit vector when a cut has at most this many.
    cut_settings: limits of the candidate-cut enumeration.
    """

    objective: str = "coach"
    fixed_bits: int | None = None
    enforce_accuracy: bool = True
    repair_top: int = 3
    refine_max_cuts: int = 256
    exhaustive_bits_box: int = 512
    cut_settings: CutSettings = field(default_factory=CutSettings)


def bit_ladder(problem: SplitInferenceProblem, v: int) -> tuple[int, ...]:
    """Bits tensor v may be sent at, ascending: measured options below native, then native."""
    native = int(problem.native_bits[v])
    if not problem.quantizable[v]:
        return (native,)
    finite = np.isfinite(problem.accuracy_drop[v]).tolist()
    return tuple(b for b, ok in zip(problem.bits_options, finite) if ok and b < native) + (native,)


def _ladder_drops(problem: SplitInferenceProblem, v: int, ladder: Sequence[int]) -> list[float]:
    """ΔAcc(v alone at b) along the ladder (0 at native)."""
    row = problem.accuracy_drop[v].tolist()
    col = {b: j for j, b in enumerate(problem.bits_options)}
    return [row[col[b]] if b < ladder[-1] else 0.0 for b in ladder]


def accuracy_floor_linear(problem: SplitInferenceProblem, v: int) -> int:
    """b*(v) by a linear scan: the least ladder bits with ΔAcc(v alone) ≤ ε."""
    ladder = bit_ladder(problem, v)
    for b, d in zip(ladder, _ladder_drops(problem, v, ladder)):
        if d <= problem.epsilon:
            return b
    return ladder[-1]


def accuracy_floor(problem: SplitInferenceProblem, v: int, ladder: Sequence[int] | None = None) -> tuple[int, int]:
    """b*(v) by binary (dichotomous) search over the ladder; (bits, probes).

    Falls back to a linear scan when the probed drops are not non-increasing in bits.
    """
    ladder = ladder or bit_ladder(problem, v)
    drops = _ladder_drops(problem, v, ladder)
    lo, hi = 0, len(ladder) - 1                    # native (top) always has ΔAcc = 0
    probes: dict[int, float] = {}
    while lo < hi:
        mid = (lo + hi) // 2
        probes[mid] = drops[mid]
        if probes[mid] <= problem.epsilon:
            hi = mid
        else:
            lo = mid + 1
    seen = [probes[i] for i in sorted(probes)]
    if any(later > earlier for earlier, later in zip(seen, seen[1:])):
        return accuracy_floor_linear(problem, v), len(probes) + len(ladder)
    return ladder[lo], len(probes)


@dataclass
class Prepared:
    """What the plan table reuses across bandwidth levels: candidate cuts and the floors."""

    adj: GraphIndex
    cuts: list[CutStructure]                     # memory-feasible candidates
    ladders: dict[int, tuple[int, ...]]
    floors: dict[int, int]                       # index into the ladder
    trace: list[TraceEvent]
    num_candidates: int
    ranges: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)   # see `_tensor_range`


def prepare(problem: SplitInferenceProblem, config: CoachConfig = CoachConfig(),
            adj: GraphIndex | None = None) -> Prepared:
    """Steps 0-3: candidate cuts (plus DADS, all-device, all-cloud), the memory filter and lazy floors."""
    if config.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {config.objective!r}; use one of {', '.join(OBJECTIVES)}")
    fb = config.fixed_bits
    if fb is not None and fb not in problem.bits_options and fb < int(np.max(problem.native_bits)):
        raise ValueError(f"fixed_bits={fb} is neither in bits_options {problem.bits_options} nor native")
    adj = adj or graph_index(problem)
    n = problem.num_nodes
    found = candidate_cuts(problem, adj, lambda: dads_cut(problem, adj), config.cut_settings)
    masks = list(found.masks)
    everything = np.ones(n, dtype=bool)
    inputs_only = np.asarray(problem.is_input, dtype=bool).copy()
    baseline_masks = [inputs_only, everything]
    if not found.complete:   # a complete candidate set holds every ideal, DADS's cut included
        baseline_masks.append(found.dads if found.dads is not None else dads_cut(problem, adj))
    seen = {np.packbits(m).tobytes() for m in masks}
    for m in baseline_masks:  # the baselines' cuts are always candidates
        key = np.packbits(m).tobytes()
        if key not in seen:
            seen.add(key)
            masks.append(m)
    if found.forms is not None:                # O(|extra|) per cut in Python, O(|V|) in numpy otherwise
        pre = prefix_sums(problem, adj)
        structures = [prefix_cut_structure(problem, adj, pre, last, extra, m) if len(extra) <= PREFIX_EXTRA_MAX
                      else cut_structure(problem, m, adj) for (last, extra), m in zip(found.forms, found.masks)]
    else:
        structures = [cut_structure(problem, m, adj) for m in found.masks]
    structures += [cut_structure(problem, m, adj) for m in masks[len(found.masks):]]
    budget = problem.edge_memory_bytes
    fits = [cs for cs in structures if cs.memory_bytes <= budget * (1 + 1e-12)]
    if not fits:
        need = min(cs.memory_bytes for cs in structures)
        raise InfeasibleError(
            f"no partition fits the edge memory budget of {budget / 2**20:.2f} MiB "
            f"(the smallest device part needs {need / 2**20:.2f} MiB)",
            f"raise the edge memory to at least {need / 2**20:.2f} MiB or use a device with more memory")
    trace = [TraceEvent("candidates", 0, {"cuts": len(structures), "within_memory": len(fits),
                                          "every_ideal": found.complete})]
    prep = Prepared(adj, fits, {}, {}, trace, len(structures))
    probes = 0
    for cs in fits:
        for v in cs.tensors:
            if v not in prep.ladders:
                prep.ladders[v] = bit_ladder(problem, v)
                b, k = accuracy_floor(problem, v, prep.ladders[v])
                prep.floors[v] = prep.ladders[v].index(b)
                probes += k
    trace.append(TraceEvent("floors", 0, {"tensors": len(prep.floors), "probes": probes}))
    return prep


def rank_key(objective: str, m: SplitMetrics, tensors: Sequence[int]) -> tuple:
    """Ordering of plans: the objective, then the other of latency and period (J last), fewer tensors,
    earlier in topological order."""
    j, lat, p = (round(x, TIME_DIGITS) for x in (m.objective_s, m.latency_s, m.period_s))
    if objective == "latency":
        return (lat, p, j, len(tensors), tuple(tensors))
    if objective == "throughput":
        return (p, lat, j, len(tensors), tuple(tensors))
    return (j, lat, len(tensors), tuple(tensors))


def _within_t_max(problem: SplitInferenceProblem, latency_s: float) -> bool:
    return math.isfinite(latency_s) and latency_s <= problem.t_max_s * (1 + 1e-12)


def _within_limits(problem: SplitInferenceProblem, ss: StageSums) -> bool:
    """Latency ≤ T_max (--max-latency) and period ≤ P_max (--min-throughput)."""
    return _within_t_max(problem, ss.latency_s) and period_of(problem, ss) <= problem.period_max_s * (1 + 1e-12)


def _acc_ok(problem: SplitInferenceProblem, accuracy_drop: float, config: CoachConfig) -> bool:
    return not config.enforce_accuracy or accuracy_drop <= problem.epsilon * (1 + 1e-12)


def fixed_bits_of(problem: SplitInferenceProblem, cs: CutStructure, bits: int) -> dict[int, int]:
    """Every quantisable cut tensor at `bits` (native if that is lower or not measured)."""
    out = {}
    for v in cs.tensors:
        native = int(problem.native_bits[v])
        ok = problem.quantizable[v] and bits < native and bits in problem.bits_options and \
            math.isfinite(float(problem.accuracy_drop[v, problem.bits_options.index(bits)]))
        out[v] = bits if ok else native
    return out


def bit_options(problem: SplitInferenceProblem, prep: Prepared, cs: CutStructure,
                config: CoachConfig) -> list[tuple[dict[int, int], StageSums]]:
    """Step 4 for one cut: (bits, stage sums) at the floors, the ceiling, one offset past it, native, and
    (multi-tensor cuts) every float tensor at 8 bits.

    Offset o sends tensor v at ladder_v[min(floor_v + o, top_v)]; the ceiling is the largest o with
    T_t ≤ max(T_e, T_c) and Lat ≤ T_max (binary search on the stage sums, no simulation).
    """
    adj = prep.adj
    if config.fixed_bits is not None:
        b = fixed_bits_of(problem, cs, config.fixed_bits)
        return [(b, stage_sums(problem, cs, b, adj))]
    tensors = cs.tensors
    if not tensors:
        return [({}, stage_sums(problem, cs, {}, adj))]
    ladders = [prep.ladders[v] for v in tensors]
    floors = [prep.floors[v] for v in tensors]
    top = max(len(ld) - 1 - f for ld, f in zip(ladders, floors))
    memo: dict[int, tuple[dict[int, int], StageSums]] = {}

    def at(o: int) -> tuple[dict[int, int], StageSums]:
        if o not in memo:
            b = {v: ld[min(f + o, len(ld) - 1)] for v, ld, f in zip(tensors, ladders, floors)}
            memo[o] = (b, stage_sums(problem, cs, b, adj))
        return memo[o]

    def fills_idle_link(o: int) -> bool:
        m = at(o)[1]
        return m.link_s <= max(m.edge_s, m.cloud_s) and _within_limits(problem, m)

    m0 = at(0)[1]
    ceiling = 0
    if m0.link_s < max(m0.edge_s, m0.cloud_s) and _within_limits(problem, m0):
        lo, hi = 0, top                               # largest offset that still fills idle link time
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fills_idle_link(mid):
                lo = mid
            else:
                hi = mid - 1
        ceiling = lo
    out = [at(o) for o in sorted({0, ceiling, min(ceiling + 1, top), top})]
    if len(tensors) > 1 and FIXED_BITS_REFERENCE in problem.bits_options:
        # the fixed 8-bit vector is off the common-offset path for multi-tensor cuts; keep it in view
        b = fixed_bits_of(problem, cs, FIXED_BITS_REFERENCE)
        if all(b != o[0] for o in out) and all(ld.index(b[v]) >= f for v, ld, f in zip(tensors, ladders, floors)):
            out.append((b, stage_sums(problem, cs, b, adj)))
    return out


def repair(problem: SplitInferenceProblem, prep: Prepared, cs: CutStructure, bits: Mapping[int, int]
           ) -> tuple[dict[int, int], SplitMetrics, int]:
    """Step 5: while Σ ΔAcc > ε raise the tensor with the largest single-tensor ΔAcc by one ladder step."""
    b, ss, steps = _repair_sums(problem, prep, cs, bits)
    return b, stage_times(problem, cs, b, prep.adj, ss), steps


def _repair_sums(problem: SplitInferenceProblem, prep: Prepared, cs: CutStructure, bits: Mapping[int, int]
                 ) -> tuple[dict[int, int], StageSums, int]:
    b = dict(bits)
    ss = stage_sums(problem, cs, b, prep.adj)
    steps = 0
    while ss.accuracy_drop > problem.epsilon * (1 + 1e-12):
        worst = max(cs.tensors, key=lambda v: (tensor_accuracy_drop(problem, v, b[v]), -v))
        ladder = prep.ladders[worst]
        b[worst] = ladder[min(ladder.index(b[worst]) + 1, len(ladder) - 1)]
        ss = stage_sums(problem, cs, b, prep.adj)
        steps += 1
    return b, ss, steps


def refine(problem: SplitInferenceProblem, prep: Prepared, cs: CutStructure, seeds: Sequence[Mapping[int, int]],
           config: CoachConfig, incumbent: tuple | None = None, max_rounds: int = 64
           ) -> tuple[dict[int, int], SplitMetrics, int] | None:
    """Bits of one multi-tensor cut beyond the common offset, within [floor, native], T_max and ε.

    Every vector of the box when it has at most `config.exhaustive_bits_box` points; otherwise local search
    from each seed (best-improvement moves: one tensor ±1 ladder step, or one up and another down).
    Returns (bits, metrics, evaluations), or None when no vector meets T_max and ε.
    """
    tensors = cs.tensors
    ladders = [prep.ladders[v] for v in tensors]
    lo = [prep.floors[v] for v in tensors]
    evaluations = 0

    def score(pos: Sequence[int]) -> tuple[tuple, dict[int, int], SplitMetrics] | None:
        nonlocal evaluations
        b = {v: ld[k] for v, ld, k in zip(tensors, ladders, pos)}
        ss = stage_sums(problem, cs, b, prep.adj)
        if not _within_limits(problem, ss) or not _acc_ok(problem, ss.accuracy_drop, config):
            return None
        bar = best[0][0] if best is not None else incumbent[0] if incumbent is not None else math.inf
        if round(_primary_bound(problem, config.objective, ss), TIME_DIGITS) > bar:
            return None                                   # cannot beat the best so far: skip the simulation
        evaluations += 1
        m = stage_times(problem, cs, b, prep.adj, ss)
        return rank_key(config.objective, m, tensors), b, m

    best: tuple[tuple, dict[int, int], SplitMetrics] | None = None
    if math.prod(len(ld) - f for ld, f in zip(ladders, lo)) <= config.exhaustive_bits_box:
        for pos in product(*(range(f, len(ld)) for ld, f in zip(ladders, lo))):
            got = score(pos)
            if got is not None and (best is None or got[0] < best[0]):
                best = got
        return None if best is None else (best[1], best[2], evaluations)
    k = len(tensors)
    moves = [((i, d),) for i in range(k) for d in (-1, 1)]
    moves += [((i, 1), (j, -1)) for i in range(k) for j in range(k) if i != j]
    for seed in seeds:
        cur = [ld.index(seed[v]) for v, ld in zip(tensors, ladders)]
        here = score(cur)
        if here is None:
            continue
        for _ in range(max_rounds):
            step = None
            for mv in moves:
                pos = list(cur)
                for i, d in mv:
                    pos[i] += d
                if any(not lo[i] <= pos[i] < len(ladders[i]) for i, _ in mv):
                    continue
                got = score(pos)
                if got is not None and got[0] < (step or here)[0]:
                    step, step_pos = got, pos
            if step is None:
                break
            here, cur = step, step_pos
        if best is None or here[0] < best[0]:
            best = here
    return None if best is None else (best[1], best[2], evaluations)


def _tensor_range(problem: SplitInferenceProblem, prep: Prepared, v: int) -> tuple[float, float, float, float]:
    """(fewest bytes, most bytes, most t_q, most t_dq) of tensor v over its ladder from the floor up."""
    got = prep.ranges.get(v)
    if got is None:
        costs = [tensor_cost(problem, prep.adj, v, b) for b in prep.ladders[v][prep.floors[v]:]]
        got = (min(c[0] for c in costs), max(c[0] for c in costs), max(c[1] for c in costs), max(c[2] for c in costs))
        prep.ranges[v] = got
    return got


def cut_bound(problem: SplitInferenceProblem, prep: Prepared, cs: CutStructure, objective: str) -> float | None:
    """Lower bound on the objective of a cut over every bit vector in [floor, native]; None if no vector
    can meet T_max. T_e ∈ [E0, E0 + Σ t_q], T_c ∈ [C0, C0 + Σ t_dq], T_t between its fewest and most bytes."""
    e0, c0 = cs.edge_compute_s + problem.request_loop_s, cs.cloud_compute_s
    lo_bytes = hi_bytes = tq = tdq = 0.0
    for v in cs.tensors:
        a, b, q, dq = _tensor_range(problem, prep, v)
        lo_bytes += a
        hi_bytes += b
        tq += q
        tdq += dq
    bw = problem.bandwidth_bytes_per_s
    if cs.tensors:                                             # the runtime's per-request cost (cost.stage_sums)
        e0 += problem.request_edge_s
        c0 += problem.request_cloud_s
    half_rtt = problem.rtt_s / 2.0 + problem.request_latency_s if cs.tensors else 0.0   # latency only
    t_lo = (lo_bytes / bw if bw > 0 else math.inf) if cs.tensors else 0.0
    t_hi = (hi_bytes / bw if bw > 0 else math.inf) if cs.tensors else 0.0
    latency = e0 + c0 + t_lo + half_rtt
    if not cs.output_on_edge:
        down = problem.downlink_bytes_per_s
        latency += (problem.result_bytes / down if down > 0 else math.inf) + problem.rtt_s / 2.0
    period = max(e0, c0, t_lo, latency / max(1, problem.pipeline_depth))
    if not _within_t_max(problem, latency) or period > problem.period_max_s * (1 + 1e-12):
        return None
    if objective == "latency":
        return latency
    if objective == "throughput" or (not cs.tensors and cs.output_on_edge):
        return period  # all-device: J = P (cost.stage_times)
    return max(0.0, e0 - c0 - tdq, c0 - e0 - tq) + max(0.0, e0 - t_hi) + period


def _primary_bound(problem: SplitInferenceProblem, objective: str, ss: StageSums) -> float:
    """Lower bound on the first ranking component from the sums alone (exact for latency and throughput)."""
    if objective == "latency":
        return ss.latency_s
    period = period_of(problem, ss)
    if objective == "throughput" or (ss.link_s <= 0.0 and abs(ss.cloud_s) <= 1e-12):
        return period  # all-device (nothing sent, nothing in the cloud): J = P (cost.stage_times)
    # J = B_c + B_t + P; B_t ≥ max(0, T_e − T_t) because max(T_e, …) ≥ T_e (and the link overlap ≤ T_e)
    return abs(ss.edge_s - ss.cloud_s) + max(0.0, ss.edge_s - ss.link_s) + period


def _fallback_key(problem: SplitInferenceProblem, ss: StageSums, tensors: Sequence[int]) -> tuple:
    """Order of the plans returned when none meets the bounds: the closest to the bound that binds (the
    fastest plan under a latency bound, the shortest period under a throughput bound)."""
    lat = round(ss.latency_s, TIME_DIGITS)
    period = round(period_of(problem, ss), TIME_DIGITS)
    if math.isinf(problem.t_max_s) and math.isfinite(problem.period_max_s):
        return (period, lat, len(tensors), tuple(tensors))
    return (lat, period, len(tensors), tuple(tensors))


def select(problem: SplitInferenceProblem, prep: Prepared, config: CoachConfig = CoachConfig(),
           watch: Stopwatch | None = None) -> SplitInferenceSolution:
    """Steps 4-6 on prepared candidates (one bandwidth level).

    J needs the overlap simulation for multi-tensor cuts, so an option is simulated only when its lower
    bound B_c + max(0, T_e − T_t) + P could still place it among the `repair_top` best cuts or beat the
    best passing option.
    """
    watch = watch or Stopwatch()
    trace = list(prep.trace)
    obj = config.objective
    k_top = max(1, config.repair_top)
    top: list[tuple[tuple, int, dict[int, int], SplitMetrics]] = []       # the k best cuts (best option each)
    best_ok: tuple[tuple, int, dict[int, int], SplitMetrics] | None = None  # best option passing every check
    fallback: tuple[tuple, int, dict[int, int], StageSums] | None = None    # min Lat, when nothing meets T_max
    within = simulated = 0
    for i, cs in enumerate(prep.cuts):
        cut_best: tuple[tuple, int, dict[int, int], SplitMetrics] | None = None
        for b, ss in bit_options(problem, prep, cs, config):
            acc_ok = _acc_ok(problem, ss.accuracy_drop, config)
            if acc_ok:
                lat_key = _fallback_key(problem, ss, cs.tensors)
                if fallback is None or lat_key < fallback[0]:
                    fallback = (lat_key, i, b, ss)
            if not _within_limits(problem, ss):
                continue
            within += 1
            lb = round(_primary_bound(problem, obj, ss), TIME_DIGITS)
            rank_thr = top[-1][0][0] if len(top) >= k_top else math.inf
            cut_thr = cut_best[0][0] if cut_best is not None else math.inf
            ok_thr = best_ok[0][0] if best_ok is not None else math.inf
            if not (lb <= min(rank_thr, cut_thr) or (acc_ok and lb <= ok_thr)):
                continue
            m = stage_times(problem, cs, b, prep.adj, ss)
            simulated += len(cs.tensors) > 1
            key = rank_key(obj, m, cs.tensors)
            if cut_best is None or key < cut_best[0]:
                cut_best = (key, i, b, m)
            if acc_ok and (best_ok is None or key < best_ok[0]):
                best_ok = (key, i, b, m)
        if cut_best is not None:
            top.append(cut_best)
            top.sort(key=lambda r: r[0])
            del top[k_top:]
    trace.append(TraceEvent("evaluate", 0, {"cuts": len(prep.cuts), "options_within_t_max": within,
                                            "simulated": simulated}))
    if config.enforce_accuracy and config.fixed_bits is None:
        for r, (_, i, b, m) in enumerate(top[:config.repair_top]):
            if _acc_ok(problem, m.accuracy_drop, config):
                continue
            cs = prep.cuts[i]
            b2, m2, steps = repair(problem, prep, cs, b)
            ok = _within_t_max(problem, m2.latency_s) and m2.period_s <= problem.period_max_s * (1 + 1e-12)
            trace.append(TraceEvent("repair", r, {"cut_tensors": list(cs.tensors), "steps": steps,
                                                  "accuracy_drop": m2.accuracy_drop, "objective_s": m2.objective_s,
                                                  "within_t_max": ok}))
            key = rank_key(obj, m2, cs.tensors)
            if ok and (best_ok is None or key < best_ok[0]):
                best_ok = (key, i, b2, m2)
    if config.fixed_bits is None and config.refine_max_cuts > 0:
        # Branch and bound over multi-tensor cuts: refine in order of a bound on the objective over every bit
        # vector of the cut, until the bound cannot beat the incumbent.
        bounds = sorted((round(b, TIME_DIGITS), i) for i, cs in enumerate(prep.cuts) if len(cs.tensors) > 1
                        for b in [cut_bound(problem, prep, cs, obj)] if b is not None)
        refined = 0
        for lb, i in bounds:
            if refined >= config.refine_max_cuts or (best_ok is not None and lb > best_ok[0][0]):
                break
            cs = prep.cuts[i]
            opts = bit_options(problem, prep, cs, config)
            seeds = [_repair_sums(problem, prep, cs, opts[0][0])[0]]     # the floors, repaired
            seeds += [b for b, ss in opts if _acc_ok(problem, ss.accuracy_drop, config) and _within_limits(problem, ss)]
            got = refine(problem, prep, cs, seeds, config, best_ok[0] if best_ok is not None else None)
            refined += 1
            if got is None:
                continue
            b2, m2, evaluations = got
            key = rank_key(obj, m2, cs.tensors)
            trace.append(TraceEvent("refine", refined - 1, {"cut_tensors": list(cs.tensors), "bound_s": lb,
                                                            "evaluations": evaluations, "objective_s": m2.objective_s}))
            if best_ok is None or key < best_ok[0]:
                best_ok = (key, i, b2, m2)
        trace.append(TraceEvent("refine_summary", 0, {"multi_tensor_cuts": len(bounds), "refined": refined}))
    feasible = best_ok is not None
    if best_ok is not None:
        _, i, b, m = best_ok
    else:
        if config.enforce_accuracy and config.fixed_bits is None:
            # the floors repaired to the joint cap are often faster than any evaluated option
            for i, cs in enumerate(prep.cuts):
                floors = {v: prep.ladders[v][prep.floors[v]] for v in cs.tensors}
                b, ss, _ = _repair_sums(problem, prep, cs, floors)
                lat_key = _fallback_key(problem, ss, cs.tensors)
                if fallback is None or lat_key < fallback[0]:
                    fallback = (lat_key, i, b, ss)
        if fallback is None:   # fixed bits above ε on every memory-feasible cut
            raise InfeasibleError(
                f"every cut exceeds the accuracy-loss cap ε = {problem.epsilon:g} at {config.fixed_bits} bits",
                "raise the fixed bits, drop fixed_bits, or relax epsilon")
        _, i, b, ss = fallback
        m = stage_times(problem, prep.cuts[i], b, prep.adj, ss)
    cs = prep.cuts[i]
    trace.append(TraceEvent("select", 0, {"objective_s": m.objective_s, "latency_s": m.latency_s,
                                          "period_s": m.period_s, "cut_tensors": list(cs.tensors)}))
    params: dict = {"method": "coach", "objective": obj, "candidates": prep.num_candidates,
                    "cut_tensors": list(cs.tensors),
                    "floors": {int(v): int(prep.ladders[v][prep.floors[v]]) for v in cs.tensors},
                    "fixed_bits": config.fixed_bits, "enforce_accuracy": config.enforce_accuracy}
    if not feasible:
        fixes = []
        if m.latency_s > problem.t_max_s * (1 + 1e-12):
            fixes.append(f"raise t_max_s to at least {m.latency_s:.6g} s")
        if m.period_s > problem.period_max_s * (1 + 1e-12):
            fixes.append(f"raise period_max_s to at least {m.period_s:.6g} s")
        params["fix"] = " and ".join(fixes) or "relax epsilon"
    return SplitInferenceSolution(status=Status.FEASIBLE if feasible else Status.INFEASIBLE, on_edge=cs.on_edge.copy(),
                                  bits={int(v): int(x) for v, x in b.items()}, metrics=m, objective=m.objective_s,
                                  wall_time_s=watch.elapsed(), trace=tuple(trace), params=params)


def solve(problem: SplitInferenceProblem, config: CoachConfig = CoachConfig()) -> SplitInferenceSolution:
    """Plan the edge/cloud cut and the bits of every sent tensor (COACH offline solve)."""
    watch = Stopwatch()
    return select(problem, prepare(problem, config), config, watch)


def solve_plan_table(problem: SplitInferenceProblem, bandwidths: Sequence[float],
                     config: CoachConfig = CoachConfig()) -> list[SplitInferenceSolution]:
    """One plan per uplink bandwidth (B/s), reusing candidates and floors (only step 4-6 per level).

    The candidates include the DADS cut at the problem's own bandwidth only.
    """
    watch = Stopwatch()
    prep = prepare(problem, config)
    out = []
    for bw in bandwidths:
        level = replace(problem, bandwidth_bytes_per_s=float(bw))
        out.append(select(level, prep, config, watch))
    return out
