"""CP-SAT settings that make an exact reference reproducible: the same model ends at the same point of the
search whatever the machine's load, so a plan that carries a CP-SAT bound or status has the same bytes on a
quiet and on a loaded machine."""
from __future__ import annotations

from typing import Any

WALL_BACKSTOP_FACTOR = 20.0   # wall-clock stop as a multiple of the deterministic limit (a stuck machine only)
WALL_BACKSTOP_MIN_S = 60.0


def make_deterministic(solver: Any, limit_s: float, seed: int = 0) -> None:
    """One worker, a fixed seed and a limit in CP-SAT's deterministic time (its work counter, in nominal
    seconds, independent of load) instead of wall time; a generous wall-clock backstop stops only a search that
    an extreme load stretches (then, and only then, the result can depend on the machine)."""
    p = solver.parameters
    p.num_workers = 1
    p.random_seed = int(seed)
    p.max_deterministic_time = float(limit_s)
    p.max_time_in_seconds = max(WALL_BACKSTOP_MIN_S, WALL_BACKSTOP_FACTOR * float(limit_s))


def deterministic_time_used(solver: Any) -> float:
    """The deterministic time the last solve used (nominal seconds)."""
    return float(solver.response_proto.deterministic_time)
