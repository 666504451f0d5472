"""The convergence term of fed-compress plans (docs/fed-compress.md, "Choosing a configuration"): traffic to a
target accuracy, predicted from each configuration's per-round bytes and its rounds to the target.

Caesar's objective is bytes per round; what a user pays is bytes until the model is good enough. The
cost model predicts every configuration's bytes round by round (the schedule); how many rounds a
configuration needs to reach a target is not predicted from first principles but measured on a
*decision sample* (other seeds than the ones the plan is scored on) and handed to the planner as a
record: rounds to target per configuration. Then

    traffic_to_target(c) = Σ_{t ≤ R_c} traffic_c(t)        (B)

and the plan recommends the feasible configuration with the least of it, Caesar's rule or a baseline.
Without a record every configuration is assumed to need the same rounds (the whole schedule), so the
comparison is total traffic; the plan says which assumption it used.

Pure numpy: no torch, no file I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

SENSITIVITY = (0.75, 1.0, 1.25)   # factors on every configuration's rounds to target, shown in the plan


@dataclass(frozen=True)
class Choice:
    """The recommended configuration and what each configuration is predicted to move until the target."""

    recommended: str
    traffic_to_target_bytes: dict[str, float]      # per configuration (B)
    rounds_to_target: dict[str, float]             # the R_c used (rounds; may be fractional: a median)
    # factor on every R_c -> (recommended at that factor, its traffic / Caesar's rule's)
    sensitivity: dict[float, tuple[str, float]]


def traffic_to_target(traffic_per_round: np.ndarray, rounds: float) -> float:
    """Bytes of rounds 1..R (B); a fractional R counts that share of round ⌈R⌉; R beyond the schedule repeats
    the mean of its last 10 rounds (the schedule is the only per-round prediction there is); R = inf (never
    reaches the target) gives inf."""
    traffic = np.asarray(traffic_per_round, dtype=float)
    if not np.isfinite(rounds):
        return float("inf")
    if rounds <= 0 or traffic.size == 0:
        return 0.0
    whole = int(np.floor(rounds))
    frac = rounds - whole
    tail = float(traffic[-10:].mean())
    ext = np.concatenate([traffic, np.full(max(0, whole + 1 - traffic.size), tail)])
    return float(ext[:whole].sum() + frac * ext[whole])


def choose(traffic_per_round: Mapping[str, np.ndarray], rounds_to_target: Mapping[str, float],
           feasible: Mapping[str, bool], method: str = "plan") -> Choice:
    """The feasible configuration with the least predicted traffic to target (ties: `method`, then by name).

    `traffic_per_round[c]` is configuration c's predicted bytes per round (both ways, every device);
    `rounds_to_target[c]` its rounds to target; `method` names Caesar's own schedule.
    """
    names = sorted(traffic_per_round)
    if method not in names:
        raise ValueError(f"no traffic for the method's own schedule {method!r}")
    missing = [c for c in names if c not in rounds_to_target]
    if missing:
        raise ValueError(f"no rounds to target for {', '.join(missing)}")

    def pick(factor: float) -> tuple[str, dict[str, float]]:
        t = {c: traffic_to_target(traffic_per_round[c], factor * float(rounds_to_target[c])) for c in names}
        ok = [c for c in names if feasible.get(c, True)]
        best = min(ok, key=lambda c: (t[c], c != method, c))
        return best, t

    best, t = pick(1.0)
    sens = {}
    for f in SENSITIVITY:
        b, tf = pick(f)
        sens[f] = (b, tf[b] / tf[method] if tf[method] > 0 else 1.0)
    return Choice(best, t, {c: float(rounds_to_target[c]) for c in names}, sens)
