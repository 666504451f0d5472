"""The runtime benchmark's isolated-half check: host speed cancels, only the profiler's split of the model is left."""
from __future__ import annotations

import pytest

from benchmarks.split_inference_runtime import isolation_errors


def test_isolated_half_share_error_cancels_the_host_speed() -> None:
    # plan: whole 100 ms, the half 30 ms. Round 1 the host runs 2x slower, round 2 at speed, round 3 3x slower; the
    # half always takes 36 % of the whole as it runs: +20 % over the plan's 30 % share, whatever the host did
    h = {"artifact": "thr", "partition": "p0", "side": "cloud", "predicted_ms": 30.0, "predicted_whole_ms": 100.0,
         "measured_ms": [72.0, 36.0, 108.0], "whole_ms": [200.0, 100.0, 300.0]}
    (e,) = isolation_errors([h], {})
    assert e["share_error"] == pytest.approx(0.2) and e["host_level"] == pytest.approx(2.0) and e["scored"]
    # a half under 2 ms at the host's speed is listed, not scored; a half the plan gives no time is skipped
    tiny = dict(h, predicted_ms=0.5, measured_ms=[1.0, 0.5, 1.5])
    zero = dict(h, predicted_ms=0.0)
    out = isolation_errors([tiny, zero], {})
    assert len(out) == 1 and not out[0]["scored"] and out[0]["share_error"] == pytest.approx(0.0)


def test_emulation_figures_weight_overruns_by_requests_and_flag_a_cell_over_the_limit() -> None:
    from benchmarks.split_inference_runtime import OVERRUN_LIMIT, emulation_figures

    def run(share: float, n: int, wall: float, cpu: float) -> dict:
        return {"receipt": {"rows": [{"edge_overrun_share": share, "requests": n, "edge_compute_ms": wall,
                                      "edge_cpu_ms": cpu}]}}

    # edge: 0 of 30 and 5 of 10 requests overran -> 5/40; wall/CPU weighted by requests: (30*2+10*6)/(30*1+10*2)
    got = [run(0.0, 30, 2.0, 1.0), run(0.5, 10, 6.0, 2.0)]
    clouds = [{"requests": 20, "overruns": 1, "cpu_s": 2.0, "compute_s": 3.0},
              {"requests": 20, "overruns": 0, "cpu_s": 2.0, "compute_s": 2.0}]
    e = emulation_figures(clouds, got)
    assert e["edge_overrun_share"] == pytest.approx(5 / 40) and e["edge_wall_over_cpu"] == pytest.approx(120 / 50)
    assert e["cloud_overrun_share"] == pytest.approx(1 / 40) and e["cloud_wall_over_cpu"] == pytest.approx(5 / 4)
    assert e["held"] is (5 / 40 <= OVERRUN_LIMIT)
    assert emulation_figures(clouds, [run(0.0, 30, 2.0, 1.0)])["held"]
    assert emulation_figures([], [])["held"] and emulation_figures([], [])["cloud_overrun_share"] is None
