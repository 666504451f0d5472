"""geo-train cost model: fragment partition, all-reduce time over the WAN, and a schedule's step time.

    T_frag(p)   = 2 (M-1)/M * bytes_p * 8 / rate + RTT          (ring all-reduce, one RTT of latency)
    S_tau       = the compute time of the tau steps a send overlaps: mean tau * t, std sqrt(tau) * sigma
                  (sigma: the measured jitter of one step; steps independent, normal approximation)
    tau         = the smallest tau with T_frag <= tau * t - z sqrt(tau) sigma for every fragment
                  (hidden in 95 % of slots, z = 1.645), capped at h - 1 (one fragment in flight, as torchft)
    exposed_p   = E[max(0, T_frag(p) - S_tau)]                   (blocked at the merge; sigma = 0: the plain
                                                                  max(0, T_frag - tau * t))
    step time   = t + (mean_p exposed_p + slot overhead) / h     (fragments sent equally often on average)
A send is hidden iff T_frag(p) <= tau * t - z sqrt(tau) sigma.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from solvers.geo_train.problem import GeoTrainProblem, ScheduleMetrics


def allreduce_s(payload_bytes: float, regions: int, rate_bps: float, rtt_s: float) -> float:
    """Seconds for a ring all-reduce of `payload_bytes` among `regions` over the WAN (0 with one region)."""
    if regions <= 1:
        return 0.0
    return 2.0 * (regions - 1) / regions * payload_bytes * 8.0 / rate_bps + rtt_s


def balanced_groups(layer_bytes: Sequence[int], first_extra: int, last_extra: int,
                    parts: int) -> tuple[tuple[int, ...], ...]:
    """Contiguous layer groups minimising the largest group's bytes (exact DP; ties: earlier cuts).

    The first group also carries `first_extra` bytes (embeddings), the last `last_extra` (head).
    """
    n = len(layer_bytes)
    if not 1 <= parts <= n:
        raise ValueError(f"cannot cut {n} layers into {parts} groups")
    pre = np.concatenate([[0], np.cumsum(layer_bytes)]).astype(float)

    def cost(i: int, j: int) -> float:   # layers i..j-1 as one group
        extra = (first_extra if i == 0 else 0) + (last_extra if j == n else 0)
        return pre[j] - pre[i] + extra

    inf = float("inf")
    best = np.full((parts + 1, n + 1), inf)
    cut = np.zeros((parts + 1, n + 1), dtype=int)
    best[0, 0] = 0.0
    for k in range(1, parts + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                v = max(best[k - 1, i], cost(i, j))
                if v < best[k, j]:
                    best[k, j], cut[k, j] = v, i
    bounds, j = [], n
    for k in range(parts, 0, -1):
        i = int(cut[k, j])
        bounds.append((i, j))
        j = i
    return tuple(tuple(range(i, j)) for i, j in reversed(bounds))


def group_bytes(problem: GeoTrainProblem, groups: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Bytes of every fragment (embeddings in the first, head in the last)."""
    out = []
    for g, layers in enumerate(groups):
        b = sum(problem.layer_bytes[i] for i in layers)
        b += problem.embed_bytes if g == 0 else 0
        b += problem.head_bytes if g == len(groups) - 1 else 0
        out.append(int(b))
    return tuple(out)


HIDE_Z = 1.645      # a send counts as hidden when it hides in 95 % of slots (one-sided normal quantile)


def hidden_within(sync_s: float, tau: int, step_s: float, jitter_s: float) -> bool:
    """Whether a sync of `sync_s` hides behind `tau` steps of mean `step_s` and std `jitter_s` (95 % of slots)."""
    return sync_s <= tau * step_s - HIDE_Z * math.sqrt(max(tau, 0)) * jitter_s + 1e-12


def expected_exposed_s(sync_s: float, tau: int, step_s: float, jitter_s: float) -> float:
    """E[max(0, sync_s - S)] with S ~ Normal(tau * step_s, tau * jitter_s^2): seconds blocked per slot."""
    gap = sync_s - tau * step_s
    sd = math.sqrt(max(tau, 0)) * jitter_s
    if sd <= 0.0:
        return max(0.0, gap)
    z = gap / sd
    return gap * 0.5 * math.erfc(-z / math.sqrt(2.0)) + sd * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def window_jitter_s(step_s: Sequence[float], window: int) -> float:
    """Effective per-step jitter for a window of `window` steps (seconds): the std of the sums of `window`
    consecutive measured steps (overlapping) over sqrt(window). For independent steps this is the per-step
    std; when load comes in phases (consecutive steps slow together) it is larger, which is what a hiding
    window of tau steps sees. 0 with fewer than window + 1 steps."""
    w = max(1, int(window))
    if len(step_s) <= w:
        return 0.0
    c = np.concatenate([[0.0], np.cumsum(np.asarray(step_s, dtype=float))])
    sums = c[w:] - c[:-w]
    return float(np.std(sums) / math.sqrt(w))


def needed_delay(problem: GeoTrainProblem, frag_bytes: Sequence[int]) -> int:
    """The smallest tau that hides every send (uncapped; `hidden_within`)."""
    t, sig = problem.pace_step_s, problem.step_jitter_s
    worst = max(allreduce_s(b, problem.num_regions, problem.link_rate_bps, problem.rtt_s) for b in frag_bytes)
    tau = max(1, math.ceil(worst / t - 1e-12))
    limit = 4 * tau + 64
    while not hidden_within(worst, tau, t, sig) and tau < limit:
        tau += 1
    return tau


def schedule_metrics(problem: GeoTrainProblem, frag_bytes: Sequence[int], sends: int, delay: int) -> ScheduleMetrics:
    """Predicted figures of one schedule: `sends` N per window of H steps, in-flight delay `delay` tau."""
    m, t, H = problem.num_regions, problem.pace_step_s, problem.inner_steps
    h = H // sends
    T = [allreduce_s(b, m, problem.link_rate_bps, problem.rtt_s) for b in frag_bytes]
    sig = problem.step_jitter_s
    exposed = [expected_exposed_s(x, delay, t, sig) for x in T]
    hidden_t = [x - e for x, e in zip(T, exposed)]
    overhead = problem.slot_overhead_s if m > 1 else 0.0
    exp_slot = float(np.mean(exposed)) + overhead
    step = t + exp_slot / h
    score = problem.score_bytes_per_fragment * len(frag_bytes)
    payload = sends * (float(np.mean(frag_bytes)) + score)
    wire = 2.0 * (m - 1) / m * payload if m > 1 else 0.0
    busy = sends * float(np.mean([x - problem.rtt_s for x in T])) if m > 1 else 0.0
    return ScheduleMetrics(
        step_time_s=step, compute_step_s=t, exposed_comm_s_per_step=exp_slot / h,
        hidden_comm_s_per_step=float(np.mean(hidden_t)) / h, fragment_sync_s=tuple(T),
        hidden=tuple(hidden_within(x, delay, t, sig) for x in T), payload_bytes_per_window=payload,
        wire_bytes_per_window=wire, link_utilisation=busy / (H * step))


def divisors(n: int) -> list[int]:
    """Positive divisors of n, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]
