"""The fed-expand benchmark's protocol rules, fixed before its scored runs: the downstream target from the decision
seed's curves, and rounds to target (censored)."""
from __future__ import annotations

import pytest

from benchmarks.fed_expand import rounds_to, target_rule


def test_target_is_half_the_best_gain_when_no_method_reaches_it_in_round_one() -> None:
    r = target_rule(0.10, [[0.10, 0.14, 0.30, 0.50], [0.10, 0.12, 0.20, 0.30]])
    assert r["target_fraction"] == 0.5 and r["target_points"] == pytest.approx(20.0)
    assert r["target_above_round1"]


def test_target_moves_to_three_quarters_when_round_one_already_reaches_half() -> None:
    r = target_rule(0.10, [[0.10, 0.35, 0.40, 0.50], [0.10, 0.12, 0.20, 0.30]])   # round 1 gain 0.25 >= 0.5 x 0.4
    assert r["target_fraction"] == 0.75 and r["target_points"] == pytest.approx(30.0) and r["target_above_round1"]
    r = target_rule(0.10, [[0.10, 0.48, 0.49, 0.50]])                                  # nothing left to separate
    assert r["target_fraction"] == 0.75 and not r["target_above_round1"]


def test_rounds_to_target_is_censored_at_rounds_plus_one() -> None:
    assert rounds_to([0.1, 0.2, 0.35, 0.3], 0.3, 3) == 2
    assert rounds_to([0.1, 0.2, 0.25, 0.29], 0.3, 3) == 4
