"""split-inference calibration: per-node times of the model's graph on this CPU, with this CPU's constants."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from core.errors import PlannerError
from planner.calibration import read_calibration as read_file


def measure(spec: Any, tiny: bool, clock: str = "wall") -> dict[str, Any]:
    """Time every graph node here (fx Interpreter, 3 passes of 7 runs: profilers.timing.time_graph_nodes), measure this CPU's roofline constants and
    the split runtime's fixed cost per request (framing, gRPC, thread hand-offs: runtime/split_inference/overhead.py).

    `clock` "cpu": node times, the forward and the quantise kernels in this thread's CPU time (what a core of its
    own spends; host contention is not counted as a slower device), recorded as `clock: cpu`, with the forward's
    wall time beside it (`forward_wall_s`: its ratio to the CPU time is the host's contention then). The runtime's
    per-request costs stay wall time (they span threads and processes)."""
    from profilers.hardware import measure_this_machine
    from profilers.models import build_model
    from profilers.timing import time_graph_nodes
    from runtime.split_inference.overhead import measure_request_overhead

    cpu, _ = measure_this_machine("this-cpu", matmul_size=1024, copy_mib=64, repeats=3)
    totals: list[float] = []
    forward: list[float] = []
    other: list[float] = []
    times = time_graph_nodes(build_model(spec, tiny=tiny, device="cpu"), totals=totals, forward=forward, clock=clock,
                             forward_other=other)
    mid = statistics.median(totals)
    # the whole graph's time in each of the runs against their median: how far this host's speed moved while it
    # was measured; the plan's choice must hold anywhere in that range (solvers/split_inference/robust.py). The
    # second fastest and second slowest of the 7 runs: one preempted run of a sub-millisecond graph measured
    # 22x the median and, as a corner, made a latency plan trade 83 % of its nominal latency for that corner.
    ranked = sorted(totals)
    trim = 1 if len(ranked) >= 5 else 0
    spread = [ranked[trim] / mid, ranked[-1 - trim] / mid] if mid > 0 else [1.0, 1.0]
    return {"cpu": cpu.to_dict(), "node_times_s": {k: float(v) for k, v in sorted(times.items())},
            "speed_spread": [float(x) for x in spread], "graph_times_s": [float(t) for t in totals],
            "forward_times_s": [float(t) for t in forward], "clock": clock,
            f"forward_{'cpu' if clock == 'wall' else 'wall'}_s": [float(t) for t in other],
            "quantise_s_per_element": (rates := measure_quantise_rates(clock=clock)),
            "quantise_fixed_s": measure_quantise_fixed(rates, clock=clock),
            "request_overhead": measure_request_overhead()}


def measure_quantise_rates(elements: int = 200_704, bits: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 16),
                           repeats: int = 3, clock: str = "wall") -> dict[str, dict[int, float]]:
    """Seconds (`clock`) per element of the runtime's quantise (UAQ + bit packing) and dequantise at each bit width on
    this CPU, one thread, fastest of `repeats` (a 64x56x56 fp32 activation by default)."""
    import torch

    x = torch.randn(1, elements).relu()
    out: dict[str, dict[int, float]] = {"quantise": {}, "dequantise": {}}
    for b in bits:
        q, dq = _fastest_roundtrip(x, b, repeats, clock)
        out["quantise"][b] = q / elements
        out["dequantise"][b] = dq / elements
    return out


def _fastest_roundtrip(x: Any, bits: int, repeats: int, clock: str = "wall") -> tuple[float, float]:
    """(fastest quantise, fastest dequantise) of `x` at `bits` over `repeats` calls after one warm-up, seconds on
    `clock` (profilers.timing.CLOCKS)."""
    from kernels.uniform_quant import dequantize, quantize
    from profilers.timing import CLOCKS

    tick = CLOCKS[clock]

    dequantize(quantize(x, bits))
    q, dq = [], []
    for _ in range(repeats):
        t0 = tick()
        packed = quantize(x, bits)
        t1 = tick()
        dequantize(packed)
        t2 = tick()
        q.append(t1 - t0)
        dq.append(t2 - t1)
    return min(q), min(dq)


def measure_quantise_fixed(rates: dict[str, dict[int, float]], elements: int = 1024,
                           repeats: int = 15, clock: str = "wall") -> dict[str, dict[int, float]]:
    """Seconds of one quantise and one dequantise call beyond the per-element rate, at each bit width: a call on a
    small tensor (`elements` values, fastest of `repeats`) minus its elements at `rates`. The kernels run several
    small torch ops per call, ~80 us to quantise 8 bits here whatever the size, which the rate alone (measured on
    200k elements) put at 2 us for a digits image."""
    import torch

    x = torch.randn(1, elements).relu()
    out: dict[str, dict[int, float]] = {"quantise": {}, "dequantise": {}}
    for b in rates["quantise"]:
        q, dq = _fastest_roundtrip(x, b, repeats, clock)
        out["quantise"][b] = max(0.0, q - elements * rates["quantise"][b])
        out["dequantise"][b] = max(0.0, dq - elements * rates["dequantise"][b])
    return out


def read_calibration(path: Path, spec: Any, tiny: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """(measured node times and CPU profile for the lowering, the plan's record of the file)."""
    measured, record = read_file(path, "split-inference", spec, tiny)
    if not isinstance(measured.get("cpu"), dict) or not isinstance(measured.get("node_times_s"), dict):
        raise PlannerError(f"--calibration {path} lacks the split-inference node times",
                           "re-create it with `planner calibrate MODEL --scenario split-inference`")
    return {**measured, "sha256": record["sha256"]}, record


def rescale(spec: Any, tiny: bool, old: dict[str, Any], old_sha256: str) -> dict[str, Any]:
    """A calibration re-levelled to this host's speed now (`planner calibrate --rescale OLD`): the whole model's
    direct forward is timed again (7 calls, one thread, the same call `measure` sets its level from) and every
    host-time figure of OLD (node times, quantise rates, the runtime's per-request cost) is multiplied by
    `level` = that median over OLD's. Seconds where a full calibration takes minutes, so it can run right before
    planning, on the machine that will serve. The drift seen between the two measurements widens the spread the
    plan's robust choice covers: the host moved by `level` since OLD, so it may move that much again
    (`speed_spread` becomes [min(lo, 1/d), max(hi, d)], d = max(level, 1/level)). The forward is re-timed on
    OLD's own clock (`clock`: wall, or cpu for a calibration taken in CPU time)."""
    from profilers.models import build_model
    from profilers.timing import time_forward

    before = [float(t) for t in old.get("forward_times_s") or []]
    if not before or not isinstance(old.get("node_times_s"), dict):
        raise PlannerError("--rescale needs a split-inference calibration with its forward times",
                           "re-create it with `planner calibrate MODEL --scenario split-inference -o FILE`")
    clock = str(old.get("clock", "wall"))
    other: list[float] = []
    now = time_forward(build_model(spec, tiny=tiny, device="cpu"), clock=clock, other=other)
    level = statistics.median(now) / statistics.median(before)
    drift = max(level, 1.0 / level)
    lo, hi = (old.get("speed_spread") or [1.0, 1.0])[:2]
    out = dict(old)
    out["node_times_s"] = {k: float(v) * level for k, v in old["node_times_s"].items()}
    out["graph_times_s"] = [float(t) * level for t in old.get("graph_times_s") or []]
    out["forward_times_s"] = [float(t) for t in now]
    out[f"forward_{'cpu' if clock == 'wall' else 'wall'}_s"] = [float(t) for t in other]
    q = old.get("quantise_s_per_element")
    if isinstance(q, dict):
        out["quantise_s_per_element"] = {k: {b: float(t) * level for b, t in v.items()} for k, v in q.items()}
    qf = old.get("quantise_fixed_s")
    if isinstance(qf, dict):
        out["quantise_fixed_s"] = {k: {b: float(t) * level for b, t in v.items()} for k, v in qf.items()}
    ro = old.get("request_overhead")
    wall_level = level
    if clock == "cpu":
        # the runtime's per-request costs are wall time (framing, gRPC, hand-offs between threads and processes):
        # they follow the forward's wall time, not its CPU time
        was = [float(t) for t in old.get("forward_wall_s") or []]
        wall_level = statistics.median(other) / statistics.median(was) if was and other else 1.0
    if isinstance(ro, dict):
        out["request_overhead"] = {k: (float(v) * wall_level if k.endswith("_s") else v) for k, v in ro.items()}
    out["speed_spread"] = [min(float(lo), 1.0 / drift), max(float(hi), drift)]
    out["rescaled"] = {"from_sha256": old_sha256, "level": float(level), "clock": clock,
                       "request_overhead_level": float(wall_level),
                       "forward_s_before": statistics.median(before), "forward_s_now": statistics.median(now),
                       "what": "host-time figures x level, the whole forward's median now over the calibration's; "
                               "speed_spread widened to the drift x1/d..xd, d = max(level, 1/level)"}
    return out
