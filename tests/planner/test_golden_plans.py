"""CI on plans: today's planner must not regress against the committed golden plans (planner diff, 1 %)."""
from __future__ import annotations

import pytest

from planner.pipeline import plan_validator
from planner.plan_diff import diff_plans
from planner.serde import load
from tests.golden.golden_cases import CASES, HERE, make


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_regression_against_golden_plan(case: str) -> None:
    golden = load(HERE / f"{case}.json")
    new = make(case)
    res = diff_plans(golden, new, tolerance=0.01, validator=plan_validator)
    assert not res.regressed, res.reasons
    assert plan_validator(golden) == []
    assert new.objective.metric == golden.objective.metric
