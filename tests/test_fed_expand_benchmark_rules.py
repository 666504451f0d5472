"""The fed-expand benchmark's protocol rules, fixed before its scored runs: the downstream target from the decision
seed's curves, and rounds to target (censored)."""
from __future__ import annotations

import pytest

from benchmarks.fed_expand import choose_lr, rounds_to, target_rule


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


def _sweep(*rows: tuple[float, float, float]) -> dict[str, dict[str, float]]:
    return {str(lr): {"final_token_accuracy": acc, "retention_share_of_base": ret} for lr, acc, ret in rows}


def test_retention_rule_takes_best_accuracy_among_rates_that_keep_the_base() -> None:
    sweep = _sweep((1e-3, 0.84, 1.01), (3e-3, 0.86, 0.95))
    assert choose_lr([1e-3, 3e-3], sweep, "accuracy", 0.98) == 3e-3
    assert choose_lr([1e-3, 3e-3], sweep, "retention", 0.98) == 1e-3
    assert choose_lr([1e-3, 3e-3], sweep, "retention", 0.90) == 3e-3


def test_retention_rule_falls_back_to_the_most_retentive_rate_when_none_qualifies() -> None:
    sweep = _sweep((1e-3, 0.80, 0.97), (3e-3, 0.86, 0.95))
    assert choose_lr([1e-3, 3e-3], sweep, "retention", 0.98) == 1e-3
