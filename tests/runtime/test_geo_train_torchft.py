"""CoCoDC on torchft with two region processes (gloo + lighthouse), tiny Llama, a few steps.

One launch runs several configurations in the same two processes (imports paid once):
  0  torchft's own Streaming DiLoCo, tau = 0, alpha = 0 (torchft.local_sgd.DiLoCo, untouched)
  1  CoCoDC with round-robin choice and tau = 0: g1 = 0, the guard gives lambda = 0 -> must equal run 0 bit for bit
  2  CoCoDC, adaptive choice, tau = 1, N = 4 slots per window of H = 8, P = 2 fragments
The same launch then starts an endless run and kills a region in it: the other stops and the caller gets one
line.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from runtime.geo_train.launch import RegionFailure, run_regions

BASE = {"regions": 2, "seed": 0, "H": 8, "N": 2, "tau": 0, "alpha": 0.0, "lam0": 0.2, "kappa": 4e-4,
        "adaptive": False, "compensate": True, "groups": [[0], [1]], "inner_lr": 3e-3, "outer_lr": 0.7,
        "outer_momentum": 0.9, "batch": 4, "seq_len": 16, "steps": 16, "eval_every": 0, "timeout_s": 30,
        "wan": {"rate_bps": 1e9, "rtt_s": 0.002}, "data": {"vocab": 64, "sources": 2, "eval_batch": 4},
        "model_config": {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 32}}
RUNS = [{"algorithm": "streaming"},
        {"algorithm": "cocodc", "adaptive": False},
        {"algorithm": "cocodc", "adaptive": True, "tau": 1, "N": 4}]


@pytest.fixture(scope="module")
def session() -> dict:
    """One launch of two region processes for every test here: runs 0-1 as the first batch, run 2 handed to
    the same processes afterwards (`then`, as the benchmark plans its runs from a calibration batch), then an
    endless run during which region 1 is killed with SIGKILL (the fault test, without a second start-up)."""
    batches: list[list[list[dict]]] = []
    killed: dict = {}

    def kill_soon(procs: list) -> None:
        def go() -> None:
            time.sleep(2.0)                                # inside the endless run (its model and manager are up)
            if procs[1].poll() is None:
                killed["at"] = time.monotonic()
                os.kill(procs[1].pid, signal.SIGKILL)
        threading.Thread(target=go, daemon=True).start()

    procs_seen: list = []

    def then(batch: list[list[dict]]) -> list[dict] | None:
        batches.append(batch)
        if len(batches) == 1:
            return RUNS[2:]
        kill_soon(procs_seen[0])
        return [{"algorithm": "cocodc", "adaptive": True, "N": 4, "tau": 1, "steps": 100000}]

    t0 = time.monotonic()
    with pytest.raises(RegionFailure) as exc:
        run_regions({**BASE, "runs": RUNS[:2]}, time_limit_s=400, on_start=procs_seen.append, then=then)
    return {"logs": batches[0] + batches[1], "batch_sizes": [len(b) for b in batches], "failure": str(exc.value),
            "stopped_after_kill_s": time.monotonic() - killed.get("at", t0), "killed": "at" in killed}


@pytest.fixture(scope="module")
def logs(session: dict) -> list[list[dict]]:
    assert session["batch_sizes"] == [2, 1]                 # batches come back in order
    return session["logs"]


def test_every_run_has_its_own_lighthouse(logs: list[list[dict]]) -> None:
    # one lighthouse for all runs held each later run's first quorum ~4.8 s (the last run's replicas still
    # counted as heartbeating); the regions of one run share its lighthouse, no two runs share one
    per_run = [{r["lighthouse"] for r in run} for run in logs]
    assert all(len(s) == 1 for s in per_run)
    assert len(set.union(*per_run)) == len(logs) == 3


def test_round_robin_with_tau_zero_reproduces_torchft_streaming_diloco_exactly(logs: list[list[dict]]) -> None:
    torchft, ours = logs[0], logs[1]
    for r in range(2):
        assert ours[r]["manager_step"] == torchft[r]["manager_step"] == 16 // 4     # every slot committed
        assert ours[r]["final_params"] == torchft[r]["final_params"]                 # bitwise, every tensor
        assert ours[r]["loss"] == torchft[r]["loss"]
    assert ours[0]["choices"] == [0, 1, 0, 1]


def test_tau_zero_guard_gives_lambda_zero(logs: list[list[dict]]) -> None:
    for r in range(2):
        assert logs[1][r]["lambdas"] and all(lam == 0.0 for lam in logs[1][r]["lambdas"])


def test_adaptive_regions_agree_and_every_fragment_goes_once_per_window(logs: list[list[dict]]) -> None:
    a, b = logs[2]
    assert a["choices"] == b["choices"] and len(a["choices"]) == 16 // 2       # one choice per slot of h = 2
    n = 4
    for p in range(2):
        ks = [k for k, c in enumerate(a["choices"]) if c == p]
        assert max(y - x for x, y in zip([-1] + ks, ks)) <= n
    assert a["choices"] != [0, 1] * 4                     # the drift scores did choose (not round-robin)
    assert any(lam > 0 for lam in a["lambdas"])           # tau = 1: g1 != 0, compensation applied
    assert a["payload_bytes"] > 0 and a["blocked_s"] >= 0


def test_killed_region_stops_the_run_with_one_line(session: dict) -> None:
    assert session["killed"] and "region 1 stopped (killed by signal 9)" in session["failure"]
    assert "\n" not in session["failure"]
    assert session["stopped_after_kill_s"] < 60            # the other region is stopped, nothing hangs
