"""Uncertain constants (docs/moe-offload.md §13): the perturbed problems, the lead over baselines, and --robust's
least worst-case regret (checked against a direct recomputation)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from solvers.moe_offload.baselines import llamacpp_cpu_moe
from solvers.moe_offload.cost import evaluate
from solvers.moe_offload.moepic import MoEpicConfig, solve
from solvers.moe_offload.sensitivity import (Point, at_point, evaluate_solution, grid, leads, robust)
from tests.moe_instances import random_problem

CFG = MoEpicConfig(cpu_misses=True, split_misses=True)


def host_problem(seed: int):
    p = random_problem(np.random.default_rng(seed), layers=3, experts=8, budget_share=0.3, compute_ratio=0.2)
    P = 4.0 * p.bandwidth_bytes_per_s
    return dataclasses.replace(p, host_expert_compute_s=p.expert_bytes / (0.8 * P), host_dram_bytes_per_s=P,
                               hit_curves={**p.hit_curves, "static": p.hit_curves["lcp"] * 0.95})


def test_nominal_point_is_the_problem_itself() -> None:
    p = host_problem(0)
    q = at_point(p, Point(0.8, 1.0, "shared"))
    assert q.host_expert_compute_s == pytest.approx(p.host_expert_compute_s)
    assert q.bandwidth_bytes_per_s == p.bandwidth_bytes_per_s and q.host_dram_bytes_per_s == p.host_dram_bytes_per_s
    sol = solve(p, CFG)
    assert evaluate_solution(q, sol) == pytest.approx(sol.objective)
    # a slower host never speeds a fixed configuration up; serialising copies and host reads never helps either
    slow = at_point(p, Point(0.6, 1.0, "shared"))
    assert evaluate_solution(slow, sol) >= sol.objective * (1 - 1e-12)
    assert evaluate_solution(at_point(p, Point(0.8, 1.0, "serialised")), sol) >= sol.objective * (1 - 1e-12)
    assert evaluate_solution(at_point(p, Point(0.8, 1.0, "none")), sol) <= sol.objective * (1 + 1e-12)


def test_leads_match_a_direct_evaluation() -> None:
    p = host_problem(1)
    plan = solve(p, CFG)
    points = grid((0.6, 1.0), (0.8, 1.2), ("none", "serialised"))
    nominal = Point(0.8, 1.0, "shared")
    out, plan_t = leads(p, plan, {"llamacpp_cpu_moe": llamacpp_cpu_moe}, points, nominal)
    lead = out["llamacpp_cpu_moe"]
    direct = [1 - evaluate_solution(at_point(p, x), plan) / llamacpp_cpu_moe(at_point(p, x)).metrics.tpot_s
              for x in points]
    assert lead.worst == pytest.approx(min(direct)) and lead.best == pytest.approx(max(direct))
    assert lead.nominal == pytest.approx(1 - plan.objective / llamacpp_cpu_moe(p).metrics.tpot_s)
    assert plan_t == pytest.approx(tuple(evaluate_solution(at_point(p, x), plan) for x in points))


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_robust_choice_has_the_least_worst_case_regret(seed: int) -> None:
    p = host_problem(seed)
    nominal = solve(p, CFG)
    points = grid((0.6, 1.0), (0.8, 1.2), ("none", "serialised"))
    choice = robust(p, {"nominal": nominal}, lambda q: solve(q, CFG), points)
    # oracle: every candidate re-evaluated here, regret against the best candidate per point
    cands = {"nominal": nominal, **{f"plan solved at {x.label()}": solve(at_point(p, x), CFG) for x in points}}
    table = {n: np.array([evaluate(at_point(p, x), s.thetas, s.capacities, s.prefetch, s.policy,
                                   cpu_layers=s.cpu_layers, split=s.split_fraction).tpot_s for x in points])
             for n, s in cands.items()}
    best = np.min(np.stack(list(table.values())), axis=0)
    worst = {n: float((t / best - 1).max()) for n, t in table.items()}
    assert choice.worst_regret[choice.chosen] == pytest.approx(min(worst.values()))
    assert choice.worst_regret[choice.chosen] <= worst["nominal"] + 1e-12
    for n, w in worst.items():
        assert choice.worst_regret[n] == pytest.approx(w)
