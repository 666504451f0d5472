"""One flag name, each family its own choices and default (`--objective` of split-inference and moe-offload)."""
from __future__ import annotations

import argparse

import pytest

from core.errors import PlannerError
from planner.flags import Flag, add_flags, for_family, merge_flags, read_flags

A = (Flag("--objective", "choice", "a's", choices=("throughput", "latency"), default="throughput"),)
B = (Flag("--objective", "choice", "b's", choices=("e2e", "tpot"), default="e2e"),)


def _values(argv: list[str]):
    merged = merge_flags((("a", A), ("b", B)))
    ap = argparse.ArgumentParser()
    add_flags(ap, merged)
    return read_flags(ap.parse_args(argv), [f for f, _ in merged.values()])


def test_each_family_reads_its_own_default_and_choices() -> None:
    v = _values([])
    assert for_family(v, A)["objective"] == "throughput" and for_family(v, B)["objective"] == "e2e"
    v = _values(["--objective", "tpot"])
    assert for_family(v, B)["objective"] == "tpot"
    with pytest.raises(PlannerError, match="not one of this scenario's choices"):
        for_family(v, A)
    with pytest.raises(PlannerError):
        _values(["--objective", "fastest"])               # no family's choice


def test_other_conflicts_are_still_a_registry_bug() -> None:
    with pytest.raises(ValueError, match="declared differently"):
        merge_flags((("a", (Flag("--x", "int", "", default=1),)), ("b", (Flag("--x", "int", "", default=2),))))
