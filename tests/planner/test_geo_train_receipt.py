"""The receipt's exposure replay (from measured step times) against the cost model where both are exact."""
from __future__ import annotations

import pytest

from planner.families.geo_train.artifact import exposure_replay
from solvers.geo_train.cost import expected_exposed_s


@pytest.mark.parametrize("step", [0.22, 0.25, 0.279, 0.3])
def test_replay_of_steady_steps_equals_the_cost_model(step: float) -> None:
    T, tau, h = 1.952, 7, 8
    got = exposure_replay([step] * 64, T, tau, h)
    assert got["exposed_s_per_step"] == pytest.approx(expected_exposed_s(T, tau, step, 0.0) / h, abs=1e-12)
    assert got["slots"] == 8 and got["slots_exposed"] == (8 if tau * step < T else 0)


def test_replay_counts_only_the_window_between_send_and_merge() -> None:
    steps = [0.3] * 64
    steps[7] = 5.0          # slot 1's last step holds a long wait: not hiding time (its compute = the median)
    steps[0] = 5.0          # the send step itself (quorum, all-reduce issue): before the window
    assert exposure_replay(steps, 2.2, 7, 8)["slots_exposed"] == 8       # 7 * 0.3 = 2.1 < 2.2 in every slot
    steps[3] = 1.0          # a slow step inside slot 1's window hides that slot's send
    assert exposure_replay(steps, 2.2, 7, 8)["slots_exposed"] == 7


def test_window_jitter_sees_load_phases_that_the_per_step_std_misses() -> None:
    import numpy as np

    from solvers.geo_train.cost import window_jitter_s

    rng = np.random.default_rng(0)
    indep = rng.normal(0.25, 0.03, 4000)
    assert window_jitter_s(indep, 7) == pytest.approx(0.03, rel=0.1)       # independent: the per-step std
    phased = 0.25 + np.repeat(rng.choice([-0.03, 0.03], 4000 // 20), 20)   # load in phases of 20 steps
    assert np.std(phased) == pytest.approx(0.03, rel=0.05)
    assert window_jitter_s(phased, 7) > 2.0 * np.std(phased)               # a window of 7 sees ~sqrt(7) x
    assert window_jitter_s([0.3] * 5, 7) == 0.0                            # too short to say


def test_pace_leaves_out_warm_up_and_the_slot_ends_where_the_merge_waits() -> None:
    from planner.families.geo_train.artifact import pace_from_steps

    steps = [0.3] * 64
    steps[0] = 4.0                                  # warm-up
    for end in range(7, 64, 8):
        steps[end] = 2.0                            # the slot's last step waits for the merge
    job = {"algorithm": "cocodc", "H": 32, "N": 4, "tau": 7, "groups": [[0, 1], [2, 3]]}
    t, sig = pace_from_steps(steps, job)
    assert t == pytest.approx(0.3) and sig == pytest.approx(0.0, abs=1e-12)
    t_sd, _ = pace_from_steps(steps, {**job, "algorithm": "streaming", "H": 16})     # slot = H / P = 8 as well
    assert t_sd == pytest.approx(0.3)


def test_first_quorum_excess_is_the_once_per_run_latency_only() -> None:
    from planner.families.geo_train.artifact import first_quorum_excess_s

    assert first_quorum_excess_s({"quorum_s": [4.2, 0.1, 0.3, 0.2]}) == pytest.approx(4.0)
    assert first_quorum_excess_s({"quorum_s": [0.05, 0.1, 0.3]}) == 0.0       # no slower than a later one
    assert first_quorum_excess_s({"quorum_s": [0.7]}) == 0.7
    assert first_quorum_excess_s({}) == 0.0


def test_steps_to_target_is_interpolated_not_quantised() -> None:
    """The benchmark's crossing: linear in log-perplexity between the last step above the target and the
    first at or below it, so the ratio is not quantised to the evaluation grid; wall time at a fractional step
    is linear within that step."""
    import math

    from benchmarks.geo_train import interpolate_crossing, wall_at

    assert interpolate_crossing((40, 20.0), (41, 18.0), 20.0) == 40.0
    assert interpolate_crossing((40, 20.0), (41, 18.0), 18.0) == 41.0
    mid = math.exp((math.log(20.0) + math.log(18.0)) / 2)
    assert interpolate_crossing((40, 20.0), (41, 18.0), mid) == pytest.approx(40.5)
    assert interpolate_crossing(None, (1, 10.0), 12.0) == 1.0
    assert wall_at([1.0, 2.0, 3.0], 1.5) == pytest.approx(2.0) and wall_at([1.0], 2.0) == float("inf")
