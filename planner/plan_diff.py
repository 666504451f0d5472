"""`planner diff`: what changed between two plans, and whether the new one regressed.

A regression is (a) the predicted objective worse than the old one by more than the tolerance
(relative), or (b) the new plan violating one of its own constraints (checked by re-validating it
with its family's plan validator). Both are what users put in CI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from planner.schema import Plan

PlanValidator = Callable[[Plan], list[str]]


@dataclass(frozen=True)
class Change:
    """One changed value: dotted path, old and new (None where absent)."""

    path: str
    old: Any
    new: Any


@dataclass
class DiffResult:
    """All changes plus the verdict."""

    changes: list[Change] = field(default_factory=list)
    objective_old: float = 0.0
    objective_new: float = 0.0
    objective_metric: str = ""
    relative_change: float = 0.0
    regressed: bool = False
    violations: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


VOLATILE = ("solver.wall_time_s",)


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(obj, Mapping):
        for k in sorted(obj):
            _flatten(obj[k], f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(x, Mapping) for x in obj):
        for i, x in enumerate(obj):
            _flatten(x, f"{prefix}[{i}]", out)
    else:
        out[prefix] = obj


def _close(a: Any, b: Any, rel: float = 1e-9) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)
    return a == b


def diff_plans(old: Plan, new: Plan, tolerance: float, validator: PlanValidator | None = None) -> DiffResult:
    """Compare two plans (same family expected); `tolerance` is relative (0.01 = 1 %)."""
    from planner.serde import canonical

    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(canonical(old), "", a)
    _flatten(canonical(new), "", b)
    res = DiffResult()
    for key in sorted(set(a) | set(b)):
        if key in VOLATILE or key.startswith("solver.trace"):
            continue
        if not _close(a.get(key), b.get(key)):
            res.changes.append(Change(key, a.get(key), b.get(key)))
    res.objective_metric = new.objective.metric
    res.objective_old = float(old.objective.value)
    res.objective_new = float(new.objective.value)
    base = abs(res.objective_old) if res.objective_old else 1.0
    delta = res.objective_new - res.objective_old
    if new.objective.sense == "max":
        delta = -delta
    res.relative_change = delta / base
    if old.family != new.family:
        res.reasons.append(f"family changed from {old.family} to {new.family}")
        res.regressed = True
    if old.objective.metric != new.objective.metric:
        res.reasons.append(f"objective metric changed from {old.objective.metric} to {new.objective.metric}")
        res.regressed = True
    elif res.relative_change > tolerance:
        res.reasons.append(
            f"{res.objective_metric} got worse by {res.relative_change:.2%} ({res.objective_old:.6g} -> "
            f"{res.objective_new:.6g}), above the {tolerance:.2%} tolerance")
        res.regressed = True
    if new.solver.status in ("INFEASIBLE",):
        res.reasons.append("the new plan is infeasible")
        res.regressed = True
    if validator is not None:
        res.violations = validator(new)
        if res.violations:
            res.reasons.append(f"the new plan violates {len(res.violations)} constraint(s)")
            res.regressed = True
    return res
