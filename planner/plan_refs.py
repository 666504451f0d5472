"""Pieces every family's lift writes the same way: hardware references and the solver's iteration trace."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from planner.schema import HardwareRef


def hardware_ref(hw: Any, role: str) -> HardwareRef:
    """A plan's reference to a hardware profile: name, fingerprint, role, memory and the first line of its source."""
    return HardwareRef(hw.name, hw.fingerprint(), role, hw.memory_bytes, hw.source.split("\n")[0][:200])


def population_refs(population: Any) -> tuple[HardwareRef, tuple[HardwareRef, ...]]:
    """A federated plan's hardware: the population as one reference (fingerprint, the largest device's memory
    (never a sum over devices: no device can use another's memory), kinds), and a
    reference per device kind, sorted (a kind given as a YAML path that has moved since is left out: the
    population's fingerprint still pins it)."""
    from planner.registry import resolve_hardware

    kinds = sorted({d.kind for d in population.devices})
    whole = HardwareRef(f"population {population.source}", population.fingerprint(), "clients",
                        int(max(d.memory_bytes for d in population.devices)),
                        f"{len(population)} clients of {len(kinds)} kinds: {', '.join(kinds[:6])}"
                        f"{' ...' if len(kinds) > 6 else ''}")
    refs = []
    for kind in kinds:
        try:
            refs.append(hardware_ref(resolve_hardware(kind, flag="--clients"), "client"))
        except Exception:
            pass
    return whole, tuple(refs)


def solver_trace(events: Iterable[Any], limit: int | None = None) -> tuple[Mapping[str, Any], ...]:
    """Solver trace events as plain records (phase, iteration and the values it tracked)."""
    out = [{"phase": e.phase, "iteration": e.iteration, **e.values} for e in events]
    return tuple(out if limit is None else out[:limit])
