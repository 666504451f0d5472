"""Plan (de)serialisation: deterministic JSON, schema-version checks, clear errors on bad files.

Determinism rules: keys sorted, floats rounded to `FLOAT_DIGITS` (9) significant digits, tuples written
as lists, two-space indentation, one trailing newline. The same Plan always gives the same bytes.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from core.atomic_io import write_text_atomic
from core.errors import PlanFormatError, reason_of
from planner.plan_numbers import check_numbers
from planner.schema import (
    SCHEMA_VERSION,
    STATUSES,
    BaselineResult,
    Bound,
    HardwareRef,
    ModelRef,
    Objective,
    Plan,
    SolverInfo,
)

FLOAT_DIGITS = 9


def round_float(x: float, digits: int = FLOAT_DIGITS) -> float | None:
    """Round to `digits` significant digits; NaN/inf become None (JSON has no such numbers)."""
    if not math.isfinite(x):
        return None
    if x == 0.0:
        return 0.0
    return float(f"{x:.{digits}g}")


def canonical(obj: Any) -> Any:
    """Turn dataclasses, mappings, tuples and numpy scalars into canonical JSON-able values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return round_float(obj)
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    # numpy scalars and arrays without importing numpy here (schema and serde stay light)
    if hasattr(obj, "tolist"):
        return canonical(obj.tolist())
    if hasattr(obj, "item"):
        return canonical(obj.item())
    raise TypeError(f"cannot serialise {type(obj).__name__} in a plan")


def dumps(plan: Plan) -> str:
    """Deterministic JSON text of a plan."""
    return json.dumps(canonical(plan), sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n"


def save(plan: Plan, path: str | Path) -> Path:
    """Write a plan atomically and return its path."""
    return write_text_atomic(path, dumps(plan))


def _require(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise PlanFormatError(f"plan is missing '{where}{key}'", "regenerate it with `planner plan`")
    return d[key]


_NUMBER = (int, float)
# the type each record field must have in a plan file (None: optional)
_FIELD_TYPES: dict[type, dict[str, tuple[type, ...]]] = {
    ModelRef: {"name": (str,), "fingerprint": (str,), "source": (str,), "num_params": (int,), "dtype": (str,),
               "tiny": (bool,)},
    HardwareRef: {"name": (str,), "fingerprint": (str,), "role": (str,), "memory_bytes": _NUMBER, "source": (str,)},
    SolverInfo: {"name": (str,), "status": (str,), "config": (dict,), "wall_time_s": _NUMBER + (type(None),),
                 "iterations": (int,), "trace": (tuple,), "note": (str,)},
    Objective: {"metric": (str,), "sense": (str,), "value": _NUMBER},
    BaselineResult: {"description": (str,), "params": (dict,), "predicted": (dict,), "simulated": (dict,),
                     "decisions": (dict,)},
    Bound: {"value": _NUMBER, "kind": (str,), "gap": _NUMBER, "predicted": (dict,), "simulated": (dict,)},
}


def _check_record(rec: Any, where: str) -> None:
    """Every field of a plan record has the type the schema says (a string objective is not a plan)."""
    for name, types in _FIELD_TYPES[type(rec)].items():
        v = getattr(rec, name)
        if isinstance(v, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(v, types)
        if not ok:
            kind = {int: "number", float: "number", str: "string", dict: "object", bool: "true/false",
                    tuple: "list"}.get(types[0], types[0].__name__)
            raise PlanFormatError(f"plan field '{where}.{name}' is {v!r}, not a {kind}",
                                  "regenerate the plan with `planner plan`")
    if isinstance(rec, Objective) and rec.sense not in ("min", "max"):
        raise PlanFormatError(f"plan field 'objective.sense' is {rec.sense!r}", "regenerate the plan with `planner plan`")
    if isinstance(rec, SolverInfo) and rec.status not in STATUSES:
        raise PlanFormatError(f"plan field 'solver.status' is {rec.status!r}, not one of {', '.join(STATUSES)}",
                              "regenerate the plan with `planner plan`")


def from_dict(d: dict[str, Any], source: str = "plan") -> Plan:
    """Build a Plan from its JSON dict, checking the schema version, required keys, field types and every
    metric's range (`planner.plan_numbers`); `source` names the file in errors."""
    if not isinstance(d, dict):
        raise PlanFormatError("plan JSON is not an object", "pass a file written by `planner plan`")
    version = d.get("schema_version")
    if version is None:
        raise PlanFormatError("file has no 'schema_version', so it is not a plan", "pass a file written by `planner plan`")
    if version != SCHEMA_VERSION:
        raise PlanFormatError(
            f"plan has schema_version {version} but this planner reads version {SCHEMA_VERSION}",
            "regenerate the plan with this version of `planner plan`",
        )
    try:
        model = ModelRef(**_require(d, "model", ""))
        hardware = HardwareRef(**_require(d, "hardware", ""))
        solver_d = dict(_require(d, "solver", ""))
        solver_d["trace"] = tuple(solver_d.get("trace", ()))
        solver = SolverInfo(**solver_d)
        objective = Objective(**_require(d, "objective", ""))
        baselines = {k: BaselineResult(**v) for k, v in d.get("baselines", {}).items()}
        bound = Bound(**d["bound"]) if d.get("bound") else None
        extra = tuple(HardwareRef(**h) for h in d.get("extra_hardware", ()))
        for key in ("decisions", "predicted", "simulated", "inputs", "constraints", "baselines"):
            if not isinstance(d.get(key, {}), dict):
                raise PlanFormatError(f"plan field '{key}' is not an object", "regenerate the plan with `planner plan`")
        if not isinstance(d.get("family"), str):
            raise PlanFormatError("plan field 'family' is not a string", "regenerate the plan with `planner plan`")
        for where, rec in (("model", model), ("hardware", hardware), ("solver", solver), ("objective", objective),
                           *((f"baselines.{k}", v) for k, v in baselines.items()), ("bound", bound),
                           *(("extra_hardware", h) for h in extra)):
            if rec is not None:
                _check_record(rec, where)
        plan = Plan(
            family=_require(d, "family", ""),
            model=model,
            hardware=hardware,
            solver=solver,
            objective=objective,
            decisions=d.get("decisions", {}),
            predicted=d.get("predicted", {}),
            simulated=d.get("simulated", {}),
            baselines=baselines,
            bound=bound,
            inputs=d.get("inputs", {}),
            extra_hardware=extra,
            constraints=d.get("constraints", {}),
            notes=tuple(d.get("notes", ())),
            schema_version=version,
        )
    except (TypeError, AttributeError) as exc:  # unexpected or missing dataclass fields, non-object records
        raise PlanFormatError(f"plan has malformed fields ({exc})", "regenerate it with `planner plan`") from exc
    bad = check_numbers(plan)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise PlanFormatError(f"{source}: {bad[0]}{more}", "regenerate it with `planner plan`")
    return plan


def loads(text: str, source: str = "plan") -> Plan:
    """Parse plan JSON text."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFormatError(
            f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno})",
            "pass a plan file written by `planner plan`",
        ) from exc
    return from_dict(d, source)


def load(path: str | Path) -> Plan:
    """Read a plan file with one-line errors for missing, unreadable or malformed files."""
    p = Path(path)
    if not p.exists():
        raise PlanFormatError(f"plan file {p} does not exist", "check the path or create it with `planner plan ... -o FILE`")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFormatError(f"cannot read plan file {p} ({reason_of(exc)})", "pass a readable plan JSON file") from exc
    return loads(text, source=str(p))
