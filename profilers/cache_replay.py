"""Hit-rate curves h(C) for C = 0..N by replaying a routing trace through an expert cache.

Policies (all evict the lowest-priority resident expert not used in the current step, admit the
activated expert on a miss, never admit prefetched-but-unused experts):
  lcp     MoEpic's Least-Critical-Priority: P = mu * rho**(nu / omega), mu = activations so far,
          nu = steps since last activation (rho = 0.25, omega = 128 by default)
  lfu     activation count (MoE-Infinity-style frequency cache)
  lru     last activation step (mixtral-offloading)
  belady  clairvoyant: evict the expert whose next use is furthest away (bound only)
Ties: the least recently used, then the lowest expert id, is evicted first.

Each policy's priority depends only on the access history, not on the cache size, and the
relative order of two experts changes only when one of them is activated. So the policies are stack
algorithms (Mattson et al., 1970): the resident set of a cache of size C is always contained in
that of size C+1, and one pass that maintains the "stack" yields every capacity at once. The
bubbling update below is that pass; `tests/profilers/test_cache_replay.py` checks it against a
direct per-capacity simulation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

POLICIES = ("lcp", "lfu", "lru", "belady")
DEFAULT_RHO = 0.25
DEFAULT_OMEGA = 128.0


@dataclass(frozen=True)
class ReplayResult:
    """Per-layer hit curves (L, N+1) and end-of-trace priority order (most valuable first)."""

    policy: str
    curves: np.ndarray
    final_order: tuple[tuple[int, ...], ...]


def _next_use(seq: np.ndarray) -> np.ndarray:
    """next_use[t, j]: the next step after t that activates seq[t, j] (T if none)."""
    T = seq.shape[0]
    nxt = np.full(seq.shape, T, dtype=np.int64)
    last_seen: dict[int, int] = {}
    for t in range(T - 1, -1, -1):
        for j in range(seq.shape[1]):
            e = int(seq[t, j])
            nxt[t, j] = last_seen.get(e, T)
        for j in range(seq.shape[1]):
            last_seen[int(seq[t, j])] = t
    return nxt


def stack_distances(seq: np.ndarray, num_experts: int, policy: str, rho: float = DEFAULT_RHO,
                    omega: float = DEFAULT_OMEGA) -> tuple[np.ndarray, list[int], Callable[[int], tuple]]:
    """Stack distance of every access in `seq` (T, k): the access hits in a cache of size C iff C >= d.

    First touches get d = num_experts + 1; padding entries (negative ids, a batched view's short rows) get
    d = -1 and change nothing. Returns (d, final stack, key function at the end).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy}")
    T, k = seq.shape
    count = [0] * num_experts
    last = [-1] * num_experts
    nxt_use = [T] * num_experts
    decay = math.log(1.0 / rho) / omega if policy == "lcp" else 0.0
    next_table = _next_use(seq) if policy == "belady" else None

    def key(e: int) -> tuple:
        if policy == "lru":
            return (last[e], -e)
        if policy == "lfu":
            return (count[e], last[e], -e)
        if policy == "lcp":
            return (math.log(count[e]) + last[e] * decay, last[e], -e)
        return (-nxt_use[e], last[e], -e)  # belady: sooner next use is more valuable

    # (ties: larger key survives; -e makes the lower id the smaller key, so it is evicted first)
    stack: list[int] = []
    pos_of: dict[int, int] = {}
    dist = np.empty((T, k), dtype=np.int64)
    for t in range(T):
        step = [int(e) for e in seq[t]]
        used = set(step)
        for j, x in enumerate(step):
            if x < 0:
                dist[t, j] = -1
                continue
            delta = pos_of.get(x)
            dist[t, j] = (delta + 1) if delta is not None else num_experts + 1
            end = delta if delta is not None else len(stack)  # 0-based index of x's slot (or the new slot)
            if end > 0:
                c0 = 0
                while c0 < end and stack[c0] in used:
                    c0 += 1
                if c0 < end:
                    carry = stack[c0]
                    stack[c0] = x
                    pos_of[x] = c0
                    carry_key = key(carry)
                    for i in range(c0 + 1, end):
                        s = stack[i]
                        if s in used:
                            continue
                        ks = key(s)
                        if ks < carry_key:
                            stack[i] = carry
                            pos_of[carry] = i
                            carry, carry_key = s, ks
                    if delta is None:
                        stack.append(carry)
                    else:
                        stack[end] = carry
                    pos_of[carry] = end
                elif delta is None:
                    stack.append(x)  # every smaller cache is pinned by this step; only larger ones admit x
                    pos_of[x] = end
            elif delta is None:
                stack.append(x)
                pos_of[x] = 0
            count[x] += 1
            last[x] = t
            if next_table is not None:
                nxt_use[x] = int(next_table[t, j])
    return dist, stack, key


def hit_curve_from_distances(dist: np.ndarray, num_experts: int) -> np.ndarray:
    """h(C) for C = 0..N: fraction of accesses with stack distance <= C (padding, d < 0, is not an access)."""
    d = dist.ravel()
    d = d[d >= 0]
    counts = np.bincount(np.minimum(d, num_experts + 1), minlength=num_experts + 2)
    return np.cumsum(counts)[: num_experts + 1] / max(d.size, 1)


def replay(experts: np.ndarray, num_experts: int, policy: str, rho: float = DEFAULT_RHO,
           omega: float = DEFAULT_OMEGA, warmup: int = 0) -> ReplayResult:
    """Hit curves of every layer of `experts` (T, L, k) under `policy`.

    The first `warmup` steps fill the cache but are not counted: the curves describe the steady state
    that a runtime started from the profiled resident set sees (cold-start misses excluded).
    """
    T, L, k = experts.shape
    if not 0 <= warmup < T:
        raise ValueError(f"warmup {warmup} must be in [0, {T})")
    curves = np.zeros((L, num_experts + 1))
    orders = []
    for layer in range(L):
        dist, _stack, key = stack_distances(experts[:, layer, :], num_experts, policy, rho, omega)
        curves[layer] = hit_curve_from_distances(dist[warmup:], num_experts)
        seen = sorted({int(e) for e in experts[:, layer, :].ravel() if e >= 0}, key=key, reverse=True)
        orders.append(tuple(seen))
    return ReplayResult(policy, curves, tuple(orders))


def replay_random(seq: np.ndarray, capacity: int, seed: int = 0) -> float:
    """Hit rate of random eviction at one capacity (not a stack algorithm: simulated directly)."""
    rng = np.random.default_rng(seed)
    resident: list[int] = []
    hits = total = 0
    for t in range(seq.shape[0]):
        used = {int(e) for e in seq[t]}
        for e in seq[t]:
            e = int(e)
            total += 1
            if e in resident:
                hits += 1
                continue
            if capacity == 0:
                continue
            if len(resident) < capacity:
                resident.append(e)
                continue
            victims = [i for i, r in enumerate(resident) if r not in used]
            if victims:
                resident[victims[int(rng.integers(len(victims)))]] = e
    return hits / max(total, 1)
