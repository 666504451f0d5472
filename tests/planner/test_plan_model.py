"""`plan_model`: every family's emit/run finds the plan's model, or refuses one that changed since the plan."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from core.errors import InputMismatchError
from planner.registry import plan_model, resolve_model
from planner.serde import load

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.mark.parametrize("name", ["mixtral-8x7b.a100_24gb.json", "resnet50.jetson_orin_nano_8gb.20mbps.json"])
def test_the_catalog_model_of_a_plan_is_found_and_a_changed_one_refused(name: str) -> None:
    plan = load(GOLDEN / name)
    assert plan_model(plan).name == plan.model.name
    stale = dataclasses.replace(plan, model=dataclasses.replace(plan.model, fingerprint="sha256:0000000000000000"))
    with pytest.raises(InputMismatchError, match="no longer matches the plan's model fingerprint") as exc:
        plan_model(stale)
    assert "re-plan" in exc.value.fix
    assert plan_model(plan, resolve_model(plan.model.name)).fingerprint(plan.model.tiny) == plan.model.fingerprint
