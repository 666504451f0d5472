"""kv-budget's choice on small measured tables: exhaustive oracle, infeasibility, baselines, validation."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.errors import InfeasibleError
from solvers.common import Status
from solvers.kv_budget import baselines as bl
from solvers.kv_budget.cost import metrics
from solvers.kv_budget.gvote import solve
from solvers.kv_budget.problem import KvBudgetProblem
from solvers.kv_budget.validate import validate


def table(seed: int, drop: float = 0.01) -> KvBudgetProblem:
    rng = np.random.default_rng(seed)
    n_req = 6
    lengths = rng.integers(100, 200, n_req)
    configs = [{"method": "full"}]
    configs += [{"method": "gvote", "p_nuc": p, "n_samples": s} for p, s in itertools.product((0.8, 0.9, 1.0), (4, 8))]
    configs += [{"method": "snapkv", "ratio": r} for r in (0.25, 0.5, 0.75)]
    frac = np.array([1.0] + [min(1.0, 0.3 + 0.2 * i + rng.random() * 0.1) for i in range(6)] + [0.75, 0.5, 0.25])
    frac[5:7] = 1.0                                                   # p_nuc = 1 keeps everything
    kv = (frac[:, None] * lengths[None, :] * 10.0)
    score = (rng.random((len(configs), n_req)) < 0.3 + 0.7 * frac[:, None]).astype(float)
    score[0] = 1.0
    score[5:7] = 1.0
    return KvBudgetProblem(tuple(configs), kv, score, np.full(kv.shape, 0.01), np.full(n_req, 1.0), lengths,
                           tuple("ab"[i % 2] for i in range(n_req)), kv[1] * 0.5, np.ones(kv.shape),
                           10.0, 1e6, drop)


@pytest.mark.parametrize("seed", range(8))
def test_choice_is_the_least_memory_row_meeting_the_target(seed: int) -> None:
    p = table(seed)
    sol = solve(p)
    assert sol.status == Status.OPTIMAL and validate(p, sol) == []
    full_acc = p.score[0].mean()
    ok = [r for r in p.rows("gvote") if p.score[r].mean() >= full_acc - p.max_accuracy_drop - 1e-12]
    assert sol.objective == pytest.approx(min(p.kv_bytes[r].mean() for r in ok))


def test_unreachable_drop_names_the_reachable_one() -> None:
    p = table(0)
    score = p.score.copy()
    score[p.rows("gvote")] = 0.5                                      # every setting loses 50 points
    q = KvBudgetProblem(p.configs, p.kv_bytes, score, p.select_s, p.prefill_s, p.lengths, p.tasks,
                        p.oracle_bytes, p.recall, p.token_bytes, p.free_memory_bytes, 0.01)
    with pytest.raises(InfeasibleError, match="50.00 points") as exc:
        solve(q)
    assert "--max-accuracy-drop 50.01%" in exc.value.fix


def test_baselines_and_validation() -> None:
    p = table(3, drop=1.0)                                            # any row meets a 100-point drop
    sol = solve(p)
    names = [b.name for b in bl.baselines(p)]
    assert names == ["full", "snapkv"]
    snap = dict((b.name, b.solve(p)) for b in bl.baselines(p))["snapkv"]
    assert snap.params["ratio"] == 0.75                               # least memory among its rows
    assert bl.press_at_memory(p, "snapkv", metrics(p, sol.row).mean_kv_bytes) in p.rows("snapkv") + [None]
    bad = type(sol)(status=sol.status, objective=sol.objective + 1, row=sol.row, metrics=sol.metrics,
                    params=sol.params)
    assert validate(p, bad) == ["objective is not the row's mean KV bytes"]
