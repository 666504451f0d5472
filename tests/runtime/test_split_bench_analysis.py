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
