"""The edge side of the pipeline: compute request i+1 while request i is on the link and i−1 in the cloud.

`EdgeRunner.run` walks the request stream on one thread: wait until fewer than `max_in_flight`
requests are unanswered (the bounded queue between the stages), run the current partition's edge
half, sleep out the edge-profile emulation, look the cut feature up in the semantic cache, and hand
the frame to the `EdgeLink`. The link's request generator sends it (gRPC thread) and its receiver
thread delivers each RESULT once; the cloud computes in its own process. So edge compute, link and
cloud compute overlap, as in the plan's three-stage pipeline.

Edge emulation (labelled in the receipt): this CPU is not the edge device, so after computing a
request the edge sleeps `max(0, T_e(plan) − measured)`: the stage then takes what the plan predicts
for the edge profile, unless this CPU is slower, which the receipt shows.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from core.errors import PeerError
from runtime.split_inference import wire
from runtime.split_inference.adaptation import (BandwidthEstimator, Switch, TableController, TableRow, goodput_bits_per_s,
                                                link_time_s)
from runtime.split_inference.artifact import Artifact, Partition
from runtime.split_inference.semantic_cache import SemanticCache
from runtime.split_inference.transport import Arrival, EdgeLink, now

log = logging.getLogger(__name__)


@dataclass
class EdgeOptions:
    """How the edge drives the stream (defaults from runtime.yaml where it has them)."""

    config: str = "plan"
    max_in_flight: int = 3
    emulate: bool = True
    # None: pad each request's edge compute to the plan's T_e; a factor k: pad it to this request's own compute
    # plus (k - 1) x its CPU time (a device k times slower than this CPU is right now, whatever the host's load;
    # the time the host preempted the compute counts once)
    emulate_slowdown: float | None = None
    # a factor k: hold each request's edge stage for k x the CPU time its compute took here (a dedicated device k
    # times slower than this CPU's core; the wall time the host kept the core busy with other work is not counted,
    # unless the compute's wall time alone passes k x its CPU time: an overrun, counted in the receipt)
    emulate_cpu: float | None = None
    cache: bool | None = None          # None: runtime.yaml's cache.enabled
    adapt: bool | None = None          # None: on when the plan has a table
    switch_samples: int | None = None  # None: runtime.yaml's adaptation.switch_samples
    probe_interval_s: float | None = None
    timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    reconnect_timeout_s: float = 30.0
    link_label: str = "gRPC over loopback (unshaped)"
    one_way_delay_s: float = 0.0       # emulated propagation delay on the downlink (transport.delayed)


@dataclass
class RequestRecord:
    """Everything measured about one request (edge clock, s)."""

    request_id: int
    partition: str
    start: float
    edge_compute_s: float
    edge_sleep_s: float
    edge_done: float
    handed: float = 0.0
    arrival: float = 0.0
    cloud_start: float = 0.0
    cloud_done: float = 0.0
    result_at: float = 0.0
    frame_bytes: int = 0
    result_bytes: int = 0
    link_s: float = 0.0
    edge_cpu_s: float = 0.0          # this thread's CPU time in the edge compute (time preempted excluded)
    edge_target_s: float = 0.0       # what the emulation held the stage for (0: no emulation)
    answered_by: str = ""            # "cloud", "edge" (all-edge partition) or "cache"
    label: int | None = None
    summary: torch.Tensor | None = None

    @property
    def latency_s(self) -> float:
        """From the start of edge compute to the answer on the edge."""
        return self.result_at - self.start


SPIN_TAIL_S = 0.002


def pad_until(deadline: float) -> None:
    """Hold this thread until `deadline` (transport.now() clock): sleep for all but the last SPIN_TAIL_S, then
    spin, yielding the interpreter lock. A plain sleep woke up milliseconds late on a loaded host, which slowed
    the emulated edge of sub-millisecond stages by half again; the spin keeps the core as the device's compute
    would, at most SPIN_TAIL_S per request."""
    rest = deadline - now() - SPIN_TAIL_S
    if rest > 0:
        time.sleep(rest)
    while now() < deadline:
        time.sleep(0)


def summarise_output(first: torch.Tensor, classification: bool) -> tuple[int | None, torch.Tensor]:
    """(label, small summary vector) of a request's first output: logits for classifiers, else the mean
    over every non-batch, non-feature dimension (a mean-pooled embedding for encoders)."""
    x = first.detach().float()
    if classification:
        return int(x.reshape(x.shape[0], -1)[0].argmax()), x.reshape(x.shape[0], -1)[0]
    while x.dim() > 2:
        x = x.mean(1)
    return None, x.reshape(x.shape[0], -1)[0]


@dataclass
class EdgeResult:
    """What a run produced besides the records: switches, cache and link figures."""

    records: list[RequestRecord]
    switches: list[Switch]
    bandwidth_estimates: list[tuple[int, float]]
    probes: int = 0
    probe_bytes: int = 0
    cache_lookups: int = 0
    cache_hits: int = 0
    link_stats: Any = None
    wall_s: float = 0.0
    emulation: str = ""
    partitions_used: list[str] = field(default_factory=list)


class EdgeRunner:
    """Runs an artifact's edge halves against a cloud at `target` (or alone for an all-edge configuration)."""

    def __init__(self, art: Artifact, target: str | None, opts: EdgeOptions) -> None:
        self.art = art
        self.target = target
        self.opts = opts
        rt = art.config
        self.classification = bool(rt.get("model", {}).get("classification", False))
        start = art.config_partition(opts.config)
        ad = rt.get("adaptation", {}) or {}
        rows = [TableRow(float(r["uplink_bits_per_s"]), str(r["partition"])) for r in rt.get("plan_table", [])]
        adapt = opts.adapt if opts.adapt is not None else bool(ad.get("enabled", bool(rows)))
        self.controller: TableController | None = None
        if adapt and opts.config == "plan" and len({r.partition for r in rows}) > 1:
            nominal = float(rt.get("link", {}).get("uplink_bits_per_s", rows[0].uplink_bits_per_s))
            # start on the plan's own partition: the table row planned nearest to the nominal link that runs it
            own = [r for r in rows if r.partition == start.pid] or rows
            first = min(own, key=lambda r: abs(r.uplink_bits_per_s - nominal))
            self.controller = TableController.starting_at(rows, first.uplink_bits_per_s,
                                                          int(opts.switch_samples or ad.get("switch_samples", 20)))
        self.current = start
        self.estimator = BandwidthEstimator(float(ad.get("ewma_alpha", 0.3)))
        self.probe_interval_s = float(opts.probe_interval_s if opts.probe_interval_s is not None else ad.get("probe_interval_s", 1.0))
        self.probe_size = int(ad.get("probe_bytes", 0))
        cache_cfg = rt.get("cache", {}) or {}
        use_cache = opts.cache if opts.cache is not None else bool(cache_cfg.get("enabled", False))
        self.caches: dict[str, SemanticCache] = {}
        if use_cache:
            self.caches = load_caches(art)
            if not self.caches:
                raise PeerError("--cache on, but the artifact holds no semantic cache (only classifiers get one)",
                                "run without --cache")
        self.records: dict[int, RequestRecord] = {}
        self.last_rid = -1
        self.window = threading.Semaphore(max(1, opts.max_in_flight))
        self.prev_arrival: float | None = None
        self.min_transit = float("inf")
        self.link: EdgeLink | None = None
        self.done = threading.Condition()
        self.answered = 0
        self.bw_log: list[tuple[int, float]] = []
        self.probes = 0
        self.probe_bytes_sent = 0

    # ---- arrivals (receiver thread)
    def _on_arrival(self, a: Arrival) -> None:
        offset = self.link.stats.clock_offset_s if self.link else 0.0
        arrival = a.frame.clocks[0] - offset
        # one-way delay: half the handshake RTT, but never more than the fastest hand-over-to-arrival seen
        # (on a loaded host the handshake RTT also holds scheduling delays, and over-subtracting them
        # would leave short transfers with no time at all)
        self.min_transit = min(self.min_transit, max(0.0, arrival - a.handed_at))
        one_way = min((self.link.stats.handshake_rtt_s / 2.0) if self.link else 0.0, self.min_transit)
        sample = goodput_bits_per_s(a.frame_bytes, a.handed_at, arrival, self.prev_arrival, one_way)
        link_s = link_time_s(a.handed_at, arrival, self.prev_arrival, one_way)
        self.prev_arrival = arrival
        if sample is not None:
            est = self.estimator.add(sample)
            self.bw_log.append((a.request_id if not a.probe else -a.request_id, est))
            if self.controller is not None:
                sw = self.controller.observe(est, self.last_rid)
                if sw is not None:
                    log.info("edge: switched %s -> %s at %.3g bit/s", sw.from_partition, sw.to_partition, est)
        if a.probe:
            return
        rec = self.records[a.request_id]
        rec.handed, rec.arrival, rec.link_s = a.handed_at, arrival, link_s
        rec.cloud_start, rec.cloud_done = a.frame.clocks[1] - offset, a.frame.clocks[2] - offset
        rec.result_at, rec.frame_bytes = a.received_at, a.frame_bytes
        rec.result_bytes = sum(t.numel() * t.element_size() for t in a.frame.tensors)
        rec.answered_by = "cloud"
        rec.label, rec.summary = summarise_output(a.frame.tensors[0], self.classification)
        self._finish(rec)

    def _finish(self, rec: RequestRecord) -> None:
        cache = self.caches.get(rec.partition)
        if cache is not None and rec.label is not None and rec.answered_by != "cache":
            cache.observe(rec.label)
        with self.done:
            self.answered += 1
            self.done.notify_all()
        self.window.release()

    # ---- the stream
    def _partition(self) -> Partition:
        if self.controller is not None:
            pid = self.controller.partition
            if pid != self.current.pid:
                self.current = self.art.partition(pid)
        return self.current

    def _needs_link(self) -> bool:
        if self.controller is None:
            return not self.current.all_edge
        return any(not self.art.partition(r.partition).all_edge for r in self.controller.rows)

    def _maybe_probe(self, last_probe: list[float]) -> None:
        part = self.current
        if self.controller is None or self.link is None or self.probe_size <= 0:
            return
        if part.wire_bytes >= self.probe_size or now() - last_probe[0] < self.probe_interval_s:
            return
        self.probes += 1
        frame = wire.encode_probe(self.probes, now(), self.probe_size)
        self.probe_bytes_sent += len(frame)
        self.link.send_probe(self.probes, frame)
        last_probe[0] = now()

    def run(self, inputs: Iterable[Sequence[torch.Tensor]]) -> EdgeResult:
        """Drive every request through the pipeline; returns when all are answered (or raises PeerError)."""
        if self._needs_link():
            if self.target is None:
                raise PeerError("this configuration sends tensors to the cloud but no cloud address was given",
                                "pass --connect HOST:PORT, or run without --role to start both sides")
            self.link = EdgeLink(self.target, self.art.format, self.art.artifact_id, self._on_arrival,
                                 timeout_s=self.opts.timeout_s, connect_timeout_s=self.opts.connect_timeout_s,
                                 reconnect_timeout_s=self.opts.reconnect_timeout_s,
                                 one_way_delay_s=self.opts.one_way_delay_s)
            self.link.connect()
        emulated = []
        t_begin = now()
        last_probe = [now()]
        n = 0
        try:
            for rid, args in enumerate(inputs):
                while not self.window.acquire(timeout=0.05):
                    if self.link is not None:
                        self.link.raise_if_failed()
                part = self._partition()
                c0, t0 = time.thread_time(), now()
                with torch.inference_mode():
                    wire_vals = part.edge(*args)
                t1, c1 = now(), time.thread_time()
                pred = part.predicted        # pad the compute to the plan's; the runtime's own cost comes on top
                if not self.opts.emulate:
                    target_s = 0.0
                elif self.opts.emulate_cpu is not None:
                    # a dedicated device k x slower than this core: k x the CPU time, whatever the host's load
                    target_s = self.opts.emulate_cpu * (c1 - c0)
                elif self.opts.emulate_slowdown is not None:
                    # a device K x slower does K x this request's work: K - 1 more times the CPU time it took here.
                    # The wall time the host took the core away during the compute counts once, not K times (K x
                    # the wall time multiplied every preemption: a digits request preempted for 1 ms held 4 ms)
                    target_s = (t1 - t0) + (self.opts.emulate_slowdown - 1.0) * (c1 - c0)
                else:
                    target_s = float(pred.get("edge_compute_ms", pred.get("edge_ms", 0.0))) / 1e3
                if target_s > t1 - t0:
                    pad_until(t0 + target_s)
                emulated.append(target_s)
                t2 = now()
                rec = RequestRecord(rid, part.pid, t0, t1 - t0, t2 - t1, t2, edge_cpu_s=c1 - c0, edge_target_s=target_s)
                self.records[rid] = rec
                self.last_rid = rid
                n += 1
                if part.all_edge:
                    rec.result_at, rec.answered_by = now(), "edge"
                    rec.label, rec.summary = summarise_output(wire_vals[0], self.classification)
                    self._finish(rec)
                    self._maybe_probe(last_probe)
                    continue
                cache = self.caches.get(part.pid)
                if cache is not None and self.classification:
                    feat = _cache_feature(part, wire_vals, self.art.config.get("cache", {}).get("features", {}).get(part.pid))
                    label, _ = cache.lookup(feat) if feat is not None else (None, 0.0)
                    if label is not None:
                        rec.result_at, rec.answered_by, rec.label = now(), "cache", label
                        self._finish(rec)
                        continue
                frame = wire.encode_request(rid, part.index, rec.edge_done, list(wire_vals))
                self.link.send(rid, frame)
                self._maybe_probe(last_probe)
            with self.done:
                while self.answered < n:
                    self.done.wait(0.05)
                    if self.link is not None:
                        self.link.raise_if_failed()
        finally:
            if self.link is not None:
                self.link.close()
        recs = [self.records[i] for i in sorted(self.records)]
        mean_target = sum(emulated) / len(emulated) if emulated else 0.0
        cpu_ms = sum(r.edge_compute_s for r in recs) / max(len(recs), 1) * 1e3
        if not self.opts.emulate:
            emu = "no edge emulation: the edge stage ran at this CPU's speed"
        elif self.opts.emulate_cpu is not None:
            over = sum(1 for r in recs if r.edge_compute_s > r.edge_target_s)
            emu = (f"edge EMULATED as a dedicated device {self.opts.emulate_cpu:g}x slower than this CPU's core: each "
                   f"request's edge stage held for {self.opts.emulate_cpu:g}x the CPU time of its compute here (mean "
                   f"{mean_target * 1e3:.3g} ms; waits for the shared core not counted); {over} of {len(recs)} "
                   f"requests overran it (their compute's wall time alone was longer)")
        elif self.opts.emulate_slowdown is not None:
            emu = (f"edge emulated as this CPU slowed {self.opts.emulate_slowdown:g}x: each request's edge stage padded "
                   f"by sleeping to its own measured compute plus {self.opts.emulate_slowdown - 1:g}x its CPU time "
                   f"(time preempted counted once; mean {mean_target * 1e3:.3g} "
                   f"ms; this CPU computed it in {cpu_ms:.3g} ms on average)")
        else:
            emu = (f"edge emulated: each request's edge stage padded by sleeping to the plan's T_e for the edge profile "
                   f"({self.art.config.get('edge_device', '?')}, mean {mean_target * 1e3:.3g} ms); this CPU computed "
                   f"it in {cpu_ms:.3g} ms on average")
        return EdgeResult(recs, list(self.controller.switches) if self.controller else [], self.bw_log, self.probes,
                          self.probe_bytes_sent, sum(c.lookups for c in self.caches.values()),
                          sum(c.hits for c in self.caches.values()), self.link.stats if self.link else None,
                          now() - t_begin, emu, sorted({r.partition for r in recs}))


def _cache_feature(part: Partition, wire_vals: Sequence[Any], name: str | None) -> torch.Tensor | None:
    """The cut tensor the cache compares (dequantised: what the cloud would receive)."""
    from kernels.uniform_quant import QuantizedTensor, dequantize

    for spec, v in zip(part.wire, wire_vals):
        if name is None or spec.name == name:
            return dequantize(v) if isinstance(v, QuantizedTensor) else (v.float() if v.is_floating_point() else None)
    return None


def load_caches(art: Artifact) -> dict[str, SemanticCache]:
    """The semantic caches runtime.yaml lists, by partition id."""
    from safetensors.torch import load_file

    cfg = art.config.get("cache", {}) or {}
    out = {}
    for pid, entry in (cfg.get("partitions") or {}).items():
        t = load_file(str(art.root / entry["file"]))
        out[pid] = SemanticCache(t["centres"], t["labels"], float(entry["tau"]), int(cfg.get("num_classes", 0)))
    return out
