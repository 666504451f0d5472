"""Every constraint of a geo-train schedule, checked without a solver."""
from __future__ import annotations

from solvers.geo_train.cost import allreduce_s, group_bytes, hidden_within
from solvers.geo_train.problem import GeoTrainProblem, GeoTrainSolution


def validate(problem: GeoTrainProblem, s: GeoTrainSolution) -> list[str]:
    """Constraint violations (empty when valid)."""
    bad = []
    flat = [i for g in s.groups for i in g]
    if flat != list(range(problem.num_layers)):
        bad.append("fragments must cover every layer once, in order (contiguous groups)")
    if any(len(g) == 0 for g in s.groups):
        bad.append("a fragment holds no layer")
    if s.inner_steps % s.sends_per_window or s.slot_steps * s.sends_per_window != s.inner_steps:
        bad.append(f"h * N = {s.slot_steps} * {s.sends_per_window} != H = {s.inner_steps}")
    if len(s.groups) > s.sends_per_window:
        bad.append(f"{len(s.groups)} fragments cannot each go once in {s.sends_per_window} sends")
    if not 0 <= s.delay_steps < s.slot_steps:
        bad.append(f"tau = {s.delay_steps} must be in [0, h = {s.slot_steps})")
    if tuple(s.fragment_bytes) != group_bytes(problem, s.groups):
        bad.append("fragment bytes do not match the layer groups")
    if s.metrics is not None:
        t = problem.pace_step_s
        for p, (b, hid) in enumerate(zip(s.fragment_bytes, s.metrics.hidden)):
            T = allreduce_s(b, problem.num_regions, problem.link_rate_bps, problem.rtt_s)
            if hid != hidden_within(T, s.delay_steps, t, problem.step_jitter_s):
                bad.append(f"fragment {p}: hidden flag disagrees with T_frag {T:.4g} s vs tau*t")
    return bad
