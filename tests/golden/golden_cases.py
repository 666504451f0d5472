"""The golden plan cases CI guards with `planner diff` semantics, and how to regenerate them.

Regenerate after an intended change: `.venv/bin/python -m tests.golden.golden_cases` (writes the
JSON files next to this module); review the diff like any other code change.
"""
from __future__ import annotations

from pathlib import Path

from planner.lowering.moe_offload import MoeOffloadOptions
from planner.pipeline import PlanRequest, plan
from planner.schema import Plan
from planner.serde import save

HERE = Path(__file__).resolve().parent

CASES: dict[str, PlanRequest] = {
    "mixtral-8x7b.a100_24gb": PlanRequest("mixtral-8x7b", "a100_24gb", moe=MoeOffloadOptions(sim_tokens=256)),
    "mixtral-8x7b.rtx4090_24gb.4bit": PlanRequest(
        "mixtral-8x7b", "rtx4090_24gb", moe=MoeOffloadOptions(expert_bits=4, expert_budget="50%", sim_tokens=256)),
    "qwen1.5-moe-a2.7b.h100_24gb": PlanRequest(
        "qwen1.5-moe-a2.7b", "h100_24gb", moe=MoeOffloadOptions(trace_tokens=600, sim_tokens=200)),
}


def make(name: str) -> Plan:
    """Plan one golden case."""
    return plan(CASES[name]).plan


if __name__ == "__main__":
    for case in CASES:
        path = save(make(case), HERE / f"{case}.json")
        print(f"wrote {path}")
