"""Pieces every family's lift writes the same way: hardware references and the solver's iteration trace."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from planner.schema import HardwareRef


def hardware_ref(hw: Any, role: str) -> HardwareRef:
    """A plan's reference to a hardware profile: name, fingerprint, role, memory and the first line of its source."""
    return HardwareRef(hw.name, hw.fingerprint(), role, hw.memory_bytes, hw.source.split("\n")[0][:200])


def solver_trace(events: Iterable[Any], limit: int | None = None) -> tuple[Mapping[str, Any], ...]:
    """Solver trace events as plain records (phase, iteration and the values it tracked)."""
    out = [{"phase": e.phase, "iteration": e.iteration, **e.values} for e in events]
    return tuple(out if limit is None else out[:limit])
