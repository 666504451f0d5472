"""Hardware profiles: the constants every cost model reads, from the catalog or measured here.

A `HardwareProfile` is plain data (no torch). Catalog entries live in `planner/catalog/hardware/*.yaml`,
each with its source; `measure_this_machine` runs short micro-benchmarks (matmul FLOP/s, memory
bandwidth, host->device copy bandwidth when CUDA is present) and returns a profile whose `source`
says it was measured, on which machine and when.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

GIB = 1 << 30

KINDS = ("datacenter_gpu", "consumer_gpu", "edge_gpu", "edge_cpu", "phone", "cpu_server", "cpu")

# Fixed time of one extra small kernel (a quantise or dequantise of a cut tensor: launch, dispatch and
# synchronisation), by device kind, for profiles that do not state `op_overhead_s`. Server GPUs and CPUs
# launch in about 5-10 us; embedded GPUs, phones and small CPUs take about twice that.
DEFAULT_OP_OVERHEAD_S = {"datacenter_gpu": 10e-6, "consumer_gpu": 10e-6, "cpu_server": 10e-6,
                         "edge_gpu": 20e-6, "edge_cpu": 20e-6, "phone": 20e-6, "cpu": 20e-6}
# Fields added after the first catalog: they enter the fingerprint only when a profile sets them, so
# existing profiles (and the plans that record their fingerprints) keep their identity.
LATER_FIELDS = ("op_overhead_s", "host_peak_flops_per_s", "host_expert_efficiency")


@dataclass(frozen=True)
class HardwareProfile:
    """One device: memory, compute, bandwidths. Units are in the field names.

    `efficiency_compute` and `efficiency_memory` are the fractions of peak a well-tuned kernel
    sustains (roofline ceilings); measured profiles set them to 1.0 because their peaks are
    already sustained figures.
    """

    name: str
    kind: str
    description: str
    memory_bytes: int
    memory_bandwidth_bytes_per_s: float
    peak_flops_per_s: Mapping[str, float]
    source: str
    host_to_device_bytes_per_s: float | None = None
    device_to_host_bytes_per_s: float | None = None
    host_link: str = ""
    unified_memory: bool = False
    host_memory_bytes: int | None = None
    host_memory_bandwidth_bytes_per_s: float | None = None
    uplink_bits_per_s: float | None = None
    downlink_bits_per_s: float | None = None
    efficiency_compute: float = 0.6
    efficiency_memory: float = 0.8
    measured: bool = False
    base: str | None = None
    op_overhead_s: float | None = None   # fixed time of one extra small kernel (s); None: by kind
    host_peak_flops_per_s: float | None = None   # host CPU peak FP32 vector FLOP/s (prefill on the host)
    host_expert_efficiency: float | None = None  # share of peak host DRAM bandwidth the host's expert kernel sustains
                                                 # (measured by `planner hardware measure`); None: efficiency_memory

    def op_overhead(self) -> float:
        """Fixed seconds of one extra small kernel on this device (the profile's figure, else by kind)."""
        return float(self.op_overhead_s) if self.op_overhead_s is not None else DEFAULT_OP_OVERHEAD_S[self.kind]

    def flops_per_s(self, dtype: str) -> float:
        """Sustained FLOP/s for `dtype` (falls back fp16 <-> bf16, then fp32)."""
        table = dict(self.peak_flops_per_s)
        for key in (dtype, {"bf16": "fp16", "fp16": "bf16"}.get(dtype, dtype), "fp32"):
            if key in table:
                return float(table[key]) * self.efficiency_compute
        raise KeyError(f"{self.name} has no FLOP/s figure for {dtype}")

    def bandwidth_bytes_per_s(self) -> float:
        """Sustained device-memory bandwidth (B/s)."""
        return self.memory_bandwidth_bytes_per_s * self.efficiency_memory

    def h2d_bytes_per_s(self) -> float:
        """Sustained host->device copy bandwidth (B/s); unified-memory devices use memory bandwidth."""
        if self.host_to_device_bytes_per_s:
            return float(self.host_to_device_bytes_per_s)
        return self.bandwidth_bytes_per_s()

    def host_bandwidth_bytes_per_s(self) -> float | None:
        """Sustained host (CPU) DRAM bandwidth in B/s, for work kept on the host; None if unknown."""
        if self.host_memory_bandwidth_bytes_per_s is None:
            return None
        return self.host_memory_bandwidth_bytes_per_s * self.host_efficiency()

    def host_efficiency(self) -> float:
        """Share of peak host DRAM bandwidth the host's expert kernel sustains: the measured figure where the
        profile has one, else the profile's memory efficiency."""
        return float(self.host_expert_efficiency) if self.host_expert_efficiency is not None else self.efficiency_memory

    def host_flops_per_s(self) -> float | None:
        """Sustained host CPU FLOP/s (peak times the compute efficiency); None if unknown."""
        if self.host_peak_flops_per_s is None:
            return None
        return self.host_peak_flops_per_s * self.efficiency_compute

    def roofline_s(self, flops: float, bytes_moved: float, dtype: str) -> float:
        """Roofline time (s) of a kernel doing `flops` FLOPs and moving `bytes_moved` bytes."""
        return max(flops / self.flops_per_s(dtype), bytes_moved / self.bandwidth_bytes_per_s())

    def capped(self, memory_bytes: int, name: str) -> "HardwareProfile":
        """The same device with its memory capped (e.g. an A100 with 24 GiB usable)."""
        return dataclasses.replace(
            self,
            name=name,
            memory_bytes=int(memory_bytes),
            description=f"{self.description}, memory capped at {memory_bytes / GIB:g} GiB",
            base=self.name,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the catalog's YAML layout."""
        d = dataclasses.asdict(self)
        d["peak_flops_per_s"] = dict(self.peak_flops_per_s)
        return d

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of every constant (name included)."""
        d = {k: v for k, v in self.to_dict().items() if not (k in LATER_FIELDS and v is None)}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]


def profile_from_dict(d: Mapping[str, Any], where: str) -> HardwareProfile:
    """Build a profile from a YAML mapping; raises ValueError naming the bad field."""
    fields = {f.name for f in dataclasses.fields(HardwareProfile)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    required = ("name", "kind", "description", "memory_bytes", "memory_bandwidth_bytes_per_s", "peak_flops_per_s", "source")
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    if d["kind"] not in KINDS:
        raise ValueError(f"{where}: kind '{d['kind']}' is not one of {', '.join(KINDS)}")
    values = dict(d)
    try:
        values["memory_bytes"] = int(float(values["memory_bytes"]))
        values["peak_flops_per_s"] = {str(k): float(v) for k, v in dict(values["peak_flops_per_s"]).items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: memory_bytes or peak_flops_per_s is not a number ({exc})") from exc
    for key in ("memory_bandwidth_bytes_per_s", "host_to_device_bytes_per_s", "device_to_host_bytes_per_s",
                "host_memory_bandwidth_bytes_per_s", "host_peak_flops_per_s",
                "uplink_bits_per_s", "downlink_bits_per_s", "efficiency_compute", "efficiency_memory", "op_overhead_s",
                "host_expert_efficiency"):
        if values.get(key) is not None:
            try:
                values[key] = float(values[key])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: {key} is {values[key]!r}, not a number") from exc
            if values[key] <= 0:
                raise ValueError(f"{where}: {key} must be positive")
    if values["memory_bytes"] <= 0:
        raise ValueError(f"{where}: memory_bytes must be positive")
    for key in ("efficiency_compute", "efficiency_memory", "host_expert_efficiency"):
        if values.get(key) is not None and values[key] > 1:
            raise ValueError(f"{where}: {key} is {values[key]:g}, a fraction of peak that cannot exceed 1")
    for k, v in values["peak_flops_per_s"].items():
        if not v > 0:
            raise ValueError(f"{where}: peak_flops_per_s.{k} must be positive")
    return HardwareProfile(**values)


@dataclass(frozen=True)
class MeasureResult:
    """One micro-benchmark's outcome: the figure and how it was taken."""

    name: str
    value: float
    unit: str
    detail: str


def _median_time(fn: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    times = []
    fn()
    sync()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


@dataclass(frozen=True)
class HostExpertKernel:
    """The host CPU's expert kernel at decode (one token through a SwiGLU expert: two GEMVs over d x f weights,
    one over f x d) against the same CPU's DRAM bandwidth; medians and spreads over repeats."""

    expert_bytes_per_s: float        # weight bytes of the expert / kernel time (median)
    expert_spread: tuple[float, float]  # (min, max) over the repeats
    read_bytes_per_s: float          # a streaming read of the same bytes (sum), the peak a kernel could reach
    copy_bytes_per_s: float          # a copy, counting read, write and the write-allocate read (3 x bytes)
    efficiency: float                # expert_bytes_per_s / the best of the three (a share of the peak seen)
    detail: str


def measure_host_expert_kernel(hidden: int = 4096, intermediate: int = 7168, repeats: int = 7,
                               threads: int | None = None) -> HostExpertKernel:
    """Time a decode-time SwiGLU expert (batch 1, fp32 weights of Mixtral's hidden size, half its expert width so
    the weights, 352 MB, dwarf every cache) and a streaming read and copy of the same bytes on this CPU."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    d, f = hidden, intermediate
    gate = torch.empty(f, d).uniform_(-0.01, 0.01)
    up = torch.empty(f, d).uniform_(-0.01, 0.01)
    down = torch.empty(d, f).uniform_(-0.01, 0.01)
    x = torch.randn(1, d)
    nbytes = 3 * d * f * 4

    def expert() -> None:
        h = torch.nn.functional.silu(x @ gate.T) * (x @ up.T)
        h @ down.T

    flat = torch.cat([gate.reshape(-1), up.reshape(-1), down.reshape(-1)])
    dst = torch.empty_like(flat)

    def times(fn: Callable[[], None]) -> list[float]:
        fn()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return sorted(out)

    t_exp = times(expert)
    t_read = times(lambda: flat.sum())
    t_copy = times(lambda: dst.copy_(flat))
    med = lambda v: v[len(v) // 2]  # noqa: E731
    exp_bw = nbytes / med(t_exp)
    read_bw = nbytes / med(t_read)
    copy_bw = 3 * nbytes / med(t_copy)
    return HostExpertKernel(exp_bw, (nbytes / t_exp[-1], nbytes / t_exp[0]), read_bw, copy_bw,
                            exp_bw / max(read_bw, copy_bw, exp_bw),
                            f"SwiGLU expert d={d} f={f} fp32 ({nbytes / 1e6:.0f} MB), batch 1, {torch.get_num_threads()} "
                            f"threads, median of {repeats}")


def measure_this_machine(
    name: str = "measured",
    progress: Callable[[str, int, int], None] | None = None,
    matmul_size: int = 2048,
    copy_mib: int = 256,
    repeats: int = 5,
) -> tuple[HardwareProfile, list[MeasureResult]]:
    """Run micro-benchmarks here and return a profile usable as `--hardware FILE`.

    Measures: fp32 (and bf16 on CUDA) matmul FLOP/s with an n x n matmul, device-memory bandwidth by
    a large tensor copy (read + write counted), host->device and device->host pinned copies when CUDA
    is present. Medians of `repeats` runs after one warm-up.
    """
    import torch

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    steps = 4 + (2 if cuda else 0)
    done = 0
    results: list[MeasureResult] = []

    def tick(label: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(label, done, steps)

    peak: dict[str, float] = {}
    n = matmul_size
    for dtype_name, dtype in (("fp32", torch.float32),) + ((("bf16", torch.bfloat16),) if cuda else ()):
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        t = _median_time(lambda: torch.mm(a, b), repeats, sync)
        peak[dtype_name] = 2.0 * n**3 / t
        results.append(MeasureResult(f"matmul_{dtype_name}", peak[dtype_name], "FLOP/s", f"{n}x{n} mm, median of {repeats}"))
        tick(f"matmul {dtype_name}")
    if not cuda:
        # On CPU, bf16 matmul is usually emulated; record fp32 only and let lookups fall back to it.
        tick("matmul bf16 (skipped: no CUDA)")

    elems = copy_mib * (1 << 20) // 4
    src = torch.empty(elems, dtype=torch.float32, device=dev).uniform_()
    dst = torch.empty_like(src)
    t = _median_time(lambda: dst.copy_(src), repeats, sync)
    mem_bw = 2.0 * src.numel() * 4 / t  # read + write
    results.append(MeasureResult("memory_bandwidth", mem_bw, "B/s", f"{copy_mib} MiB device copy, read+write, median of {repeats}"))
    tick("memory bandwidth")

    # the host's expert kernel (what a host-computed expert reaches of the host's DRAM bandwidth)
    kern = measure_host_expert_kernel(repeats=repeats)
    results.append(MeasureResult("host_expert_kernel", kern.expert_bytes_per_s, "B/s",
                                 f"{kern.detail}; spread {kern.expert_spread[0]:.3g}-{kern.expert_spread[1]:.3g}"))
    results.append(MeasureResult("host_dram_read", kern.read_bytes_per_s, "B/s", "streaming read of the same bytes"))
    results.append(MeasureResult("host_expert_efficiency", kern.efficiency, "share",
                                 "expert kernel / max(streaming read, copy incl. write-allocate, expert kernel) on "
                                 "this CPU"))
    tick("host expert kernel")

    h2d = d2h = None
    if cuda:
        host = torch.empty(elems, dtype=torch.float32).pin_memory()
        t = _median_time(lambda: src.copy_(host, non_blocking=True), repeats, sync)
        h2d = host.numel() * 4 / t
        results.append(MeasureResult("host_to_device", h2d, "B/s", f"{copy_mib} MiB pinned copy, median of {repeats}"))
        tick("host->device")
        t = _median_time(lambda: host.copy_(src, non_blocking=True), repeats, sync)
        d2h = host.numel() * 4 / t
        results.append(MeasureResult("device_to_host", d2h, "B/s", f"{copy_mib} MiB pinned copy, median of {repeats}"))
        tick("device->host")

    if cuda:
        props = torch.cuda.get_device_properties(0)
        memory = int(props.total_memory)
        desc = f"{props.name} (measured)"
        kind = "datacenter_gpu"
    else:
        import os

        memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        desc = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} threads (measured)"
        kind = "cpu"
    profile = HardwareProfile(
        name=name,
        kind=kind,
        description=desc,
        memory_bytes=memory,
        memory_bandwidth_bytes_per_s=mem_bw,
        peak_flops_per_s=peak,
        source=f"measured by `planner hardware measure` on {platform.node()} at "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} (torch {torch.__version__})",
        host_to_device_bytes_per_s=h2d,
        device_to_host_bytes_per_s=d2h,
        host_link="PCIe (measured)" if cuda else "",
        unified_memory=not cuda,
        efficiency_compute=1.0,
        efficiency_memory=1.0,
        measured=True,
        host_memory_bandwidth_bytes_per_s=(max(kern.read_bytes_per_s, kern.copy_bytes_per_s, kern.expert_bytes_per_s)
                                           if cuda else None),
        host_expert_efficiency=kern.efficiency,
    )
    return profile, results
