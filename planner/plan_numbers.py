"""Range checks every plan's numbers get, whatever its family: run wherever a plan is read.

A metric's range follows from its name, the house rule being units in field names: times (`_ms`, `_s`),
byte counts (`bytes`), rates (`_bps`, `_rps`, `_per_s`, `x_per_y`) and counts (`tokens`, `participants`)
are never negative; fractions (`hit_rate`, `coverage`, `*_fraction`, Caesar's mean kept ratios) lie in
[0, 1]. And a plan's `objective.value` is the predicted metric it names. A family's own constraints
(decisions) are its validator's business; these checks are the spine's, so every family gets them.
Standard library only.

    >>> metric_range("tpot_ms"), metric_range("hit_rate"), metric_range("utility")
    ((0.0, None), (0.0, 1.0), None)
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Iterator, Mapping

NONNEGATIVE_TOKENS = frozenset({"ms", "s", "us", "bytes", "bps", "rps", "tokens", "flops", "time", "depth"})
NONNEGATIVE_NAMES = frozenset({"participants", "sitting_out", "oracles", "iterations"})
FRACTION_NAMES = frozenset({"hit_rate", "miss_rate", "coverage", "mean_download_ratio", "mean_upload_ratio"})
REL_TOL = 1e-6   # objective.value vs the metric it names: plans store 9 significant digits
NOISE = 1e-9     # floating-point noise allowed past a range's ends (a difference of equal sums: -1e-16 ms)


def metric_range(name: str) -> tuple[float, float | None] | None:
    """(low, high or None) a metric called `name` must lie in, or None when its name says nothing."""
    if name in FRACTION_NAMES or name.endswith("_fraction") or name.endswith("_hit_rate"):
        return (0.0, 1.0)
    tokens = name.lower().split("_")
    if name in NONNEGATIVE_NAMES or "per" in tokens[1:-1] or any(t in NONNEGATIVE_TOKENS for t in tokens) \
            or "bytes" in name:
        return (0.0, None)
    return None


def _numbers(obj: Any, path: str, key: str) -> Iterator[tuple[str, str, float]]:
    """(path, metric name, value) of every number under `obj` (a list's items take the list's name)."""
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, Real):
        yield path, key, float(obj)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}", str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]", key)


def _out_of_range(path: str, name: str, v: float) -> str | None:
    if math.isnan(v):   # written as null in the JSON (serde): "no figure"
        return None
    rng = metric_range(name)
    if rng is None:
        return None
    low, high = rng
    if v < low - NOISE:
        return f"{path} is {v:g}, but a {'fraction' if high is not None else 'time, size, rate or count'} " \
               "cannot be negative"
    if high is not None and v > high + NOISE:
        return f"{path} is {v:g}, but a fraction lies between 0 and 1"
    return None


def check_numbers(plan: Any) -> list[str]:
    """Every metric out of its range, and an objective that is not the metric it names (empty when sound)."""
    bad: list[str] = []
    sections: list[tuple[str, Any]] = [("predicted", plan.predicted), ("simulated", plan.simulated)]
    for name, b in sorted(plan.baselines.items()):
        sections += [(f"baselines.{name}.predicted", b.predicted), (f"baselines.{name}.simulated", b.simulated)]
    if plan.bound is not None:
        sections += [("bound.predicted", plan.bound.predicted), ("bound.simulated", plan.bound.simulated)]
    for where, section in sections:
        for path, name, v in _numbers(section, where, where):
            msg = _out_of_range(path, name, v)
            if msg:
                bad.append(msg)
    obj = plan.objective
    for path, v in (("objective.value", obj.value), *((("bound.value", plan.bound.value),) if plan.bound else ())):
        if isinstance(v, Real) and not isinstance(v, bool):
            msg = _out_of_range(path, obj.metric, float(v))
            if msg:
                bad.append(msg.replace(path, f"{path} ({obj.metric})", 1))
    if plan.predicted:
        named = plan.predicted.get(obj.metric)
        if not isinstance(named, Real) or isinstance(named, bool):
            bad.append(f"objective.metric {obj.metric} is not among the plan's predicted metrics")
        elif not math.isclose(float(obj.value), float(named), rel_tol=REL_TOL, abs_tol=1e-12):
            bad.append(f"objective.value is {obj.value:g}, but the plan's predicted {obj.metric} is {float(named):g}")
    return bad
