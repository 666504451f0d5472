"""The plan's choice under the calibration's spread (docs/split-inference.md §3 step 8).

A calibration measures the host's compute at one moment; on a loaded host the edge's and the cloud's speed
move between the calibration and the run (a ResNet-50 cloud calibrated at 451 ms ran at 203 ms). Where two cuts
are close, the nominal optimum can lose to a baseline at a speed that is inside the calibration's own spread.

`robust_choice` re-evaluates the candidates (the plan and every feasible baseline) with the edge's and the
cloud's compute times scaled independently by each corner of the spread, `{lo, 1, hi}²`, and picks the candidate
whose worst regret over the corners is smallest: regret = best candidate's objective at that corner over this
candidate's (throughput), or this candidate's over the best's (latency, J). The plan is kept on a tie, so a spread
of (1, 1) never changes the plan. Quantise/dequantise times, the link and the runtime's fixed costs are not scaled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np

from solvers.split_inference.cost import evaluate
from solvers.split_inference.problem import SplitInferenceProblem, SplitInferenceSolution

PLAN = "plan"


@dataclass(frozen=True)
class RobustChoice:
    """Which candidate won, and every candidate's worst regret over the corners (≥ 1; 1 = best at every corner)."""

    chosen: str
    worst_regret: dict[str, float]
    worst_corner: dict[str, tuple[float, float]]       # (edge factor, cloud factor) of each candidate's worst regret
    corners: tuple[tuple[float, float], ...]


def _value(objective: str, m) -> float:
    """The objective as a figure to minimise (s): the period for throughput, the latency, or J."""
    return {"throughput": m.period_s, "latency": m.latency_s}.get(objective, m.objective_s)


def scaled(problem: SplitInferenceProblem, edge_factor: float, cloud_factor: float) -> SplitInferenceProblem:
    """The problem with every node's edge and cloud compute time scaled."""
    return replace(problem, edge_time_s=np.asarray(problem.edge_time_s) * edge_factor,
                   cloud_time_s=np.asarray(problem.cloud_time_s) * cloud_factor)


def robust_choice(problem: SplitInferenceProblem, candidates: Mapping[str, SplitInferenceSolution], objective: str,
                  spread: tuple[float, float]) -> RobustChoice:
    """Min-max regret over the corners of `spread` (low and high compute factors, low ≤ 1 ≤ high); the
    candidates are evaluated with their own cut and bits; `candidates[PLAN]` must be present and wins ties."""
    lo, hi = spread
    corners = tuple(sorted({(a, b) for a in (lo, 1.0, hi) for b in (lo, 1.0, hi)}))
    values: dict[str, list[float]] = {name: [] for name in candidates}
    for a, b in corners:
        p = scaled(problem, a, b)
        for name, sol in candidates.items():
            values[name].append(_value(objective, evaluate(p, np.asarray(sol.on_edge, dtype=bool), dict(sol.bits))))
    best = [min(values[name][i] for name in candidates) for i in range(len(corners))]
    worst, where = {}, {}
    for name, vs in values.items():
        regrets = [v / b if b > 0 and math.isfinite(v) else (1.0 if v == b else math.inf) for v, b in zip(vs, best)]
        k = int(np.argmax(regrets))
        worst[name], where[name] = float(regrets[k]), corners[k]
    order = [PLAN] + sorted(n for n in candidates if n != PLAN)
    chosen = min(order, key=lambda n: (round(worst[n], 9), order.index(n)))
    return RobustChoice(chosen, worst, where, corners)
