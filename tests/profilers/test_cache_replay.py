"""The one-pass stack replay equals a direct simulation at every capacity, for every policy."""
from __future__ import annotations

import math

import numpy as np
import pytest

from profilers.cache_replay import _next_use, hit_curve_from_distances, replay_random, stack_distances


def direct_hit_rate(seq: np.ndarray, n: int, cap: int, policy: str, rho: float, omega: float) -> float:
    """Reference: one cache of size `cap`, evicting the lowest priority not used in this step."""
    count, last, nxt = [0] * n, [-1] * n, [seq.shape[0]] * n
    table = _next_use(seq)
    decay = math.log(1 / rho) / omega

    def key(e: int) -> tuple:
        if policy == "lru":
            return (last[e], -e)
        if policy == "lfu":
            return (count[e], last[e], -e)
        if policy == "lcp":
            return (math.log(count[e]) + last[e] * decay, last[e], -e)
        return (-nxt[e], last[e], -e)

    resident: list[int] = []
    hits = total = 0
    for t in range(seq.shape[0]):
        used = {int(e) for e in seq[t]}
        for j, e in enumerate(seq[t]):
            e = int(e)
            total += 1
            if e in resident:
                hits += 1
            elif cap > 0:
                if len(resident) < cap:
                    resident.append(e)
                else:
                    cands = [r for r in resident if r not in used]
                    if cands:
                        resident[resident.index(min(cands, key=key))] = e
            count[e] += 1
            last[e] = t
            nxt[e] = int(table[t, j])
    return hits / total


@pytest.mark.parametrize("policy", ["lcp", "lfu", "lru", "belady"])
def test_stack_replay_equals_direct_simulation(policy: str) -> None:
    rng = np.random.default_rng(11)
    for _ in range(25):
        n = int(rng.integers(3, 12))
        k = int(rng.integers(1, min(4, n) + 1))
        probs = rng.dirichlet(np.ones(n) * 0.5)
        seq = np.array([rng.choice(n, k, replace=False, p=probs) for _ in range(int(rng.integers(5, 50)))])
        dist, _, _ = stack_distances(seq, n, policy, rho=0.25, omega=3.0)
        curve = hit_curve_from_distances(dist, n)
        for cap in range(n + 1):
            assert curve[cap] == pytest.approx(direct_hit_rate(seq, n, cap, policy, 0.25, 3.0), abs=1e-12)


def test_belady_dominates_online_policies() -> None:
    rng = np.random.default_rng(12)
    n, k = 16, 2
    seq = np.array([rng.choice(n, k, replace=False, p=rng.dirichlet(np.ones(n))) for _ in range(300)])
    curves = {p: hit_curve_from_distances(stack_distances(seq, n, p)[0], n) for p in ("lcp", "lfu", "lru", "belady")}
    for p in ("lcp", "lfu", "lru"):
        assert (curves["belady"] >= curves[p] - 1e-12).all()


def test_random_eviction_bounds() -> None:
    seq = np.array([[0, 1], [2, 3], [0, 1]])
    assert replay_random(seq, 0) == 0.0
    assert replay_random(seq, 4) == pytest.approx(2 / 6)
