"""How the plan's lead over each baseline moves across the constants the cost model cannot know exactly, and the
plan with the least worst-case regret over them (`--robust`; docs/moe-offload.md §13).

Uncertain constants (each a multiplier on the profile's figure, nominal 1):
  * host efficiency: the share of peak host DRAM bandwidth P the host's expert kernel sustains (catalog 0.8);
    a host expert takes U / (eff P);
  * link rate: the sustained host->device copy bandwidth BW;
  * DRAM contention: the joint cap on host reads plus link copies while both run (nominal: the peak P, each
    scaled by P / (H + BW); "none" lifts the cap; "serialised" caps them at max(H, BW), i.e. copies and host
    reads do not overlap at all, the worst case).

A configuration (the plan's, or a baseline's) is evaluated at every point of the grid with the analytic cost
model (`cost.evaluate`); baselines are re-derived at each point with their own rule (llama.cpp's N does not
depend on these constants, HybriMoE's schedule does). Figures are predictions, labelled so.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from solvers.moe_offload.cost import evaluate
from solvers.moe_offload.problem import MoeOffloadProblem, MoeOffloadSolution

HOST_EFFICIENCY = (0.6, 0.7, 0.8, 0.9, 1.0)       # absolute shares of peak host DRAM bandwidth
LINK_SCALE = (0.8, 1.0, 1.2)                      # multipliers on the profile's link rate
CONTENTION = ("none", "shared", "serialised")     # joint DRAM cap: none, P, max(H, BW)
ROBUST_HOST_EFFICIENCY = (0.6, 0.8, 1.0)          # the coarser grid --robust re-solves the plan on
ROBUST_LINK_SCALE = (0.8, 1.2)
ROBUST_CONTENTION = ("none", "serialised")


@dataclass(frozen=True)
class Point:
    """One setting of the uncertain constants."""

    host_efficiency: float
    link_scale: float
    contention: str

    def label(self) -> str:
        """Short text, e.g. "eff 0.8, link x1, DRAM shared"."""
        cont = {"none": "no DRAM contention", "shared": "DRAM shared at P", "serialised": "copies and host reads serialised"}
        return f"host eff {self.host_efficiency:g}, link x{self.link_scale:g}, {cont[self.contention]}"


def grid(effs: Sequence[float] = HOST_EFFICIENCY, links: Sequence[float] = LINK_SCALE,
         contention: Sequence[str] = CONTENTION) -> list[Point]:
    """Every combination of the given values."""
    return [Point(e, l, c) for e, l, c in itertools.product(effs, links, contention)]


def at_point(problem: MoeOffloadProblem, point: Point) -> MoeOffloadProblem:
    """The problem with the constants of `point` (needs the host's peak DRAM bandwidth)."""
    P = problem.host_dram_bytes_per_s
    if not P:
        raise ValueError("the host's peak DRAM bandwidth is unknown")
    host = point.host_efficiency * P
    link = problem.bandwidth_bytes_per_s * point.link_scale
    cap = {"none": None, "shared": P, "serialised": max(host, link)}[point.contention]
    return replace(problem, host_expert_compute_s=problem.expert_bytes / host, bandwidth_bytes_per_s=link,
                   host_dram_bytes_per_s=cap)


def evaluate_solution(problem: MoeOffloadProblem, sol: MoeOffloadSolution) -> float:
    """Predicted TPOT (s) of a fixed configuration on `problem`."""
    return evaluate(problem, sol.thetas, sol.capacities, sol.prefetch, sol.policy if sol.policy != "mrs" else "lcp",
                    cpu_layers=sol.cpu_layers, split=sol.split_fraction).tpot_s


@dataclass(frozen=True)
class Lead:
    """The plan's lead over one baseline across the grid: 1 - T_plan / T_baseline (positive: the plan is faster)."""

    nominal: float
    worst: float
    best: float
    worst_at: str
    by_point: tuple[float, ...]


def leads(problem: MoeOffloadProblem, plan: MoeOffloadSolution,
          baselines: Mapping[str, Callable[[MoeOffloadProblem], MoeOffloadSolution]], points: Sequence[Point],
          nominal: Point) -> tuple[dict[str, Lead], tuple[float, ...]]:
    """Per baseline its `Lead` over `points` (the baseline re-derived at each point by its own rule), and the
    plan's predicted TPOT (s) at each point."""
    probs = [at_point(problem, x) for x in points]
    plan_t = tuple(evaluate_solution(q, plan) for q in probs)
    t_nom = evaluate_solution(at_point(problem, nominal), plan)
    out = {}
    for name, rule in baselines.items():
        base_t = [rule(q).metrics.tpot_s for q in probs]
        lead = [1.0 - a / b for a, b in zip(plan_t, base_t)]
        j = int(np.argmin(lead))
        nom = 1.0 - t_nom / rule(at_point(problem, nominal)).metrics.tpot_s
        out[name] = Lead(nom, lead[j], max(lead), points[j].label(), tuple(lead))
    return out, plan_t


@dataclass(frozen=True)
class RobustChoice:
    """The candidate with the least worst-case regret, and every candidate's worst-case regret."""

    solution: MoeOffloadSolution
    chosen: str
    worst_regret: dict[str, float]      # candidate -> max over points of T(c, x) / min_c' T(c', x) - 1
    worst_at: dict[str, str]


def robust(problem: MoeOffloadProblem, candidates: Mapping[str, MoeOffloadSolution],
           resolve: Callable[[MoeOffloadProblem], MoeOffloadSolution], points: Sequence[Point]) -> RobustChoice:
    """Least worst-case regret over `points`: the candidates are the given ones plus the plan re-solved at every
    point (`resolve`); regret at a point is measured against the best candidate there (deterministic ties: the
    first name in order)."""
    cands = dict(candidates)
    for x in points:
        cands[f"plan solved at {x.label()}"] = resolve(at_point(problem, x))
    probs = [at_point(problem, x) for x in points]
    table = {n: np.array([evaluate_solution(q, s) for q in probs]) for n, s in cands.items()}
    best = np.min(np.stack(list(table.values())), axis=0)
    regret = {n: t / best - 1.0 for n, t in table.items()}
    worst = {n: float(r.max()) for n, r in regret.items()}
    at = {n: points[int(np.argmax(r))].label() for n, r in regret.items()}
    chosen = min(cands, key=lambda n: (round(worst[n], 12), list(cands).index(n)))
    return RobustChoice(cands[chosen], chosen, worst, at)
