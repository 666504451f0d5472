"""fed-compress solvers: Caesar's rules reproduced, batches against exact references, budgeted greedy
against CP-SAT, baselines and `validate` on random populations."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from solvers.common import InfeasibleError, Status
from solvers.fed_compress import baselines, caesar, exact
from solvers.fed_compress.caesar import CaesarConfig
from solvers.fed_compress.cost import comm_time_s, download_bytes, importance, label_skew, upload_bytes
from solvers.fed_compress.problem import DownloadBudgetProblem, sample_participation
from solvers.fed_compress.validate import validate
from tests.fed_compress_instances import DIGITS_NUMELS, random_problem


# ---------------------------------------------------------------- rules
def test_download_rule_reproduces_the_formula_on_hand_made_histories() -> None:
    cfg = CaesarConfig()
    t = 10
    last_sync = np.array([0, 9, 8, 5, 1, 3])
    theta = caesar.download_thetas(t, t - last_sync, cfg)
    # (1 − δ/t)·0.5 snapped down to 0.05: δ = 10, 1, 2, 5, 9, 7
    assert theta.tolist() == [0.0, 0.45, 0.4, 0.25, 0.05, 0.15]
    thetas = caesar.download_thetas(20, np.arange(1, 21), cfg)
    assert np.all(np.diff(thetas) <= 0) and thetas[-1] == 0.0     # nonincreasing in δ; never synced → full


def test_upload_rule_ranks_by_importance_and_spans_the_range() -> None:
    cfg = CaesarConfig()
    score = np.array([0.2, 0.9, 0.5, 0.1, 0.7])
    theta = caesar.upload_thetas(score, cfg)
    assert theta[1] == pytest.approx(0.1) and theta[3] == pytest.approx(0.5)
    order = np.argsort(-score)
    assert np.all(np.diff(theta[order]) >= 0)            # θ_u nonincreasing in importance
    assert caesar.upload_thetas(np.array([0.3]), cfg).tolist() == [0.1]
    tied = caesar.upload_thetas(np.array([0.5, 0.5, 0.5]), dataclasses.replace(cfg, tie_policy="mean"))
    assert np.allclose(tied, 0.3)
    by_id = caesar.upload_thetas(np.array([0.5, 0.5, 0.5]), cfg)
    assert by_id.tolist() == [0.1, 0.3, 0.5]


def test_label_skew_and_importance() -> None:
    # the skewed devices balance each other, so the global distribution is uniform
    counts = np.array([[10, 10, 10], [20, 20, 20], [30, 0, 0], [0, 30, 0], [0, 0, 30]])
    d = label_skew(counts)
    assert d[0] == pytest.approx(0.0, abs=1e-12) and d[1] == pytest.approx(0.0, abs=1e-12) and d[2] > 1.0
    assert np.allclose(d, label_skew(counts, "uniform"))
    c = importance(counts.sum(1), d)
    assert c[0] == pytest.approx(10 / 20) and c[1] == pytest.approx(1.0) and c[2] < np.exp(-1.0)


def test_schedule_staleness_follows_participation() -> None:
    p = random_problem(np.random.default_rng(3), n=12, rounds=10, fraction=0.25)
    sol = caesar.solve(p)
    last = np.zeros(p.num_clients, dtype=int)
    cfg = CaesarConfig()
    for r, sel in enumerate(p.selected):
        t = r + 1
        sel = np.array(sel)
        want = 1.0 - caesar.download_thetas(t, t - last[sel], cfg)
        assert np.allclose(sol.keep_down[r, sel], want)
        last[sel] = t
    assert np.all(sol.keep_down[0][sol.keep_down[0] > 0] == 1.0)    # round 1: nobody has a previous model


# ---------------------------------------------------------------- batches
def _round_inputs(p, r: int = 0):
    idx = np.array(p.selected[r])
    bd = np.array([download_bytes(p.tensor_numels, 0.7)] * len(idx), dtype=float)
    bu = np.array([upload_bytes(p.tensor_numels, 0.7)] * len(idx), dtype=float)
    fixed = comm_time_s(p, idx, bd, bu)
    cap = caesar.batch_caps(p, idx, CaesarConfig())
    return idx, fixed, cap


@pytest.mark.parametrize("seed", range(12))
def test_sweep_equals_brute_force_and_bounds_rule_and_convex(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = random_problem(rng, n=10, rounds=1, fraction=0.5, batch_grid=(8, 12, 16, 24, 32, 48, 64))
    idx, fixed, cap = _round_inputs(p)
    best = exact.sweep_batches(p, idx, fixed, cap)
    brute = exact.brute_force_batches(p, idx, fixed, cap)
    sps = lambda b: exact.samples_per_s(p, idx, fixed, b)
    assert sps(best) == pytest.approx(sps(brute), rel=1e-12)
    convex, t_lp, bound = caesar.convex_batches(p, idx, fixed, cap)
    rule = caesar.rule_batches(p, idx, fixed, cap)
    assert sps(rule) <= sps(best) * (1 + 1e-9) and sps(convex) <= sps(best) * (1 + 1e-9)
    assert sps(best) <= bound * (1 + 1e-6)          # the LP bounds every grid assignment
    assert np.all(best <= np.maximum(cap, 8)) and np.all(convex <= np.maximum(cap, 8))


@pytest.mark.parametrize("seed", range(6))
def test_batches_equalise_finish_times(seed: int) -> None:
    p = random_problem(np.random.default_rng(100 + seed), n=30, rounds=1, fraction=0.5)
    idx, fixed, cap = _round_inputs(p)
    grid = np.asarray(p.batch_grid)
    a, b = p.iter_fixed_s[idx], p.iter_per_sample_s[idx]
    m = lambda beta: p.local_iters * (a + b * beta) + fixed
    for method in ("convex", "rule"):
        if method == "convex":
            batch = caesar.convex_batches(p, idx, fixed, cap)[0]
        else:
            batch = caesar.rule_batches(p, idx, fixed, cap)
        t_round = m(batch).max()
        # every device below its cap could not take the next grid batch without ending after the round
        nxt = np.array([grid[grid > x].min() if (grid > x).any() else x for x in batch])
        below = batch < cap
        assert np.all(m(nxt)[below] > t_round * (1 - 1e-9)) or method == "convex"
        if method == "rule":
            fastest = int(np.argmin(m(cap)))
            assert batch[fastest] == cap[fastest]              # the fastest device trains at its largest batch
        # spread: devices not pinned at β_min or their cap finish within one grid step of the round
        free = (batch > grid[0]) & below
        step = p.local_iters * b * np.array([grid[grid > x].min() - x if (grid > x).any() else 0 for x in batch])
        assert np.all(t_round - m(batch)[free] <= step[free] * (1 + 1e-9))


def test_convex_gap_to_exact_sweep_is_small_on_the_integer_grid() -> None:
    gaps = []
    for seed in range(10):
        p = random_problem(np.random.default_rng(200 + seed), n=40, rounds=1, fraction=0.5)
        idx, fixed, cap = _round_inputs(p)
        best = exact.samples_per_s(p, idx, fixed, exact.sweep_batches(p, idx, fixed, cap))
        conv = exact.samples_per_s(p, idx, fixed, caesar.convex_batches(p, idx, fixed, cap)[0])
        gaps.append(1 - conv / best)
    assert max(gaps) <= 0.10 and min(gaps) >= -1e-9


# ---------------------------------------------------------------- budgeted download
def _budget_instance(rng: np.random.Generator) -> DownloadBudgetProblem:
    cfg = CaesarConfig()
    thetas = caesar.theta_grid(cfg)
    n = int(rng.integers(3, 12))
    # Convex decreasing deviation curves of random scale and curvature, Dev(0) = 0.
    scale = rng.uniform(0.01, 1.0, n)[:, None]
    power = rng.uniform(1.0, 3.0, n)[:, None]
    dev = scale * (thetas[None, :] / thetas[-1]) ** power
    forced = rng.random(n) < 0.2
    tb = np.array([download_bytes(DIGITS_NUMELS, 1 - th) for th in thetas], dtype=float)
    lo = float(np.where(forced, tb[0], tb[-1]).sum())
    hi = float(tb[0] * n)
    return DownloadBudgetProblem(thetas, tb, dev, forced, lo + rng.uniform(0.05, 0.9) * (hi - lo))


def test_greedy_budget_within_two_percent_of_cpsat_on_200_instances() -> None:
    rng = np.random.default_rng(7)
    ref = exact.BudgetCpSat()
    worst = 0.0
    for _ in range(200):
        bp = _budget_instance(rng)
        g = caesar.greedy_budget(bp)
        o = ref.solve(bp, time_limit_s=10.0)
        assert o.status == Status.OPTIMAL
        assert g.bytes_used <= bp.budget_bytes and o.bytes_used <= bp.budget_bytes
        assert np.all(g.thetas[bp.forced_full] == 0)
        assert g.objective >= o.objective - 1e-6
        worst = max(worst, (g.objective - o.objective) / max(o.objective, 1e-12))
    assert worst <= 0.02


def test_budget_mode_respects_the_budget_and_reports_the_minimum() -> None:
    p = random_problem(np.random.default_rng(11), n=20, rounds=6, fraction=0.3)
    full = p.full_model_bytes
    # A device's first download is dense (nothing to rebuild from): a round's least downlink is its first
    # contacts at full size plus everyone else at the most compression; the budget leaves 10 % above the worst.
    first = p.first_contact_mask()
    least = download_bytes(tuple(p.tensor_numels), 1.0 - CaesarConfig().theta_d_max, p.min_compress_numel)
    need = max(full * first[r].sum() + least * (len(sel) - first[r].sum()) for r, sel in enumerate(p.selected))
    p_ok = dataclasses.replace(p, down_budget_bytes=1.1 * need)
    sol = caesar.solve(p_ok, CaesarConfig(mode="budget"))
    assert validate(p_ok, sol) == [] and sol.deviation_proxy
    assert np.all(sol.metrics.bytes_down.sum(axis=1) <= p_ok.down_budget_bytes)
    assert np.all(sol.keep_down[first] == 1.0)
    p_bad = dataclasses.replace(p, down_budget_bytes=1000.0)
    with pytest.raises(InfeasibleError, match="down_budget_bytes to at least"):
        caesar.solve(p_bad, CaesarConfig(mode="budget"))


# ---------------------------------------------------------------- schedules, baselines, validate
@pytest.mark.parametrize("seed", range(4))
def test_caesar_and_baselines_are_valid_on_random_populations(seed: int) -> None:
    p = random_problem(np.random.default_rng(seed), n=25, rounds=6, fraction=0.3)
    sol = caesar.solve(p)
    assert validate(p, sol) == []
    assert sol.params["max_batch_gap_to_lp"] < 0.1
    mask = p.selected_mask()
    assert np.all((sol.keep_down[mask] >= 0.5) & (sol.keep_down[mask] <= 1.0))
    assert np.all((sol.keep_up[mask] >= 0.5 - 1e-12) & (sol.keep_up[mask] <= 0.9 + 1e-12))
    results = {b.name: b.solve(p) for b in baselines.baselines(reference=sol)}
    for name, s in results.items():
        assert validate(p, s) == [], name
        assert s.status == Status.FEASIBLE, name
    um = results["uniform_mean"]
    first = p.first_contact_mask()     # first downloads are dense in every configuration
    assert um.params["keep_down"] == pytest.approx(sol.keep_down[mask & ~first].mean(), abs=1e-6)
    for name, s in results.items():
        assert np.all(s.keep_down[first] == 1.0) and np.all(sol.keep_down[first] == 1.0), name
    # matched traffic: within one payload's rounding of Caesar's bytes per direction
    ut = results["uniform_traffic"].metrics
    count = int(mask.sum())
    assert 0 <= sol.metrics.bytes_down.sum() - ut.bytes_down.sum() <= count * 64
    assert 0 <= sol.metrics.bytes_up.sum() - ut.bytes_up.sum() <= count * 64
    assert results["no_compression"].objective == 2 * p.full_model_bytes * count


def test_validate_catches_broken_solutions() -> None:
    p = random_problem(np.random.default_rng(5), n=15, rounds=4, fraction=0.4)
    sol = caesar.solve(p)
    r, i = 1, p.selected[1][0]
    kd = sol.keep_down.copy()
    kd[r, i] = 1.5
    assert any("outside (0, 1]" in e for e in validate(p, dataclasses.replace(sol, keep_down=kd)))
    b = sol.batch.copy()
    b[r, i] = 13 if 13 not in p.batch_grid else 65
    assert any("batch" in e for e in validate(p, dataclasses.replace(sol, batch=b)))
    small = dataclasses.replace(p, memory_bytes=np.full(p.num_clients, p.train_fixed_bytes + 9 * p.train_bytes_per_sample))
    assert any("memory" in e for e in validate(small, sol))
    assert any("metrics" in e for e in validate(p, dataclasses.replace(sol, keep_up=np.where(sol.keep_up > 0, 0.5, 0.0))))


def test_infeasible_memory_names_the_device_and_the_fix() -> None:
    p = random_problem(np.random.default_rng(2), n=10, rounds=2, fraction=1.0)
    mem = np.asarray(p.memory_bytes, dtype=float).copy()
    mem[4] = p.train_fixed_bytes
    with pytest.raises(InfeasibleError, match="(?i)dev-004.*raise its memory"):
        caesar.solve(dataclasses.replace(p, memory_bytes=mem))
    base = baselines.no_compression(dataclasses.replace(p, memory_bytes=mem))
    assert base.status == Status.INFEASIBLE and base.params["violations"]


def test_solve_is_deterministic_and_participation_is_seeded() -> None:
    p = random_problem(np.random.default_rng(9), n=20, rounds=5)
    a, b = caesar.solve(p), caesar.solve(p)
    for f in ("keep_down", "keep_up", "batch"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert sample_participation(50, 4, 0.2, 1) == sample_participation(50, 4, 0.2, 1)
    assert all(len(s) == 10 for s in sample_participation(50, 4, 0.2, 1))
