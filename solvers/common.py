"""Shared solver vocabulary: status, errors, and the iteration trace. Pure Python, no torch.

Every family's `solve(problem, config) -> Solution` reports a `Status`, an `objective`, a `bound`
where the method has one, its `wall_time_s` and an iteration `trace`; an impossible request raises
`InfeasibleError` whose message says what to change.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from core.errors import InfeasibleError  # re-exported: solvers raise it, the CLI prints it

__all__ = ["Baseline", "ExactReference", "InfeasibleError", "Solution", "Status", "Stopwatch", "TraceEvent"]


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


@dataclass(frozen=True, kw_only=True)
class Solution:
    """What every solver, baseline and exact reference of every family returns.

    Families subclass it with their decisions (arrays in problem order) and keep `metrics` as their
    own metrics record, computed by the family's cost model for exactly these decisions, so that the
    lift never re-evaluates. An impossible request is never a flag beside a feasible status: either
    `status` is INFEASIBLE (a baseline whose fixed policy cannot meet the constraints, reported as
    such) or the solver raises `InfeasibleError` naming the budget that would be feasible.
    """

    status: Status
    objective: float                              # the family's objective in SI units (s, B, 1/s)
    metrics: Any = None                           # the family's metrics record for these decisions
    bound: float | None = None                    # a proven bound on the objective, where the method has one
    wall_time_s: float = 0.0
    trace: tuple[TraceEvent, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)   # config / baseline policy parameters, shown in plans

    @property
    def feasible(self) -> bool:
        """Whether the decisions meet every constraint of the problem."""
        return self.status != Status.INFEASIBLE


@dataclass(frozen=True)
class Baseline:
    """A published policy run on the same problem: its description, its parameters (shown in plans) and
    `solve(problem) -> Solution` (always a Solution, INFEASIBLE where the policy cannot meet the constraints;
    it raises only for malformed problems)."""

    name: str
    description: str
    solve: Callable[[Any], Solution]
    params: Mapping[str, Any] = field(default_factory=dict)
    in_space: bool = False                                  # its configuration lies inside the method's plan space
    unsupported: Callable[[Any], str | None] = lambda problem: None   # why it cannot run on this problem, if so

    def skip_reason(self, problem: Any) -> str | None:
        """Why this baseline cannot be evaluated on `problem` (e.g. a hardware figure it needs is unknown)."""
        return self.unsupported(problem)


class ExactReference(Protocol):
    """An exact solver for small instances that owns its size limits."""

    name: str

    def unsupported(self, problem: Any) -> str | None:
        """Why this instance is too large (one phrase), or None when `solve` applies."""

    def solve(self, problem: Any, time_limit_s: float) -> Solution:
        """Optimal (or TIME_LIMIT with a bound) solution of `problem`."""
