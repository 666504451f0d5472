"""The offloading engine: a `SegmentSource` that serves split-expert segments from a device cache,
prefetches predicted experts over the link and fetches mispredictions on demand.

Per MoE layer i (plan decisions in `LayerSettings`):
  * host store: per expert a top (3, f_top, d) and a bottom (3, f - f_top, d) contiguous tensor
    (pinned on CUDA);
  * device cache: one preallocated (C_i, 3, f_top, d) tensor of top slots, evicting by LCP priority
    mu * rho**(nu / omega) (LRU / LFU selectable), admitting the top of an activated miss, never a
    prefetched-but-unused expert;
  * predictor: at layer i-1's post_attn tap, layer i's post-attention norm and router on the
    residual; its top-k_pf experts are prefetched right after layer i-1's on-demand copies (bottoms
    of resident tops, whole experts otherwise), skipping segments resident or in flight;
  * dispatch: resident tops compute at once; each bottom waits on its copy; unpredicted experts are
    fetched on demand; copies land in a staging ring allocated once.
  * split layers: the device cache holds whole experts (a static hot set); for any other activated
    expert the top rows [0, f_top) are copied (or were prefetched) and computed on the device while its
    bottom rows are computed from host memory; the two partial outputs are summed exactly as the
    split expert's top and bottom always are.
It imports only torch (and the split-expert modules); counters feed the receipt.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from runtime.moe_offload.link import CopyJob


@dataclass(frozen=True)
class LayerSettings:
    """What the runtime applies to one MoE layer."""

    moe_index: int
    name: str
    f_top: int
    capacity: int
    prefetch: bool
    initial_resident: tuple[int, ...] = ()
    cpu_misses: bool = False   # static device set; other experts computed from host memory, never copied
    split_misses: bool = False  # static set of whole experts; a miss's rows [0, f_top) are copied and computed
                                # on the device, its rows [f_top, f) computed on the host, in the same step


@dataclass
class LayerCounters:
    """What actually happened in one layer."""

    activations: int = 0
    hits: int = 0
    misses: int = 0
    predicted: int = 0
    predicted_used: int = 0
    mispredicted: int = 0
    bytes_h2d: int = 0
    stall_s: float = 0.0
    evictions: int = 0


class DeviceCache:
    """Top-segment slots of one layer with a priority eviction policy (counters are global)."""

    def __init__(self, capacity: int, seg_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                 policy: str, rho: float, omega: float) -> None:
        self.capacity = capacity
        self.slots = torch.empty((max(capacity, 0),) + seg_shape, dtype=dtype, device=device)
        self.slot_of: dict[int, int] = {}
        self.policy = policy
        self.decay = math.log(1.0 / rho) / omega
        self.count: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def priority(self, e: int) -> tuple:
        c, l = self.count.get(e, 0), self.last.get(e, -1)
        if self.policy == "lru":
            return (l, -e)
        if self.policy == "lfu":
            return (c, l, -e)
        return ((math.log(c) if c else -1e18) + l * self.decay, l, -e)

    def touch(self, e: int, step: int) -> None:
        self.count[e] = self.count.get(e, 0) + 1
        self.last[e] = step

    def victim_slot(self, protected: set[int]) -> tuple[int, int | None] | None:
        """(slot, evicted expert or None) for a new top; None when every slot is protected."""
        if self.capacity <= 0:
            return None
        if len(self.slot_of) < self.capacity:
            used = set(self.slot_of.values())
            return next(s for s in range(self.capacity) if s not in used), None
        cands = [e for e in self.slot_of if e not in protected]
        if not cands:
            return None
        v = min(cands, key=self.priority)
        return self.slot_of[v], v


class OffloadEngine:
    """Serves segments to `SplitExperts` modules; one instance per loaded model."""

    def __init__(self, layers: list[LayerSettings], host_tops: list[dict[int, torch.Tensor]],
                 host_bottoms: list[dict[int, torch.Tensor]], link: Any, device: torch.device,
                 num_experts: int, seg_rows: int, hidden: int, dtype: torch.dtype, policy: str = "lcp",
                 rho: float = 0.25, omega: float = 128.0, staging_slots: int = 8) -> None:
        self.layers = layers
        self.host_tops = host_tops
        self.host_bottoms = host_bottoms
        self.link = link
        self.device = device
        self.num_experts = num_experts
        self.policy = policy
        self.counters = [LayerCounters() for _ in layers]
        # split layers cache whole experts (seg_rows = f rows); the others cache tops of f_top rows
        self.caches = [DeviceCache(s.capacity if (s.f_top > 0 or s.split_misses) else 0,
                                   (3, seg_rows if s.split_misses else s.f_top, hidden), dtype, device, policy, rho, omega)
                       for s in layers]
        # staging ring: whole experts (3, f, d); bottoms use the leading rows
        self._ring = [torch.empty((3, seg_rows, hidden), dtype=dtype, device=device) for _ in range(staging_slots)]
        self._free = list(range(staging_slots))
        self._retiring: list[tuple[int, CopyJob]] = []  # buffers whose copy may still be landing
        self.inflight: list[dict[tuple[int, str], tuple[int, CopyJob]]] = [dict() for _ in layers]
        self.prefetched: list[set[int]] = [set() for _ in layers]
        self.pending_prediction: list[list[int] | None] = [None for _ in layers]
        self.step = 0
        self.decode = False
        self.routing: list[list[list[int]]] = [[] for _ in layers]  # every step's experts per layer (router order)
        for i, s in enumerate(layers):
            for e in s.initial_resident[: self.caches[i].capacity]:
                if s.split_misses:
                    self._install_top(i, e, self._whole(i, e))
                elif e in host_tops[i]:
                    self._install_top(i, e, host_tops[i][e])

    # ---------------------------------------------------------------- helpers
    def _install_top(self, i: int, e: int, src: torch.Tensor) -> None:
        cache = self.caches[i]
        slot = cache.victim_slot(set())
        if slot is None:
            return
        s, evicted = slot
        if evicted is not None:
            del cache.slot_of[evicted]
        cache.slots[s].copy_(src)
        cache.slot_of[e] = s

    def _whole(self, i: int, e: int) -> torch.Tensor:
        """Expert e of layer i whole (3, f, d), from its host segments."""
        parts = [t for t in (self.host_tops[i].get(e), self.host_bottoms[i].get(e)) if t is not None]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _take_buffer(self) -> int:
        """A free staging buffer; reclaims retired ones (a mispredicted copy still landing blocks only here)."""
        if not self._free and self._retiring:
            still = []
            for buf_id, job in self._retiring:
                if job.done():
                    self._free.append(buf_id)
                else:
                    still.append((buf_id, job))
            self._retiring = still
            if not self._free:
                buf_id, job = self._retiring.pop(0)
                job.wait()
                self._free.append(buf_id)
        if not self._free:
            raise RuntimeError("staging ring exhausted: more copies in flight than the ring holds")
        return self._free.pop()

    def _submit(self, i: int, e: int, part: str) -> None:
        """Queue a copy of expert e's bottom or whole expert of layer i into a staging buffer."""
        if (e, part) in self.inflight[i] or (part == "bottom" and (e, "whole") in self.inflight[i]):
            return
        top, bottom = self.host_tops[i].get(e), self.host_bottoms[i].get(e)
        buf_id = self._take_buffer()
        buf = self._ring[buf_id]
        if part in ("bottom", "top"):
            src = bottom if part == "bottom" else top
            rows = src.shape[1]
            dst = buf[:, :rows]

            def copy() -> None:
                dst.copy_(src, non_blocking=True)
            nbytes = src.numel() * src.element_size()
        else:
            parts = [t for t in (top, bottom) if t is not None]
            nbytes = sum(t.numel() * t.element_size() for t in parts)

            def copy() -> None:
                r = 0
                for t in parts:
                    buf[:, r : r + t.shape[1]].copy_(t, non_blocking=True)
                    r += t.shape[1]
        job = self.link.submit(nbytes, copy)
        if self.decode:
            self.counters[i].bytes_h2d += nbytes
        self.inflight[i][(e, part)] = (buf_id, job)

    def _wait(self, i: int, e: int, part: str) -> torch.Tensor:
        buf_id, job = self.inflight[i][(e, part)]
        waited = job.wait()
        if self.decode:
            self.counters[i].stall_s += waited
        return self._ring[buf_id]

    # ---------------------------------------------------------------- predictor
    def predict(self, i: int, experts: list[int]) -> None:
        """Record the predictor's experts for layer i (prefetched at layer i-1's dispatch)."""
        if 0 <= i < len(self.layers) and self.layers[i].prefetch:
            self.pending_prediction[i] = experts

    def _prefetch(self, i: int) -> None:
        pred = self.pending_prediction[i]
        self.pending_prediction[i] = None
        if pred is None:
            return
        s = self.layers[i]
        cache = self.caches[i]
        for e in pred:
            self.prefetched[i].add(e)
            if s.split_misses:
                if e not in cache.slot_of and s.f_top > 0:
                    self._submit(i, e, "top")
                continue
            if e in cache.slot_of:
                if s.f_top < self._seg_total(i, e):
                    self._submit(i, e, "bottom")
            else:
                self._submit(i, e, "whole")

    def _seg_total(self, i: int, e: int) -> int:
        t, b = self.host_tops[i].get(e), self.host_bottoms[i].get(e)
        return (t.shape[1] if t is not None else 0) + (b.shape[1] if b is not None else 0)

    # ---------------------------------------------------------------- SegmentSource
    def dispatch(self, layer: int, experts: list[int]) -> None:
        i = layer
        cache = self.caches[i]
        c = self.counters[i]
        self.routing[i].append(list(experts))
        if self.layers[i].split_misses:
            for e in experts:
                if self.decode:
                    c.activations += 1
                    c.hits += e in cache.slot_of
                    c.misses += e not in cache.slot_of
                    c.predicted_used += e in self.prefetched[i]
                if e not in cache.slot_of and self.layers[i].f_top > 0:
                    self._submit(i, e, "top")
            if self.decode:
                c.predicted += len(self.prefetched[i])
                c.mispredicted += len(self.prefetched[i] - set(experts))
            if i + 1 < len(self.layers):
                self._prefetch(i + 1)
            return
        if self.layers[i].cpu_misses:
            if self.decode:
                c.activations += len(experts)
                c.hits += sum(1 for e in experts if e in cache.slot_of)
                c.misses += sum(1 for e in experts if e not in cache.slot_of)
            if i + 1 < len(self.layers):
                self._prefetch(i + 1)
            return
        for e in experts:
            if self.decode:
                c.activations += 1
                if e in self.prefetched[i]:
                    c.predicted_used += 1
            if e in cache.slot_of:
                if self.decode:
                    c.hits += 1
                if self.host_bottoms[i].get(e) is not None:
                    self._submit(i, e, "bottom")
            else:
                if self.decode:
                    c.misses += 1
                self._submit(i, e, "whole")
        if self.decode:
            c.predicted += len(self.prefetched[i])
            c.mispredicted += len(self.prefetched[i] - set(experts))
        if i + 1 < len(self.layers):
            self._prefetch(i + 1)

    def top(self, layer: int, expert: int) -> torch.Tensor | None:
        i, s = layer, self.layers[layer]
        if s.f_top == 0:
            return None
        cache = self.caches[i]
        if s.split_misses:
            if expert in cache.slot_of:
                return cache.slots[cache.slot_of[expert]][:, : s.f_top]
            return self._wait(i, expert, "top")[:, : s.f_top]
        if expert in cache.slot_of:
            return cache.slots[cache.slot_of[expert]]
        if s.cpu_misses:
            return self.host_tops[i][expert]  # computed where the weights live (host memory)
        return self._wait(i, expert, "whole")[:, : s.f_top]

    def bottom(self, layer: int, expert: int) -> torch.Tensor | None:
        i, s = layer, self.layers[layer]
        b = self.host_bottoms[i].get(expert)
        if b is None:
            return None
        if s.split_misses:
            cache = self.caches[i]
            if expert in cache.slot_of:
                return cache.slots[cache.slot_of[expert]][:, s.f_top:]
            return b  # computed on the host, where its rows live
        if s.cpu_misses:
            return b
        if (expert, "whole") in self.inflight[i]:
            return self._wait(i, expert, "whole")[:, s.f_top : s.f_top + b.shape[1]]
        return self._wait(i, expert, "bottom")[:, : b.shape[1]]

    def release(self, layer: int, experts: list[int]) -> None:
        i = layer
        cache = self.caches[i]
        used = set(experts)
        for e in experts:
            cache.touch(e, self.step)
        if self.layers[i].cpu_misses or self.layers[i].split_misses:
            experts = []  # static device set: nothing is admitted
        for e in experts:
            if e in cache.slot_of or self.layers[i].f_top == 0:
                continue
            key = (e, "whole")
            if key not in self.inflight[i]:
                continue
            slot = cache.victim_slot(used)
            if slot is None:
                continue
            s, evicted = slot
            if evicted is not None:
                del cache.slot_of[evicted]
                if self.decode:
                    self.counters[i].evictions += 1
            buf = self._wait(i, e, "whole")
            cache.slots[s].copy_(buf[:, : self.layers[i].f_top])  # D2D admission from staging
            cache.slot_of[e] = s
        # retire every staging buffer of this layer; a mispredicted copy may still be on the link, and
        # its buffer is reclaimed once it lands (the compute side does not wait for it)
        for buf_id, job in self.inflight[i].values():
            self._retiring.append((buf_id, job))
        self.inflight[i].clear()
        self.prefetched[i].clear()
        if i == len(self.layers) - 1:
            self.step += 1

    def applied_capacity(self) -> list[int]:
        """Top slots actually allocated per layer (proof that the plan took effect)."""
        return [int(c.slots.shape[0]) for c in self.caches]
