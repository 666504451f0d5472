"""`planner diff`: what changed between two plans, and whether the new one regressed.

Two plans are comparable only when they answer the same request: the same family, model (name, tiny
or not), hardware and workload. Otherwise `diff` refuses with a one-line error (a tiny and a full-size
plan are not a regression test of each other). A regression is (a) the predicted objective worse
than the old one by more than the tolerance (relative), (b) the new plan infeasible, or (c) the new
plan violating one of its own constraints (its family's validator). Changes are listed in order of
interest: inputs, the objective and the plan's own decisions and metrics, then the baselines.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from core.errors import InputMismatchError
from planner.schema import Plan
from planner.tables import table

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
# sections in the order a reader wants them; anything else comes last
ORDER = ("model", "hardware", "extra_hardware", "inputs", "constraints", "objective", "solver.status", "decisions",
         "predicted", "simulated", "bound", "solver", "notes", "baselines")


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
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)
    return a == b


def _rank(path: str) -> int:
    for i, prefix in enumerate(ORDER):
        if path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "["):
            return i
    return len(ORDER)


def request_of(plan: Plan) -> dict[str, Any]:
    """What the user asked for: family, model, hardware and workload (fingerprints are compared as changes)."""
    inputs = dict(plan.inputs)
    return {"family": plan.family, "model": plan.model.name, "tiny": plan.model.tiny,
            "hardware": plan.hardware.name, "extra hardware": [h.name for h in plan.extra_hardware],
            "workload": inputs.get("workload"), "link": inputs.get("link")}


def check_comparable(old: Plan, new: Plan) -> None:
    """Raise InputMismatchError when the two plans answer different requests."""
    a, b = request_of(old), request_of(new)
    for key in a:
        if a[key] != b[key]:
            raise InputMismatchError(f"the plans answer different requests: {key} {a[key]!r} vs {b[key]!r}",
                                     "diff plans made with the same model, hardware and workload flags")


def diff_plans(old: Plan, new: Plan, tolerance: float, validator: PlanValidator | None = None) -> DiffResult:
    """Compare two plans of the same request; `tolerance` is relative (0.01 = 1 %)."""
    from planner.serde import canonical

    check_comparable(old, new)
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(canonical(old), "", a)
    _flatten(canonical(new), "", b)
    res = DiffResult()
    for key in sorted(set(a) | set(b), key=lambda k: (_rank(k), k)):
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
    if old.objective.metric != new.objective.metric:
        res.reasons.append(f"objective metric changed from {old.objective.metric} to {new.objective.metric}")
        res.regressed = True
    elif res.relative_change > tolerance:
        res.reasons.append(
            f"{res.objective_metric} got worse by {res.relative_change:.2%} ({fmt_value(res.objective_metric, res.objective_old)}"
            f" -> {fmt_value(res.objective_metric, res.objective_new)}), above the {tolerance:.2%} tolerance")
        res.regressed = True
    if new.solver.status == "INFEASIBLE":
        res.reasons.append("the new plan is infeasible")
        res.regressed = True
    if validator is not None:
        res.violations = validator(new)
        if res.violations:
            res.reasons.append(f"the new plan violates {len(res.violations)} constraint(s)")
            res.regressed = True
    return res


def fmt_value(path: str, v: Any) -> str:
    """A value with the unit its key names (`_ms`, `_s`, `_bytes`, `_bps`, `hit_rate`, ...)."""
    from planner.units import fmt_bytes, fmt_rate

    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        text = str(v)
        return text if len(text) <= 40 else text[:39] + "…"
    key = path.rsplit(".", 1)[-1]
    if key.endswith("_ms") or key in ("tpot_ms",):
        return f"{v:.4g} ms"
    if key.endswith("_s"):
        return f"{v:.4g} s"
    if key.endswith("bytes") or key.endswith("_bytes") or "bytes_per" in key:
        return fmt_bytes(v)
    if key.endswith("bits_per_s"):
        return fmt_rate(v)
    if key.endswith("_rate") or key in ("split_ratio", "recall", "gap"):
        return f"{v:.2%}" if key != "split_ratio" else f"{v:.4g}"
    if key.endswith("_rps") or key == "tokens_per_s":
        return f"{v:.4g}/s"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def render_diff(res: DiffResult, old: Plan, new: Plan, tolerance: float, max_rows: int) -> Any:
    """Rich renderables of a diff: the changes table (in order of interest), the objective line, the verdict."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    if not res.changes:
        parts.append(Text("plans are identical (volatile fields such as wall time ignored)"))
    else:
        t = table(f"{len(res.changes)} changed value(s), the plan's own first")
        t.add_column("path", overflow="fold")
        t.add_column("old", justify="right")
        t.add_column("new", justify="right")
        for c in res.changes[:max_rows]:
            t.add_row(c.path, fmt_value(c.path, c.old), fmt_value(c.path, c.new))
        if len(res.changes) > max_rows:
            t.add_row(f"... {len(res.changes) - max_rows} more (--max-rows)", "", "")
        parts.append(t)
    m = res.objective_metric
    parts.append(Text(f"{m}: {fmt_value(m, res.objective_old)} -> {fmt_value(m, res.objective_new)} "
                      f"({'worse' if res.relative_change > 0 else 'better or equal'} by {abs(res.relative_change):.2%}, "
                      f"tolerance {tolerance:.2%})"))
    for v in res.violations:
        parts.append(Text(f"violation: {v}"))
    if res.regressed:
        for r in res.reasons:
            parts.append(Text(f"REGRESSION: {r}"))
    else:
        parts.append(Text("OK: no regression"))
    return Group(*parts)
