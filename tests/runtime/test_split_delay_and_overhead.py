"""The transport's emulated one-way delay (a delay line, not a serial wait) and the per-request cost measurement."""
from __future__ import annotations

import time
from typing import Iterator

import pytest

from runtime.split_inference.transport import delayed, now


def _burst(n: int, gap_s: float) -> Iterator[bytes]:
    for i in range(n):
        time.sleep(gap_s)
        yield bytes([i])


def test_delay_line_holds_each_message_and_overlaps_their_delays() -> None:
    delay = 0.2
    t0 = now()
    got = [(t, now(), m) for t, m in delayed(_burst(5, 0.005), delay)]
    total = now() - t0
    assert [m for _, _, m in got] == [bytes([i]) for i in range(5)]            # order kept
    for t, released, _ in got:
        assert released >= t - 1e-6 and t - t0 >= delay                       # each held for the delay
    # five messages 5 ms apart: ~0.025 + 0.2 s in all; a serial wait would take 5 x 0.2 = 1 s
    assert total < 0.6


def test_delay_line_passes_errors_after_the_messages_before_them() -> None:
    def broken() -> Iterator[bytes]:
        yield b"a"
        raise RuntimeError("stream broke")

    seen = []
    with pytest.raises(RuntimeError, match="stream broke"):
        for _, m in delayed(broken(), 0.01):
            seen.append(m)
    assert seen == [b"a"]
    assert [m for _, m in delayed(iter([b"x", b"y"]), 0.0)] == [b"x", b"y"]     # no delay: passes through


def test_request_overhead_is_measured_through_the_transport() -> None:
    from runtime.split_inference.overhead import measure_request_overhead

    got = measure_request_overhead(requests=30, repeats=1)
    assert 0 < got["edge_s"] == got["cloud_s"] < 0.5
    assert got["period_s"] == pytest.approx(got["edge_s"] + got["cloud_s"])
    assert got["latency_s"] >= 0 and got["round_trip_s"] > 0
    # the edge loop runs the real EdgeRunner, every request answered at the edge
    assert 0 < got["edge_loop_s"] < 0.5 and got["spread"]["edge_loop_s"][0] <= got["edge_loop_s"]
