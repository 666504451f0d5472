"""CoCoDC's schedule: fragments P, sends per window N (slot h = H/N) and in-flight delay tau.

Every (P, N) with P <= N, N | H and h >= 2 is evaluated (the space is small: P <= max_fragments, N over
the divisors of H), so the answer is exact for the cost model: OPTIMAL. Among schedules whose exposed
communication stays within `max_exposed_fraction` of the compute step, the plan takes, among those whose
predicted step time is within `step_tie_fraction` (1 %) of the compute step of the lowest, one whose every
send is hidden (95 % of slots) if there is one, then the most model
refreshed per step (N * mean fragment bytes / H: fresher fragments, the WAN used as far as it hides), then
the smaller tau, then the lower step time, then the fewer fragments. (The tolerance matters once the steps
jitter: every schedule then has some expected exposure, a longer slot always a little less per step, and an
exact comparison would never reach the refresh rule, so N would always equal P.)

Example:
    >>> import numpy as np
    >>> from solvers.geo_train.problem import GeoTrainProblem
    >>> p = GeoTrainProblem(("a", "b"), np.array([0.1, 0.1]), 1e9, 0.05, (4_000_000,) * 4, 1_000_000,
    ...                     1_000_000, inner_steps=32)
    >>> s = solve(p)
    >>> s.sends_per_window * s.slot_steps == 32 and s.delay_steps < s.slot_steps
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from solvers.common import InfeasibleError, Status, Stopwatch, TraceEvent
from solvers.geo_train.cost import balanced_groups, divisors, group_bytes, needed_delay, schedule_metrics
from solvers.geo_train.problem import GeoTrainProblem, GeoTrainSolution


@dataclass(frozen=True)
class ScheduleConfig:
    """Knobs recorded in the plan (lam0 and kappa travel to the runtime; the search does not use them)."""

    lam0: float = 1.0
    kappa: float = 0.0          # 0: auto (the fragment's mean of g1*g1)


def _fragment_counts(problem: GeoTrainProblem) -> list[int]:
    if problem.fixed_fragments is not None:
        return [problem.fixed_fragments]
    return list(range(1, min(problem.num_layers, problem.max_fragments) + 1))


def _send_counts(problem: GeoTrainProblem, parts: int) -> list[int]:
    ns = [problem.fixed_sends] if problem.fixed_sends is not None else divisors(problem.inner_steps)
    return [n for n in ns if n >= parts and problem.inner_steps // n >= 2]


def check(problem: GeoTrainProblem) -> None:
    """Requests no schedule can meet, whatever the WAN: one line each."""
    H, L = problem.inner_steps, problem.num_layers
    P, N = problem.fixed_fragments, problem.fixed_sends
    if P is not None and P > L:
        raise InfeasibleError(f"{P} fragments asked for a model with {L} layers",
                              f"use at most {L} fragments (a fragment is a group of whole layers)")
    if N is not None and H % N:
        ok = [d for d in divisors(H) if d >= 1]
        raise InfeasibleError(f"H = {H} inner steps is not a multiple of N = {N} sends per window",
                              f"pick N among {', '.join(map(str, ok))}, or change --inner-steps")
    if N is not None and H // N < 2:
        raise InfeasibleError(f"N = {N} sends per window of H = {H} steps leaves slots of {H // N} step",
                              "a send needs a slot of at least 2 steps (tau < h); use N <= H / 2")
    if P is not None and N is not None and P > N:
        raise InfeasibleError(f"{P} fragments cannot each be sent once in {N} sends per window",
                              f"use at most {N} fragments or at least {P} sends per window")


def solve(problem: GeoTrainProblem, config: ScheduleConfig = ScheduleConfig()) -> GeoTrainSolution:
    """The best hidden schedule (see the module docstring); InfeasibleError names the rate that would do."""
    watch = Stopwatch()
    check(problem)
    t = problem.pace_step_s
    trace: list[TraceEvent] = []
    cands: list[tuple[float, float, int, int, GeoTrainSolution]] = []
    rate_needed = math.inf
    for P in _fragment_counts(problem):
        groups = balanced_groups(problem.layer_bytes, problem.embed_bytes, problem.head_bytes, P)
        fb = group_bytes(problem, groups)
        for N in _send_counts(problem, P):
            h = problem.inner_steps // N
            tau = min(needed_delay(problem, fb), h - 1)
            met = schedule_metrics(problem, fb, N, tau)
            ok = met.exposed_comm_s_per_step <= problem.max_exposed_fraction * t + 1e-15
            trace.append(TraceEvent("candidate", len(trace), {"P": P, "N": N, "h": h, "tau": tau,
                                                               "step_time_s": met.step_time_s, "ok": ok}))
            rate_needed = min(rate_needed, _rate_to_hide(problem, fb, h))
            if not ok:
                continue
            refresh = N * sum(fb) / len(fb) / problem.inner_steps
            cands.append((met.step_time_s, refresh, tau, P, GeoTrainSolution(
                status=Status.OPTIMAL, objective=met.step_time_s, metrics=met, bound=t, groups=groups,
                fragment_bytes=fb, inner_steps=problem.inner_steps, sends_per_window=N, slot_steps=h,
                delay_steps=tau, params={"lam0": config.lam0, "kappa": config.kappa})))
    if not cands:
        raise InfeasibleError(_too_slow(problem, rate_needed), _fix(problem, rate_needed))
    fastest = min(c[0] for c in cands)
    near = [c for c in cands if c[0] <= fastest + problem.step_tie_fraction * t + 1e-15]
    # refresh rounded to 9 significant digits: N/P equal gives the same bytes per step up to float error
    best = min(near, key=lambda c: (not all(c[4].metrics.hidden), -float(f"{c[1]:.9g}"), c[2], round(c[0], 12),
                                    c[3]))[4]
    return GeoTrainSolution(**{**best.__dict__, "wall_time_s": watch.elapsed(), "trace": tuple(trace)})


def _rate_to_hide(problem: GeoTrainProblem, frag_bytes: tuple[int, ...], h: int) -> float:
    """The slowest link rate (bits/s) at which every send of this fragmentation hides within tau = h - 1."""
    m, t = problem.num_regions, problem.pace_step_s
    room = (h - 1) * t - problem.rtt_s
    if m <= 1:
        return 0.0
    if room <= 0:
        return math.inf
    return 2.0 * (m - 1) / m * max(frag_bytes) * 8.0 / room


def _too_slow(problem: GeoTrainProblem, rate_needed: float) -> str:
    return (f"the WAN ({problem.link_rate_bps / 1e6:.4g} Mbit/s, RTT {problem.rtt_s * 1e3:.4g} ms) is too slow for "
            f"any schedule: the fragment sync cannot hide behind {problem.inner_steps} inner steps of "
            f"{problem.pace_step_s * 1e3:.4g} ms")


def _fix(problem: GeoTrainProblem, rate_needed: float) -> str:
    if math.isinf(rate_needed):
        steps = math.ceil(problem.rtt_s / problem.pace_step_s) + 2
        return (f"the RTT alone exceeds a slot: raise --inner-steps so a slot holds at least {steps} steps "
                f"(H >= {steps * max(1, problem.fixed_fragments or 1)})")
    return (f"a link of at least {rate_needed / 1e6:.4g} Mbit/s would hide every send (or raise --inner-steps, "
            f"or allow more exposed time with --max-exposed)")
