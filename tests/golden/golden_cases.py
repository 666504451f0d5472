"""The golden plan cases CI guards with `planner diff` semantics, and how to regenerate them.

Regenerate after an intended change: `.venv/bin/python -m tests.golden.golden_cases` (writes the
JSON files next to this module); review the diff like any other code change.
"""
from __future__ import annotations

from pathlib import Path

from planner.api import plan_from_argv
from planner.schema import Plan
from planner.serde import save

HERE = Path(__file__).resolve().parent

# each case is the `planner plan` argument list that makes it
CASES: dict[str, list[str]] = {
    "mixtral-8x7b.a100_24gb": ["mixtral-8x7b", "--hardware", "a100_24gb", "--sim-tokens", "256"],
    "mixtral-8x7b.rtx4090_24gb.4bit": ["mixtral-8x7b", "--hardware", "rtx4090_24gb", "--expert-bits", "4",
                                       "--expert-budget", "50%", "--sim-tokens", "256"],
    "qwen1.5-moe-a2.7b.h100_24gb": ["qwen1.5-moe-a2.7b", "--hardware", "h100_24gb", "--trace-tokens", "600",
                                    "--sim-tokens", "200"],
    "digits-cnn.raspberry_pi5_8gb.1mbps": ["digits-cnn", "--hardware", "raspberry_pi5_8gb", "--cloud", "a100_80gb",
                                           "--link", "1mbps"],
    "resnet50.jetson_orin_nano_8gb.20mbps": ["resnet50", "--hardware", "jetson_orin_nano_8gb", "--cloud", "a100_80gb",
                                             "--link", "20mbps", "--rtt", "30ms"],
    # the README's split example: at 100 Mbit/s a mid-graph cut beats both all-edge and all-cloud on throughput
    "resnet50.jetson_orin_nano_8gb.100mbps": ["resnet50", "--hardware", "jetson_orin_nano_8gb", "--cloud",
                                              "a100_80gb", "--link", "100mbps"],
}


def make(name: str) -> Plan:
    """Plan one golden case."""
    return plan_from_argv(CASES[name]).plan


if __name__ == "__main__":
    for case in CASES:
        path = save(make(case), HERE / f"{case}.json")
        print(f"wrote {path}")
