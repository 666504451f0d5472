"""The plan schema: a leaf module (stdlib only) of frozen records with units in their field names.

A `Plan` is what `planner plan` writes and every later stage reads. It records its inputs'
fingerprints, the solver and its config, the decisions, the predicted metrics (and, where a simulator
exists, the simulated ones, labelled), every baseline's metrics on the same inputs, and the bound.

Rules: fields are never removed or renamed within a schema version; new fields get defaults; families
keep their decisions as plain JSON-able mappings whose keys carry units (`budget_bytes`, `latency_ms`).
Serialisation lives in `planner/serde.py`; plans are never pickled.

Example:
    >>> from planner.schema import Plan, ModelRef, HardwareRef, SolverInfo, Objective
    >>> p = Plan(family="moe-offload", model=ModelRef("m", "sha256:0"), hardware=HardwareRef("h", "sha256:1"),
    ...          solver=SolverInfo(name="x", status="OPTIMAL"), objective=Objective("tpot_ms", "min", 1.0))
    >>> p.schema_version
    1
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

SCHEMA_VERSION = 1

# Solver statuses shared by every family (mirrors solvers.common.Status without importing it).
STATUSES = ("OPTIMAL", "FEASIBLE", "INFEASIBLE", "TIME_LIMIT", "NOT_CONVERGED", "PLACEHOLDER")


@dataclass(frozen=True)
class ModelRef:
    """Which model was planned: catalog name (or path) and a fingerprint of its config."""

    name: str
    fingerprint: str
    source: str = ""
    num_params: int = 0
    dtype: str = ""
    tiny: bool = False  # the small same-architecture model (real weights, runs on this machine)


@dataclass(frozen=True)
class HardwareRef:
    """Which hardware profile was used, with its fingerprint and the constants the plan relied on."""

    name: str
    fingerprint: str
    role: str = "device"
    memory_bytes: int = 0
    source: str = ""


@dataclass(frozen=True)
class SolverInfo:
    """The solver that produced the decisions, its config and outcome.

    `wall_time_s` is None unless the plan was made with `--record-timing`: a wall time differs from
    run to run, and plans must be byte-identical for identical inputs so that CI can diff them.
    """

    name: str
    status: str
    config: Mapping[str, Any] = field(default_factory=dict)
    wall_time_s: float | None = None
    iterations: int = 0
    trace: tuple[Mapping[str, Any], ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Objective:
    """The predicted metric the family optimises, its direction and the plan's value."""

    metric: str
    sense: str  # "min" or "max"
    value: float


@dataclass(frozen=True)
class BaselineResult:
    """One baseline on the same inputs: its policy parameters, its decisions' summary and metrics."""

    description: str
    params: Mapping[str, Any] = field(default_factory=dict)
    predicted: Mapping[str, Any] = field(default_factory=dict)
    simulated: Mapping[str, Any] = field(default_factory=dict)
    decisions: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Bound:
    """A bound on the objective (lower for "min"), how it was obtained and the plan's gap to it."""

    value: float
    kind: str
    gap: float  # (plan - bound) / bound for "min" objectives
    predicted: Mapping[str, Any] = field(default_factory=dict)
    simulated: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A complete, versioned deployment plan."""

    family: str
    model: ModelRef
    hardware: HardwareRef
    solver: SolverInfo
    objective: Objective
    decisions: Mapping[str, Any] = field(default_factory=dict)
    predicted: Mapping[str, Any] = field(default_factory=dict)
    simulated: Mapping[str, Any] = field(default_factory=dict)
    baselines: Mapping[str, BaselineResult] = field(default_factory=dict)
    bound: Bound | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    extra_hardware: tuple[HardwareRef, ...] = ()
    constraints: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION
