"""kv-budget's choice between GVote and the presses on measured tables: a press that meets the target where no
GVote setting does (or with less memory) becomes the plan; when nothing meets it, one error names the drop."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.errors import InfeasibleError
from planner.families.kv_budget import phases
from solvers.kv_budget.problem import KvBudgetProblem
from tests.solvers.test_kv_budget_solver import table


def _ctx(p: KvBudgetProblem) -> SimpleNamespace:
    return SimpleNamespace(state=phases.KvBudgetState(problem=p), notes=[])


def _with_scores(p: KvBudgetProblem, gvote: float, snap: float) -> KvBudgetProblem:
    s = p.score.copy()
    s[p.rows("gvote")] = gvote
    s[p.rows("snapkv")] = snap
    s[p.full_index] = 1.0
    return KvBudgetProblem(p.configs, p.kv_bytes, s, p.select_s, p.prefill_s, p.lengths, p.tasks, p.oracle_bytes,
                           p.recall, p.token_bytes, p.free_memory_bytes, 0.01)


def test_press_meeting_the_target_where_gvote_cannot_becomes_the_plan() -> None:
    ctx = _ctx(_with_scores(table(0), gvote=0.5, snap=1.0))
    phases.solve(ctx)
    phases.baselines(ctx)
    sol = ctx.state.solution
    assert sol.feasible and sol.params["method"] == "snapkv" and sol.params["ratio"] == 0.75
    assert not ctx.state.baselines["gvote"][1].feasible
    assert any("no GVote setting" in n for n in ctx.notes) and any("plan runs snapkv" in n for n in ctx.notes)


def test_gvote_stays_the_plan_when_no_press_is_cheaper() -> None:
    ctx = _ctx(_with_scores(table(1), gvote=1.0, snap=0.0))
    phases.solve(ctx)
    phases.baselines(ctx)
    assert ctx.state.solution.params["method"] == "gvote" and "gvote" not in ctx.state.baselines


def test_nothing_meets_the_target_names_the_reachable_drop() -> None:
    ctx = _ctx(_with_scores(table(2), gvote=0.5, snap=0.25))
    with pytest.raises(InfeasibleError, match="the best loses 50.00 points") as exc:
        phases.solve(ctx)
    assert "--p-nuc 1" in exc.value.fix


def test_matched_memory_figures_only_for_fixed_ratio_presses() -> None:
    """Regression: when a press won the plan, GVote became a baseline and its rows (no `ratio`) were matched
    by memory, crashing the plan with KeyError 'ratio' (seen on SmolLM2 at --max-accuracy-drop 20%)."""
    p = _with_scores(table(0), gvote=0.5, snap=1.0)
    huge = 1e30                                  # every row's memory is below it: each method has a match
    assert phases.at_matched_memory(p, "gvote", huge) == {} and phases.at_matched_memory(p, "full", huge) == {}
    snap = phases.at_matched_memory(p, "snapkv", huge)
    assert snap["ratio_at_matched_memory"] == min(p.configs[r]["ratio"] for r in p.rows("snapkv"))
    assert 0.0 <= snap["accuracy_at_matched_memory"] <= 1.0
    assert phases.at_matched_memory(p, "snapkv", 0.0) == {"accuracy_at_matched_memory": None,
                                                          "ratio_at_matched_memory": None}
