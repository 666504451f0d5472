"""SIMULATOR (labelled: its figures are simulated, never measurements) of MoE expert offloading.

Replays a routing trace token by token and layer by layer against the actual cache contents, the
predictor's actual hits and misses, one FIFO host->device link, one host CPU and one device compute
queue. It is independent of the planner: it imports nothing from `solvers/` or `profilers/`, keeps
its own cache implementation (a lazy-deletion heap per layer, where the profiler uses a stack-distance
pass), and works event by event instead of with expected values.

Host DRAM is shared: while the host computes and the link copies at the same time they draw on the
same peak DRAM bandwidth P; when their rates (host H, link BW) add up to more than P each is slowed
by P / (H + BW) until one of them is idle. The link is a fluid FIFO queue advanced in time order.

Timeline of one decode step, per MoE layer i:
  attention of layer i runs on the device; at its end the router dispatches (the post_attn tap).
  Layer modes:
  * gpu (MoEpic): 1. on-demand copies are queued for every activated expert whose segments are
    neither resident nor already queued (a resident top needs only its bottom); 2. then the prefetch
    for layer i+1 is queued: per predicted expert its bottom if its top is resident, else the whole
    expert. A wrong prediction occupies the link and delays every copy behind it. Expert work is
    split in top and bottom tasks (theta and 1 - theta of t_x); the device runs ready tasks in
    release order. The layer ends when all its expert tasks are done; then the cache admits the
    tops of activated misses (evicting the lowest priority among experts not used in this step).
  * cpu (llama.cpp / Fiddler style): a static set of whole experts on the device; hits run on the
    device, then the host computes every miss from host memory (one after the other, as today's
    runtime does); no admission.
  * split (our extension): the same static set; each miss's top `split` rows are copied at dispatch
    and computed on the device when they land, while the host computes its bottom rows; host and
    device work overlap; optional prefetch of the next layer's predicted misses' tops.
  * cpu / split with `dynamic` (issue 14's dynamic cache, measured in docs §10; not in the plan
    space): the resident set starts as the static set and is an LCP cache; at the previous layer's
    dispatch this layer's predicted experts that are not resident are admitted (evicting the lowest
    LCP priority among the other residents) and copied whole over the link, sharing DRAM with the
    host. An activated resident expert computes on the device once its copy has landed; in cpu mode
    one whose copy is still in flight is computed on the host instead, in split mode the device waits
    for the whole copy (it lands before a top copy queued behind it would). Misses are served as in
    the static modes and never admitted. `dc_idle_link` prefetches only while the link is idle,
    `prefetch_size` caps copies per step, `dc_background` puts the prefetches on an idealised
    low-priority stream (served only while no on-demand copy is queued, preempted at once) into a
    staging slot: a copy that has landed when its layer dispatches is admitted then (LCP eviction),
    one still in flight is cancelled (its uncopied bytes not counted), or with `dc_keep` keeps
    copying and is admitted at the first dispatch after it lands (no new prefetch for that layer meanwhile).
  * hybrimoe (HybriMoE, DAC 2025): a dynamic whole-expert cache with "minus recent score" eviction;
    per step the activated experts are split between host and device by its two-ended greedy that
    balances finish times (cached experts first to the device, uncached ones from the tail to the
    host, a middle uncached expert to the device only if loading + computing it there finishes
    first; loaded experts are admitted); after dispatch it prefetches the next layer's highest-score
    non-resident experts (`prefetch_size`).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

LABEL = "simulated: trace replay with a FIFO link and shared host DRAM (not a measurement)"


@dataclass(frozen=True)
class SimLayer:
    """One MoE layer's configuration as the runtime would apply it."""

    capacity: int
    theta: float
    policy: str = "lcp"          # lcp | lru | lfu | belady (gpu mode)
    prefetch: bool = True
    cpu: bool = False            # cpu mode (kept for older callers; same as mode="cpu")
    initial_resident: tuple[int, ...] = ()
    mode: str = ""               # gpu | cpu | split | hybrimoe ("" = gpu, or cpu when `cpu`)
    split: float = 0.0           # split mode: fraction of each miss's rows copied to the device
    prefetch_size: int = 0       # hybrimoe: experts of the next layer prefetched per step (dynamic: at most, 0 = all)
    mrs_alpha: float = 0.5       # hybrimoe: score <- alpha * routing score + (1 - alpha) * score
    dynamic: bool = False        # cpu/split: the resident set is an LCP cache (initial content: the static set)
                                 # fed by whole-expert prefetches of this layer's predicted experts
    dc_idle_link: bool = False   # dynamic: prefetch only when the link has nothing queued at dispatch
    dc_background: bool = False  # dynamic: prefetches yield to on-demand copies (idealised priority link)
    dc_keep: bool = False        # dc_background: a late prefetch keeps copying and is admitted at a later dispatch

    @property
    def kind(self) -> str:
        """The layer's mode."""
        return self.mode or ("cpu" if self.cpu else "gpu")


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
    host_dram_bytes_per_s: float | None = None   # peak host DRAM bandwidth shared by host and link (None: no cap)


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
    layer_host_bytes_per_token: np.ndarray = field(default_factory=lambda: np.zeros(0))


class _Cache:
    """Resident expert tops of one layer with a priority eviction policy (lazy-deletion heap)."""

    def __init__(self, capacity: int, policy: str, rho: float, omega: float, future: np.ndarray | None,
                 initial: Sequence[int]) -> None:
        self.capacity = capacity
        self.policy = policy
        self.decay = math.log(1.0 / rho) / omega
        self.count: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.score: dict[int, float] = {}
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
        if self.policy == "mrs":
            return (self.score.get(e, 0.0), l, -e)
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

    def decay_scores(self, alpha: float, activated: dict[int, float]) -> None:
        """MRS update: activated experts blend in their routing score, every other score decays."""
        for e in set(self.score) | set(activated):
            self.score[e] = alpha * activated.get(e, 0.0) + (1.0 - alpha) * self.score.get(e, 0.0)
        # every key changed: rebuild the heap of residents
        self.heap = [(self._key(e), e) for e in self.resident]
        heapq.heapify(self.heap)

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


class _Link:
    """FIFO host->device copies as a fluid queue, advanced in time order, sharing DRAM with the host."""

    def __init__(self, bandwidth: float, host_rate: float | None, dram: float | None) -> None:
        self.bw = bandwidth
        self.host_rate = host_rate
        self.dram = dram if dram else math.inf
        self.now = 0.0
        self.queue: list[list] = []           # [key, remaining bytes]
        self.bg: list[list] = []              # background copies: served only while `queue` is empty (preemptive)
        self.done: dict[tuple, float] = {}    # key -> arrival time (this step)

    def _rates(self, host_busy: bool) -> tuple[float, float]:
        """(link rate, host rate) while the host is busy or not."""
        if not host_busy or self.host_rate is None:
            return min(self.bw, self.dram), 0.0
        total = self.bw + self.host_rate
        scale = min(1.0, self.dram / total)
        return self.bw * scale, self.host_rate * scale

    def _run(self, until: float) -> None:
        """Copy alone (the host idle) up to time `until`."""
        rate, _ = self._rates(False)
        while (q := self._head()) and self.now < until:
            key, rem = q[0]
            need = rem / rate
            if self.now + need <= until:
                self.now += need
                self.done[key] = self.now
                q.pop(0)
            else:
                q[0][1] = rem - (until - self.now) * rate
                self.now = until
        self.now = max(self.now, until)

    def _head(self) -> list[list]:
        """The queue the link serves now (foreground first), empty when idle."""
        return self.queue if self.queue else self.bg

    def _has(self, key: tuple) -> bool:
        return any(q[0] == key for q in self.queue) or any(q[0] == key for q in self.bg)

    def enqueue(self, key: tuple, nbytes: float, now: float, background: bool = False) -> None:
        """Queue a copy at time `now` (no-op if already queued or landed); a background copy yields to
        every foreground one (an idealised chunked low-priority stream)."""
        self._run(now)
        if key in self.done or self._has(key):
            return
        if nbytes <= 0:
            self.done[key] = now
            return
        (self.bg if background else self.queue).append([key, float(nbytes)])

    def in_flight(self, key: tuple, now: float) -> bool:
        """Whether the copy `key` is still queued at time `now` (advancing the link alone up to `now`)."""
        self._run(now)
        return self._has(key)

    def queued(self, key: tuple) -> bool:
        """Whether a copy with this key is queued or landed."""
        return key in self.done or self._has(key)

    def host_phase(self, start: float, host_bytes: float) -> float:
        """The host reads `host_bytes` from `start` while the link keeps copying; returns the host's finish."""
        self._run(start)
        if host_bytes <= 0:
            return start
        if self.host_rate is None:
            raise ValueError("host work without a host rate")
        left = float(host_bytes)
        t = start
        while left > 0:
            q = self._head()
            lrate, hrate = self._rates(bool(q))
            if not q:
                hrate = min(self.host_rate, self.dram)
                t += left / hrate
                left = 0.0
                break
            key, rem = q[0]
            t_link = rem / lrate
            t_host = left / hrate
            step = min(t_link, t_host)
            t += step
            left -= step * hrate
            if t_link <= t_host:
                self.done[key] = t
                q.pop(0)
            else:
                q[0][1] = rem - step * lrate
                left = 0.0
        self.now = t
        return t

    def cancel(self, key: tuple, now: float) -> float:
        """Drop a background copy still queued at `now`; returns the bytes it did not copy (0 if it landed)."""
        self._run(now)
        for j, q in enumerate(self.bg):
            if q[0] == key:
                self.bg.pop(j)
                return float(q[1])
        return 0.0

    def in_flight_any(self, now: float) -> bool:
        """Whether any copy is still queued at time `now`."""
        self._run(now)
        return bool(self.queue or self.bg)

    def arrival(self, key: tuple) -> float:
        """When the copy `key` lands (advancing the link alone as far as needed)."""
        while key not in self.done:
            if not self._head():
                raise KeyError(f"copy {key} was never queued")
            self._run(self.now + self._head()[0][1] / self._rates(False)[0])
        return self.done[key]


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


def _device_finish(start: float, tasks: list[tuple[float, float]]) -> float:
    """The device runs ready tasks (ready time, duration) in release order from `start`."""
    device = start
    for ready, dur in sorted(tasks):
        device = max(device, ready) + dur
    return device


def hybrimoe_split(cached: list[int], uncached: list[int], gpu_s: float, cpu_s: float, move_s: float) -> tuple[list[int], list[int]]:
    """HybriMoE's intra-layer schedule (two-ended greedy, decode: one token per expert).

    The queue is the cached experts then the uncached ones. Repeatedly the head is offered to the
    device (an uncached head first waits for its copy, loads serialised on the link) and the tail to the
    host; whichever side would finish first takes its candidate. Returns (device experts, host experts).
    """
    queue = list(cached) + list(uncached)
    unc = set(uncached)
    gpu_t = cpu_t = move_t = 0.0
    gpu_q: list[int] = []
    cpu_q: list[int] = []
    while queue:
        head, tail = queue[0], queue[-1]
        g = gpu_s
        if head in unc:
            move_t_new = move_t + move_s
            g += max(0.0, move_t_new - gpu_t)
        if gpu_t + g <= cpu_t + cpu_s:
            if head in unc:
                move_t += move_s
            gpu_t += g
            gpu_q.append(head)
            queue.pop(0)
        else:
            cpu_t += cpu_s
            cpu_q.append(tail)
            queue.pop()
    return gpu_q, cpu_q


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
    U, tx = config.expert_bytes, config.expert_compute_s
    host_rate = U / config.host_expert_compute_s if config.host_expert_compute_s else None
    for lay in config.layers:
        if lay.kind in ("cpu", "split", "hybrimoe") and host_rate is None:
            raise ValueError(f"{lay.kind} layer without host_expert_compute_s")
    caches = []
    nexts = []
    for i, lay in enumerate(config.layers):
        fut = _next_use_table(experts[:T, i, :]) if lay.policy == "belady" and lay.kind == "gpu" else None
        nexts.append(fut)
        kind = lay.kind
        if kind == "gpu":
            caches.append(_Cache(lay.capacity if lay.theta > 0 else 0, lay.policy, config.rho, config.omega, fut, ()))
        elif kind == "hybrimoe":
            caches.append(_Cache(lay.capacity, "mrs", config.rho, config.omega, None, lay.initial_resident))
        elif lay.dynamic:
            caches.append(_Cache(lay.capacity, "lcp", config.rho, config.omega, None, lay.initial_resident))
        else:
            caches.append(_Cache(0, "lcp", config.rho, config.omega, None, ()))
    static = [set(lay.initial_resident[: lay.capacity]) if lay.kind in ("cpu", "split") else set()
              for lay in config.layers]
    # dynamic cpu/split layers: the cache's resident set replaces the static one (the same object, mutated)
    for i, lay in enumerate(config.layers):
        if lay.dynamic and lay.kind in ("cpu", "split"):
            static[i] = caches[i].resident
    pending: list[dict[int, tuple]] = [{} for _ in range(L)]   # dynamic layers: expert -> key of its whole copy
    hits = np.zeros(L)
    acc = np.zeros(L)
    bytes_l = np.zeros(L)
    host_l = np.zeros(L)
    stall = np.zeros(L)
    mispred = np.zeros(L)
    recall_hits = np.zeros(L)
    token_times = np.zeros(T)
    clock = 0.0
    link = _Link(config.bandwidth_bytes_per_s, host_rate, config.host_dram_bytes_per_s)
    snap = None
    for t in range(T):
        if t == warmup and warmup > 0:
            snap = (hits.copy(), acc.copy(), bytes_l.copy(), stall.copy(), mispred.copy(), recall_hits.copy(), host_l.copy())
        t_start = clock
        clock += config.other_compute_s
        # copies of this step are keyed (step, layer, expert, part); older landed keys are dropped
        link.done = {k: v for k, v in link.done.items() if k[0] == t}
        prefetched: list[set[int]] = [set() for _ in range(L)]

        def enqueue(layer: int, e: int, part: str, nbytes: float, now: float, background: bool = False) -> None:
            key = (t, layer, e, part)
            if not link.queued(key):
                bytes_l[layer] += nbytes
            link.enqueue(key, nbytes, now, background)

        def arrival(layer: int, e: int, part: str) -> float:
            return link.arrival((t, layer, e, part))

        def prefetch_layer(j: int, now: float) -> None:
            lay = config.layers[j]
            preds = experts[t, j, :] if config.perfect_prediction else predicted[t, j, :]
            if lay.dynamic and lay.kind in ("cpu", "split"):
                if not lay.prefetch or (lay.dc_idle_link and link.in_flight_any(now)) or (lay.dc_keep and pending[j]):
                    return
                want = [int(e) for e in preds if int(e) >= 0]
                copies = 0
                for e in want:
                    prefetched[j].add(e)
                    if lay.prefetch_size and copies >= lay.prefetch_size:
                        continue
                    if e in caches[j].resident:
                        continue
                    if lay.dc_background:
                        # a staging slot takes the copy; it replaces a resident only once it has landed
                        copies += 1
                        key = (t, j, e, "whole")
                        pending[j][e] = key
                        enqueue(j, e, "whole", U, now, True)
                    elif caches[j].admit(e, set(want)):
                        copies += 1
                        key = (t, j, e, "whole")
                        pending[j][e] = key
                        enqueue(j, e, "whole", U, now)
                return
            if not lay.prefetch or lay.kind in ("cpu", "hybrimoe"):
                return
            for e in preds:
                e = int(e)
                if e < 0:
                    continue
                prefetched[j].add(e)
                if lay.kind == "split":
                    if e not in static[j] and lay.split > 0:
                        enqueue(j, e, "top", lay.split * U, now)
                elif e in caches[j].resident:
                    if lay.theta < 1.0:
                        enqueue(j, e, "bottom", (1.0 - lay.theta) * U, now)
                else:
                    enqueue(j, e, "whole", U, now)

        def hybrimoe_prefetch(j: int, now: float) -> None:
            lay = config.layers[j]
            cache = caches[j]
            cands = sorted((e for e in cache.score if e not in cache.resident),
                           key=lambda e: (-cache.score[e], e))[: lay.prefetch_size]
            for e in cands:
                if cache.admit(e, set()):
                    prefetched[j].add(e)
                    enqueue(j, e, "whole", U, now)

        for i in range(L):
            lay = config.layers[i]
            kind = lay.kind
            clock += config.attention_compute_s[i]
            dispatch = clock
            act = list(dict.fromkeys(int(e) for e in experts[t, i, :] if int(e) >= 0))
            used = set(act)
            acc[i] += len(act)
            recall_hits[i] += sum(1 for e in act if e in prefetched[i])
            if lay.dynamic and kind in ("cpu", "split"):
                if lay.dc_background:
                    # landed prefetches are admitted now (LCP eviction); one still in flight is stale: cancelled
                    landed = set()
                    for e, key in list(pending[i].items()):
                        if not link.in_flight(key, dispatch):
                            landed.add(e)
                        elif not lay.dc_keep:
                            bytes_l[i] -= link.cancel(key, dispatch)
                        else:
                            continue
                        del pending[i][e]
                    for e in landed:
                        caches[i].admit(e, landed | prefetched[i])   # never evict another predicted expert
                    flying = {}
                else:
                    # landed copies are plain residents; forget evicted or landed pending entries
                    for e in list(pending[i]):
                        if e not in caches[i].resident or not link.in_flight(pending[i][e], dispatch):
                            del pending[i][e]
                    flying = {e: pending[i][e] for e in act if e in pending[i]}
            else:
                flying = {}
            if kind == "cpu":
                # a dynamic layer's expert still in flight is computed on the host (no wait)
                n_hit = sum(1 for e in act if e in static[i] and e not in flying)
                hits[i] += n_hit
                n_miss = len(act) - n_hit
                host_l[i] += n_miss * U
                if i + 1 < L:
                    prefetch_layer(i + 1, dispatch)
                # hits on the device, then the misses on the host, one after the other
                end = link.host_phase(dispatch + n_hit * tx, n_miss * U)
                stall[i] += end - dispatch - len(act) * tx
                mispred[i] += len(prefetched[i] - used)
                if lay.dynamic:
                    for e in act:
                        caches[i].touch(e, t, 0)
                clock = end
                continue
            if kind == "split":
                a = lay.split
                hit_e = [e for e in act if e in static[i]]
                miss_e = [e for e in act if e not in static[i]]
                hits[i] += len(hit_e)
                for e in miss_e:
                    if a > 0:
                        enqueue(i, e, "top", a * U, dispatch)
                if i + 1 < L:
                    prefetch_layer(i + 1, dispatch)
                host_bytes = len(miss_e) * (1.0 - a) * U
                host_l[i] += host_bytes
                host_end = link.host_phase(dispatch, host_bytes)
                # a dynamic layer's expert still in flight computes whole once its copy lands
                tasks = [(link.arrival(flying[e]) if e in flying else dispatch, tx) for e in hit_e]
                if a > 0:
                    tasks += [(arrival(i, e, "top"), a * tx) for e in miss_e]
                end = max(host_end, _device_finish(dispatch, tasks))
                mispred[i] += len(prefetched[i] - used)
                if lay.dynamic:
                    for e in act:
                        caches[i].touch(e, t, 0)
                stall[i] += end - dispatch - len(act) * tx
                clock = end
                continue
            if kind == "hybrimoe":
                cache = caches[i]
                cached = [e for e in act if e in cache.resident]
                uncached = [e for e in act if e not in cache.resident]
                hits[i] += len(cached)
                assert config.host_expert_compute_s is not None
                gpu_q, cpu_q = hybrimoe_split(cached, uncached, tx, config.host_expert_compute_s,
                                              U / config.bandwidth_bytes_per_s)
                moved = [e for e in gpu_q if e not in cache.resident]
                for e in moved:
                    enqueue(i, e, "whole", U, dispatch)
                if i + 1 < L and config.layers[i + 1].kind == "hybrimoe" and config.layers[i + 1].prefetch_size > 0:
                    hybrimoe_prefetch(i + 1, dispatch)
                host_bytes = len(cpu_q) * U
                host_l[i] += host_bytes
                host_end = link.host_phase(dispatch, host_bytes)
                tasks = [(dispatch if e in cache.resident else arrival(i, e, "whole"), tx) for e in gpu_q]
                # a prefetched expert is resident from its admission but computes only once it has landed
                tasks = [(max(r, arrival(i, e, "whole")) if link.queued((t, i, e, "whole")) else r, d)
                         for (r, d), e in zip(tasks, gpu_q)]
                end = max(host_end, _device_finish(dispatch, tasks))
                for e in act:
                    cache.touch(e, t, 0)
                for e in moved:
                    cache.admit(e, used)
                cache.decay_scores(lay.mrs_alpha, {e: 1.0 / max(len(act), 1) for e in act})
                mispred[i] += len(prefetched[i] - used)
                stall[i] += end - dispatch - len(act) * tx
                clock = end
                continue
            # gpu mode (MoEpic): on-demand copies in router order, then the next layer's prefetch
            tasks: list[tuple[float, float]] = []
            misses = []
            for e in act:
                if e in caches[i].resident:
                    hits[i] += 1
                    if lay.theta < 1.0:
                        enqueue(i, e, "bottom", (1.0 - lay.theta) * U, dispatch)
                else:
                    misses.append(e)
                    enqueue(i, e, "whole", U, dispatch)
            mispred[i] += len(prefetched[i] - used)
            if i + 1 < L:
                prefetch_layer(i + 1, dispatch)
            for e in act:
                if e in caches[i].resident:
                    tasks.append((dispatch, lay.theta * tx))
                    if lay.theta < 1.0:
                        tasks.append((arrival(i, e, "bottom"), (1.0 - lay.theta) * tx))
                else:
                    tasks.append((arrival(i, e, "whole"), tx))
            ideal = dispatch + sum(d for _, d in tasks)
            device = _device_finish(dispatch, tasks)
            stall[i] += device - ideal
            clock = device
            nu = nexts[i]
            for j, e in enumerate(int(x) for x in experts[t, i, :]):
                if e >= 0:
                    caches[i].touch(e, t, int(nu[t, j]) if nu is not None else 0)
            for e in misses:
                caches[i].admit(e, used)
        token_times[t] = clock - t_start
    if snap is not None:
        hits, acc, bytes_l, stall, mispred, recall_hits, host_l = (a - b for a, b in zip(
            (hits, acc, bytes_l, stall, mispred, recall_hits, host_l), snap))
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
        layer_host_bytes_per_token=host_l / n,
    )


# ---------------------------------------------------------------------------------------------- prefill
PREFILL_LABEL = ("simulated prefill: the prompt's routing replayed expert by expert with a FIFO link, shared host "
                 "DRAM and FLOP-bound host and device (not a measurement)")


@dataclass(frozen=True)
class PrefillSimLayer:
    """One layer's prefill as the runtime would run it."""

    resident: tuple[int, ...]      # whole experts on the device
    rule: str                      # top | threshold | host | stream | min_batch | split
    threshold: float = math.inf    # threshold rule: an expert with at least this many tokens streams
    top: int = 0                   # top rule: the `top` non-resident experts with the most tokens stream
    min_batch: int = 0             # min_batch rule: stream when the chunk has at least this many tokens
    split: float = 0.0             # split rule: fraction of each non-resident expert's rows copied


@dataclass(frozen=True)
class PrefillSimConfig:
    """Constants (s, B, FLOP) of a prefill replay."""

    layers: tuple[PrefillSimLayer, ...]
    expert_bytes: float
    bandwidth_bytes_per_s: float
    expert_flops_per_token: float
    device_flops_per_s: float
    expert_min_s: float                      # one expert on the device at least reads its bytes
    host_bytes_per_s: float | None
    host_flops_per_s: float | None
    attention_s: Sequence[float]
    other_s: float
    chunk_tokens: int | None = None          # None: the whole prompt per layer; else ubatches of this size
    host_dram_bytes_per_s: float | None = None


@dataclass(frozen=True)
class PrefillSimResult:
    """Simulated TTFT and per-layer figures (label says so)."""

    ttft_s: float
    layer_time_s: np.ndarray
    link_bytes: float
    streamed: int
    on_host: int
    label: str = PREFILL_LABEL


def _prefill_chunk(tokens: np.ndarray, lay: PrefillSimLayer, cfg: PrefillSimConfig) -> tuple[float, float, int, int]:
    """(expert-phase time, link bytes, experts streamed, experts on the host) of one chunk of one layer."""
    counts: dict[int, int] = {}
    for e in tokens.reshape(-1):
        if int(e) >= 0:
            counts[int(e)] = counts.get(int(e), 0) + 1
    n_tok = tokens.shape[0]
    res = set(lay.resident)
    dev_time = lambda c, frac=1.0: max(frac * c * cfg.expert_flops_per_token / cfg.device_flops_per_s, frac * cfg.expert_min_s)

    def host_time(c: int, frac: float = 1.0) -> float:
        if cfg.host_bytes_per_s is None or cfg.host_flops_per_s is None:
            return math.inf
        return max(frac * c * cfg.expert_flops_per_token / cfg.host_flops_per_s, frac * cfg.expert_bytes / cfg.host_bytes_per_s)

    device_tasks: list[tuple[float, float]] = []
    host_total = 0.0
    host_bytes = 0.0
    copies: list[tuple[int, float, float]] = []     # (expert, bytes, its device compute once landed)
    on_host = 0
    ranked_misses = 0
    for e in sorted(counts, key=lambda x: (-counts[x], x)):
        c = counts[e]
        if e in res:
            device_tasks.append((0.0, dev_time(c)))
            continue
        ranked_misses += 1
        if lay.rule == "split":
            if lay.split > 0:
                copies.append((e, lay.split * cfg.expert_bytes, dev_time(c, lay.split)))
            if lay.split < 1:
                host_total += host_time(c, 1.0 - lay.split)
                host_bytes += (1.0 - lay.split) * cfg.expert_bytes
                on_host += 1
            continue
        stream = (lay.rule == "stream" or (lay.rule == "threshold" and c >= lay.threshold)
                  or (lay.rule == "top" and ranked_misses <= lay.top)
                  or (lay.rule == "min_batch" and n_tok >= lay.min_batch))
        if stream:
            copies.append((e, cfg.expert_bytes, dev_time(c)))
        else:
            host_total += host_time(c)
            host_bytes += cfg.expert_bytes
            on_host += 1
    link_bytes = sum(b for _, b, _ in copies)
    # the link shares DRAM with the host while both run: the link's rate scaled when their draws exceed P
    bw = cfg.bandwidth_bytes_per_s
    if host_total > 0 and cfg.host_dram_bytes_per_s and cfg.host_bytes_per_s:
        host_draw = host_bytes / host_total                       # bytes/s the host actually reads
        if host_draw + bw > cfg.host_dram_bytes_per_s:
            bw = max(cfg.host_dram_bytes_per_s - host_draw, bw * 0.05)
    t = 0.0
    for _, nbytes, dur in copies:
        t += nbytes / bw
        device_tasks.append((t, dur))
    device = 0.0
    for ready, dur in sorted(device_tasks):
        device = max(device, ready) + dur
    return max(device, host_total), link_bytes, len(copies), on_host


def simulate_prefill(prompt: np.ndarray, cfg: PrefillSimConfig) -> PrefillSimResult:
    """Replay a prompt's routing `prompt` (T, L, k) through each layer (whole prompt or ubatch chunks)."""
    T, L, _ = prompt.shape
    if len(cfg.layers) != L:
        raise ValueError(f"config has {len(cfg.layers)} layers, the prompt {L}")
    chunk = cfg.chunk_tokens or T
    times = np.zeros(L)
    link = 0.0
    streamed = on_host = 0
    for start in range(0, T, chunk):
        part = prompt[start: start + chunk]
        for i, lay in enumerate(cfg.layers):
            dt, b, s, h = _prefill_chunk(part[:, i, :], lay, cfg)
            times[i] += cfg.attention_s[i] * part.shape[0] / T + dt
            link += b
            streamed += s
            on_host += h
    return PrefillSimResult(float(times.sum() + cfg.other_s), times, link, streamed, on_host)
