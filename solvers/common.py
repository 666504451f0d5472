"""Shared solver vocabulary: status, errors, and the iteration trace. Pure Python, no torch.

Every family's `solve(problem, config) -> Solution` reports a `Status`, an `objective`, a `bound`
where the method has one, its `wall_time_s` and an iteration `trace`; an impossible request raises
`InfeasibleError` whose message says what to change.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from core.errors import InfeasibleError  # re-exported: solvers raise it, the CLI prints it

__all__ = ["InfeasibleError", "Status", "Stopwatch", "TraceEvent"]


class Status(str, enum.Enum):
    """Outcome of a solve."""

    OPTIMAL = "OPTIMAL"          # optimal for the (discretised) problem as posed
    FEASIBLE = "FEASIBLE"        # feasible, optimality not proven (heuristic or gap > 0)
    INFEASIBLE = "INFEASIBLE"
    TIME_LIMIT = "TIME_LIMIT"    # stopped by a time limit with a feasible answer
    NOT_CONVERGED = "NOT_CONVERGED"


@dataclass(frozen=True)
class TraceEvent:
    """One iteration of a solver: which phase, and the numbers it tracked."""

    phase: str
    iteration: int
    values: dict[str, Any] = field(default_factory=dict)


class Stopwatch:
    """Wall-clock timer for `wall_time_s` (time is measured, never used to make decisions)."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since creation."""
        return time.perf_counter() - self._t0
