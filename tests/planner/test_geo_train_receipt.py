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
