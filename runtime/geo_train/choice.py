"""Which fragment a CoCoDC slot sends: the adaptive rule, torch-free so every region computes it alike.

Slots are numbered k = 0, 1, ... (one every h inner steps); a window of H steps holds N slots. Every
fragment must be sent at least once in every N consecutive slots, so a fragment last sent in slot s has
the deadline s + N (a never-sent fragment counts as sent in slot -1). The rule:

  1. only fragments whose choice keeps every deadline reachable may go (earliest-deadline feasibility:
     after this slot, the j-th earliest remaining deadline must be at least k + j);
  2. among those, a fragment due now goes; else a never-sent fragment (lowest index); else the
     largest drift score R_p (ties: lowest index).

Example:
    >>> choose_fragment(slot=0, last_sent=[-1, -1], scores=[0.0, 0.0], slots_per_window=4)
    0
    >>> choose_fragment(slot=2, last_sent=[0, 1], scores=[5.0, 1.0], slots_per_window=4)
    0
"""
from __future__ import annotations

from typing import Sequence


def feasible_choices(slot: int, last_sent: Sequence[int], slots_per_window: int) -> list[int]:
    """Fragments that may be sent in `slot` without making some later deadline unreachable."""
    deadlines = [s + slots_per_window for s in last_sent]
    out = []
    for c in range(len(last_sent)):
        rest = sorted(d for p, d in enumerate(deadlines) if p != c)
        if deadlines[c] >= slot and all(d >= slot + j + 1 for j, d in enumerate(rest)):
            out.append(c)
    return out


def choose_fragment(slot: int, last_sent: Sequence[int], scores: Sequence[float], slots_per_window: int) -> int:
    """The fragment to send in `slot` (see the module docstring); ValueError when no choice keeps every
    deadline (only when more fragments than slots per window, which the planner rejects)."""
    allowed = feasible_choices(slot, last_sent, slots_per_window)
    if not allowed:
        raise ValueError(f"no fragment choice keeps every deadline: {len(last_sent)} fragments, "
                         f"{slots_per_window} slots per window")
    due = [c for c in allowed if last_sent[c] + slots_per_window == slot]
    if due:
        return due[0]
    never = [c for c in allowed if last_sent[c] < 0]
    if never:
        return never[0]
    return max(allowed, key=lambda c: (scores[c], -c))


def drift_score(l1_sum: float, steps_since_sent: int, numel: int) -> float:
    """R_p = sum over regions of ||base_p - theta_{m,p}||_1 / (steps since sent * |theta_p|)."""
    return l1_sum / (max(steps_since_sent, 1) * max(numel, 1))
