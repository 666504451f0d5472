"""SIMULATOR (labelled: its figures are simulated, never measurements) of MoE expert offloading.

Replays a routing trace token by token and layer by layer against the actual cache contents, the
predictor's actual hits and misses, one FIFO host->device link and one device compute queue.
It is independent of the planner: it imports nothing from `solvers/` or `profilers/`, keeps its own
cache implementation (a lazy-deletion heap per layer, where the profiler uses a stack-distance pass),
and works event by event instead of with expected values.

Timeline of one decode step, per MoE layer i:
  attention of layer i runs on the device; at its end the router dispatches (the post_attn tap):
    1. on-demand copies are queued for every activated expert whose segments are neither resident
       nor already queued (a resident top needs only its bottom);
    2. then the prefetch for layer i+1 is queued: for each predicted expert, its bottom if its top is
       resident, else the whole expert, skipping segments already resident or queued.
  The link serves copies in FIFO order at `bandwidth_bytes_per_s`; a wrong prediction occupies the link
  and delays every copy queued behind it. Expert work is split in top and bottom tasks (theta and
  1 - theta of t_x); the device runs ready tasks in release order. The layer ends when all its expert
  tasks are done; then the cache admits the tops of activated misses (evicting the lowest priority
  among experts not used in this step; prefetched-but-unused experts are not admitted).
Layers marked `cpu` keep a static set of whole experts on the device (`initial_resident`) and compute
every other activated expert on the host CPU where its weights live (llama.cpp / Fiddler style): no
link traffic, no admission.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

LABEL = "simulated: trace replay with a FIFO link model (not a measurement)"


@dataclass(frozen=True)
class SimLayer:
    """One MoE layer's configuration as the runtime would apply it."""

    capacity: int
    theta: float
    policy: str = "lcp"          # lcp | lru | lfu | belady
    prefetch: bool = True
    cpu: bool = False
    initial_resident: tuple[int, ...] = ()


@dataclass(frozen=True)
class SimConfig:
    """Timing constants (s, bytes) and per-layer settings."""

    layers: tuple[SimLayer, ...]
    expert_bytes: float
    bandwidth_bytes_per_s: float
    expert_compute_s: float
    attention_compute_s: Sequence[float]
    other_compute_s: float
    host_expert_compute_s: float | None = None
    rho: float = 0.25
    omega: float = 128.0
    perfect_prediction: bool = False


@dataclass(frozen=True)
class SimResult:
    """Simulated figures (label says so)."""

    tpot_s: float
    hit_rate: float
    bytes_per_token: float
    layer_hit_rate: np.ndarray
    layer_bytes_per_token: np.ndarray
    layer_stall_s: np.ndarray
    layer_mispredicted: np.ndarray
    layer_recall: np.ndarray
    tokens: int
    label: str = LABEL
    token_times_s: np.ndarray = field(default_factory=lambda: np.zeros(0))


class _Cache:
    """Resident expert tops of one layer with a priority eviction policy (lazy-deletion heap)."""

    def __init__(self, capacity: int, policy: str, rho: float, omega: float, future: np.ndarray | None,
                 initial: Sequence[int]) -> None:
        self.capacity = capacity
        self.policy = policy
        self.decay = math.log(1.0 / rho) / omega
        self.count: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.resident: set[int] = set()
        self.heap: list[tuple] = []
        self.future = future  # (T, k) activations, for belady only
        self.next_use: dict[int, int] = {}
        for e in list(initial)[:capacity]:
            self.resident.add(int(e))
            self._push(int(e))

    def _key(self, e: int) -> tuple:
        c, l = self.count.get(e, 0), self.last.get(e, -1)
        if self.policy == "lru":
            return (l, -e)
        if self.policy == "lfu":
            return (c, l, -e)
        if self.policy == "belady":
            return (-self.next_use.get(e, 1 << 40), l, -e)
        return ((math.log(c) if c > 0 else -1e9) + l * self.decay, l, -e)

    def _push(self, e: int) -> None:
        heapq.heappush(self.heap, (self._key(e), e))

    def touch(self, e: int, step: int, next_use: int) -> None:
        """Record an activation (counters are global, kept for evicted experts too)."""
        self.count[e] = self.count.get(e, 0) + 1
        self.last[e] = step
        self.next_use[e] = next_use
        if e in self.resident:
            self._push(e)

    def admit(self, e: int, protected: set[int]) -> bool:
        """Admit e's top, evicting the lowest-priority unprotected resident; False if impossible."""
        if self.capacity <= 0 or e in self.resident:
            return False
        if len(self.resident) < self.capacity:
            self.resident.add(e)
            self._push(e)
            return True
        deferred = []
        victim = None
        while self.heap:
            key, cand = heapq.heappop(self.heap)
            if cand not in self.resident or key != self._key(cand):
                continue  # stale entry
            if cand in protected:
                deferred.append((key, cand))
                continue
            victim = cand
            break
        for item in deferred:
            heapq.heappush(self.heap, item)
        if victim is None:
            return False
        self.resident.discard(victim)
        self.resident.add(e)
        self._push(e)
        return True


def _next_use_table(seq: np.ndarray) -> np.ndarray:
    T, k = seq.shape
    out = np.full((T, k), 1 << 40, dtype=np.int64)
    seen: dict[int, int] = {}
    for t in range(T - 1, -1, -1):
        for j in range(k):
            out[t, j] = seen.get(int(seq[t, j]), 1 << 40)
        for j in range(k):
            seen[int(seq[t, j])] = t
    return out


def simulate(experts: np.ndarray, predicted: np.ndarray, config: SimConfig, tokens: int | None = None,
             warmup: int = 0) -> SimResult:
    """Replay `experts` (T, L, k) and `predicted` (T, L, k_pf) through the configured offloading engine.

    The first `warmup` steps run (filling caches, advancing the link) but are not counted; then
    `tokens` steps are measured.
    """
    total = experts.shape[0]
    if not 0 <= warmup < total:
        raise ValueError(f"warmup {warmup} must be in [0, {total})")
    T = total if tokens is None else min(warmup + tokens, total)
    L = experts.shape[1]
    if len(config.layers) != L:
        raise ValueError(f"config has {len(config.layers)} layers, trace has {L}")
    U, bw, tx = config.expert_bytes, config.bandwidth_bytes_per_s, config.expert_compute_s
    caches = []
    nexts = []
    for i, lay in enumerate(config.layers):
        fut = _next_use_table(experts[:T, i, :]) if lay.policy == "belady" else None
        nexts.append(fut)
        caches.append(_Cache(lay.capacity if lay.theta > 0 and not lay.cpu else 0, lay.policy, config.rho,
                             config.omega, fut, () if lay.cpu else lay.initial_resident))
    hits = np.zeros(L)
    acc = np.zeros(L)
    bytes_l = np.zeros(L)
    stall = np.zeros(L)
    mispred = np.zeros(L)
    recall_hits = np.zeros(L)
    token_times = np.zeros(T)
    clock = 0.0
    link_free = 0.0
    # in-flight or arrived segments for the current step: (layer, expert, part) -> arrival time
    snap = None
    for t in range(T):
        if t == warmup and warmup > 0:
            snap = (hits.copy(), acc.copy(), bytes_l.copy(), stall.copy(), mispred.copy(), recall_hits.copy())
        t_start = clock
        clock += config.other_compute_s
        arrivals: dict[tuple[int, int, str], float] = {}
        prefetched: list[set[int]] = [set() for _ in range(L)]

        def enqueue(layer: int, e: int, part: str, nbytes: float, now: float) -> float:
            nonlocal link_free
            key = (layer, e, part)
            if key in arrivals:
                return arrivals[key]
            start = max(link_free, now)
            link_free = start + nbytes / bw
            arrivals[key] = link_free
            bytes_l[layer] += nbytes
            return link_free

        def prefetch_layer(j: int, now: float) -> None:
            lay = config.layers[j]
            if not lay.prefetch or lay.cpu:
                return
            preds = experts[t, j, :] if config.perfect_prediction else predicted[t, j, :]
            for e in preds:
                e = int(e)
                if e < 0:
                    continue
                prefetched[j].add(e)
                if e in caches[j].resident:
                    if lay.theta < 1.0:
                        enqueue(j, e, "bottom", (1.0 - lay.theta) * U, now)
                else:
                    enqueue(j, e, "whole", U, now)

        for i in range(L):
            lay = config.layers[i]
            clock += config.attention_compute_s[i]
            dispatch = clock
            act = [int(e) for e in experts[t, i, :]]
            used = set(act)
            if lay.cpu:
                if config.host_expert_compute_s is None:
                    raise ValueError("cpu layer without host_expert_compute_s")
                static = set(lay.initial_resident[: lay.capacity])
                for e in act:
                    acc[i] += 1
                    if e in static:
                        hits[i] += 1
                        clock += tx
                    else:
                        clock += config.host_expert_compute_s
                if i + 1 < L:
                    prefetch_layer(i + 1, dispatch)
                continue
            tasks: list[tuple[float, float]] = []  # (ready time, duration)
            misses = []
            for e in act:
                acc[i] += 1
                if e in prefetched[i]:
                    recall_hits[i] += 1
                if e in caches[i].resident:
                    hits[i] += 1
                    tasks.append((dispatch, lay.theta * tx))
                    if lay.theta < 1.0:
                        ready = enqueue(i, e, "bottom", (1.0 - lay.theta) * U, dispatch)
                        tasks.append((ready, (1.0 - lay.theta) * tx))
                else:
                    misses.append(e)
                    ready = enqueue(i, e, "whole", U, dispatch)
                    tasks.append((ready, tx))
            mispred[i] += len(prefetched[i] - used)
            if i + 1 < L:
                prefetch_layer(i + 1, dispatch)
            device = dispatch
            ideal = dispatch + sum(d for _, d in tasks)
            for ready, dur in sorted(tasks):
                device = max(device, ready) + dur
            stall[i] += device - ideal
            clock = device
            nu = nexts[i]
            for j, e in enumerate(act):
                caches[i].touch(e, t, int(nu[t, j]) if nu is not None else 0)
            for e in misses:
                caches[i].admit(e, used)
        token_times[t] = clock - t_start
    if snap is not None:
        hits, acc, bytes_l, stall, mispred, recall_hits = (a - b for a, b in zip(
            (hits, acc, bytes_l, stall, mispred, recall_hits), snap))
    token_times = token_times[warmup:]
    n = max(T - warmup, 1)
    n_acc = np.maximum(acc, 1)
    return SimResult(
        tpot_s=float(token_times.mean()),
        hit_rate=float(hits.sum() / max(acc.sum(), 1)),
        bytes_per_token=float(bytes_l.sum() / n),
        layer_hit_rate=hits / n_acc,
        layer_bytes_per_token=bytes_l / n,
        layer_stall_s=stall / n,
        layer_mispredicted=mispred / n,
        layer_recall=recall_hits / n_acc,
        tokens=n,
        token_times_s=token_times,
    )
