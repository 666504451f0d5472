"""The runtime's fixed cost per request, measured through its own transport (for `planner calibrate`).

A request that crosses the link pays, besides compute and bytes on the wire, the runtime's framing
(`wire.encode_request`/`decode`), a gRPC message each way, and the hand-offs between the edge's request
loop, the gRPC threads and the cloud's reader and handler threads. For models whose stages take well under
a millisecond this is most of the time, so the cost model counts it (docs/split-inference.md §2).

`measure_request_overhead` runs the real `CloudService` and `EdgeLink` over loopback in this process,
with a cloud half that returns its input (a 16-element fp32 tensor, so compute is ~0):

* pipelined (`in_flight` requests outstanding): the time per request, `period_s`, is CPU spent by both ends
  (one process, one interpreter lock), split evenly between the edge and the cloud: `edge_s = cloud_s =
  period_s / 2` (each side runs one end of the same stream: one encode, one decode, one gRPC message out and
  one in, the same thread hand-offs);
* one request at a time: the round trip `round_trip_s`; what it holds beyond the two sides' CPU is waiting
  (wake-ups, gRPC's own scheduling): `latency_s = max(0, round_trip_s − period_s)`.

Besides, `edge_loop_s`: the edge's own request loop (window, records, the output's summary, hand-back) per
request, paid by EVERY request, one that stays on the edge included: the real `EdgeRunner` on an all-edge
configuration whose model returns its input, pipelined, no emulation. Without it a digits-cnn plan kept the model
on the edge at a predicted 883 req/s that the runtime served at 400 (all-cloud, which pays its cost in `edge_s`,
served 535).

Medians over `repeats` runs; the spread (min, max) comes with them.
"""
from __future__ import annotations

import statistics
import threading
from pathlib import Path
from typing import Any

import torch

from runtime.split_inference import wire
from runtime.split_inference.artifact import Artifact, Partition
from runtime.split_inference.transport import Arrival, CloudService, EdgeLink, now, start_cloud_server

ECHO_SHAPE = (1, 16)


class _Echo(torch.nn.Module):
    """A cloud half that returns its input."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x,)


def _echo_artifact() -> Artifact:
    spec = wire.WireSpec("x", ECHO_SHAPE, "float32", None)
    part = Partition("echo", 0, {"cloud_code": "echo"}, [spec], cloud=_Echo())
    return Artifact(Path("."), {"artifact_id": "0" * 32, "format": 1}, {}, [part])


def _drive(link: EdgeLink, answered: dict[str, Any], count: int, in_flight: int) -> float:
    """Send `count` requests with at most `in_flight` outstanding; seconds from first send to last answer."""
    x = torch.zeros(ECHO_SHAPE)
    window = threading.Semaphore(in_flight)
    answered["window"] = window
    done = answered["done"]
    start = now()
    for rid in range(answered["next"], answered["next"] + count):
        while not window.acquire(timeout=0.05):
            link.raise_if_failed()
        link.send(rid, wire.encode_request(rid, 0, now(), [x]))
    answered["next"] += count
    with done:
        while answered["count"] < answered["next"]:
            done.wait(0.05)
            link.raise_if_failed()
    return now() - start


def _local_artifact() -> Artifact:
    part = Partition("local", 0, {"cloud_code": None}, [], edge=_Echo())
    config = {"artifact_id": "0" * 32, "format": 1, "configs": {"plan": {"partition": "local"}},
              "model": {"classification": True}, "adaptation": {"enabled": False}}
    return Artifact(Path("."), config, {}, [part])


def measure_edge_loop(requests: int = 300, in_flight: int = 3, repeats: int = 5) -> tuple[float, list[float]]:
    """Seconds per request of the edge's own loop on an all-edge configuration (median, every run's value)."""
    from runtime.split_inference.pipeline import EdgeOptions, EdgeRunner

    art = _local_artifact()
    x = torch.zeros(ECHO_SHAPE)
    opts = EdgeOptions(max_in_flight=in_flight, emulate=False, cache=False, adapt=False)
    EdgeRunner(art, None, opts).run([(x,)] * 50)                       # warm-up
    runs = []
    for _ in range(repeats):
        res = EdgeRunner(art, None, opts).run([(x,)] * requests)
        runs.append(res.wall_s / requests)
    return statistics.median(runs), runs


def measure_request_overhead(requests: int = 200, in_flight: int = 3, repeats: int = 5) -> dict[str, Any]:
    """Per-request overhead of the runtime on this machine (s): {edge_s, cloud_s, latency_s, period_s,
    round_trip_s, edge_loop_s, spread, method}."""
    torch.set_num_threads(1)
    loop, loops = measure_edge_loop(in_flight=in_flight, repeats=repeats)
    service = CloudService(_echo_artifact())
    server, port = start_cloud_server(service, "127.0.0.1:0")
    state: dict[str, Any] = {"count": 0, "next": 0, "done": threading.Condition(), "window": None}

    def on_arrival(a: Arrival) -> None:
        with state["done"]:
            state["count"] += 1
            state["done"].notify_all()
        state["window"].release()

    link = EdgeLink(f"127.0.0.1:{port}", 1, "0" * 32, on_arrival)
    try:
        link.connect()
        _drive(link, state, 50, in_flight)                 # warm-up: connections, threads, allocator
        periods, trips = [], []
        for _ in range(repeats):                           # interleaved: pipelined, then one at a time
            periods.append(_drive(link, state, requests, in_flight) / requests)
            trips.append(_drive(link, state, max(20, requests // 4), 1) / max(20, requests // 4))
    finally:
        link.close()
        server.stop(grace=0.2)
    period, trip = statistics.median(periods), statistics.median(trips)
    return {"edge_s": period / 2, "cloud_s": period / 2, "latency_s": max(0.0, trip - period),
            "period_s": period, "round_trip_s": trip, "edge_loop_s": loop,
            "spread": {"period_s": [min(periods), max(periods)], "round_trip_s": [min(trips), max(trips)],
                       "edge_loop_s": [min(loops), max(loops)]},
            "method": (f"runtime transport over loopback in one process, echo of a {ECHO_SHAPE} fp32 tensor: "
                       f"{requests} pipelined requests ({in_flight} in flight) and {max(20, requests // 4)} one at a "
                       f"time, median of {repeats} interleaved runs; CPU split evenly between edge and cloud; the edge loop: "
                       f"the EdgeRunner on an all-edge echo, {in_flight} in flight, median of {repeats} runs")}
