"""Whole requests: the prefill model, its rules, the prefill simulator and the dual mode."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.errors import PlannerError
from planner.api import plan_from_argv
from planner.families.moe_offload.lowering import prefill_rule_result, simulate_prefill_solution
from solvers.moe_offload.moepic import MoEpicConfig, smallest_budget, solve
from solvers.moe_offload.prefill import PREFILL_RULES, break_even_tokens, prefill, resident_sets, routing, ttft_lower_bound


@pytest.fixture(scope="module")
def ctx():
    return plan_from_argv(["mixtral-8x7b", "--hardware", "rtx4090_24gb", "--trace-tokens", "400", "--sim-tokens", "64",
                           "--prompt-tokens", "1024", "--output-tokens", "64"])


def test_routing_expectations_conserve_token_expert_pairs(ctx) -> None:
    p = ctx.state.lowered.problem
    for T in (1, 37, 1024):
        u, t = routing(p, 3, T)
        assert ((0 <= u) & (u <= 1)).all()
        q = np.minimum(1, p.top_k * p.popularity[3])
        assert float((u * t).sum()) == pytest.approx(T * q.sum())      # expected (token, expert) pairs


def test_plan_rule_is_never_worse_than_any_rule_and_above_the_bound(ctx) -> None:
    low, sol = ctx.state.lowered, ctx.state.solution
    modes = [sol.miss_mode(i) for i in range(low.problem.num_layers)]
    for P in (16, 256, 4096):
        p = dataclasses.replace(low.problem, prompt_tokens=P)
        plan = prefill(p, sol.capacities, sol.thetas, "plan", modes, sol.split_fraction)
        for rule in PREFILL_RULES:
            other = prefill(p, sol.capacities, sol.thetas, rule, modes, sol.split_fraction)
            assert plan.ttft_s <= other.ttft_s * (1 + 1e-9), (P, rule)
        assert ttft_lower_bound(p) <= plan.ttft_s
    # short prompts stay on the host, long ones stream: the break-even lies in between
    res = resident_sets(low.problem, sol.capacities, sol.thetas)
    be = break_even_tokens(low.problem, 0, res[0])
    assert be is not None and 16 < be <= 4096


def test_prefill_simulator_agrees_with_the_analytic_model(ctx) -> None:
    low, sol = ctx.state.lowered, ctx.state.solution
    for rule in ("plan", "host", "stream", "llamacpp", "decode_plan"):
        a = prefill_rule_result(low, sol, rule)
        s = simulate_prefill_solution(low, sol, rule, a)
        assert abs(a.ttft_s - s.ttft_s) / s.ttft_s < 0.2, (rule, a.ttft_s, s.ttft_s)
    plan = ctx.plan
    assert {"ttft_ms", "e2e_ms", "tpot_ms"} <= set(plan.predicted) and plan.objective.metric == "e2e_ms"
    assert plan.predicted["e2e_ms"] == pytest.approx(plan.predicted["ttft_ms"] + 63 * plan.predicted["tpot_ms"])
    for name in ("prefill_llamacpp", "prefill_host", "prefill_stream", "prefill_decode_plan", "prefill_ik_llamacpp"):
        assert plan.predicted["ttft_ms"] <= plan.baselines[name].predicted["ttft_ms"] * (1 + 1e-9)
    assert all("prefill" in lay for lay in plan.decisions["layers"])


def test_dual_mode_returns_the_smallest_budget_that_meets_the_target(ctx) -> None:
    p = ctx.state.lowered.problem
    cfg = MoEpicConfig(cpu_misses=True, split_misses=True)
    full = solve(p, cfg).objective
    target = full * 1.3
    budget, best = smallest_budget(p, cfg, target)
    assert budget is not None and budget < p.budget_bytes and best == pytest.approx(full)
    assert solve(dataclasses.replace(p, budget_bytes=budget), cfg).objective <= target * (1 + 1e-9)
    smaller = dataclasses.replace(p, budget_bytes=budget - p.budget_unit_bytes)
    assert solve(smaller, cfg).objective > target
    assert smallest_budget(p, cfg, full * 0.5) == (None, pytest.approx(full))
    # through the CLI path: the plan shrinks its budget and says so
    c = plan_from_argv(["mixtral-8x7b", "--hardware", "rtx4090_24gb", "--trace-tokens", "600", "--sim-tokens", "100",
                        "--prompt-tokens", "0", "--objective", "tpot", "--target-tpot", f"{target * 1e3:.3f}ms"])
    assert c.plan.constraints["expert_cache_budget_bytes"] <= budget + 1
    assert any("dual mode" in n for n in c.plan.notes)


def test_request_flags_are_checked() -> None:
    with pytest.raises(PlannerError, match="one target"):
        plan_from_argv(["mixtral-8x7b", "--hardware", "a100_24gb", "--target-tpot", "80ms", "--target-ttft", "1s"])
    with pytest.raises(PlannerError, match="needs a prompt"):
        plan_from_argv(["mixtral-8x7b", "--hardware", "a100_24gb", "--prompt-tokens", "0"])
