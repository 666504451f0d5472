"""MoEpic solver: invariants, fixed points against brute force, and the gap to exact references."""
from __future__ import annotations

import numpy as np
import pytest

from solvers.moe_offload import baselines
from solvers.moe_offload.cost import capacity, evaluate, layer_time
from solvers.moe_offload.exact import solve_cpsat, solve_enumerate, solve_scan_merge
from solvers.moe_offload.fixed_point import hide_fixed_point, ratio_fixed_point, suffix_argmax_ratio
from solvers.moe_offload.moepic import MoEpicConfig, solve
from solvers.moe_offload.validate import validate
from tests.moe_instances import concave_curve, random_problem, s_curve


def test_ratio_fixed_point_equals_suffix_argmax_on_1000_cases() -> None:
    rng = np.random.default_rng(0)
    for _ in range(1000):
        n = int(rng.integers(2, 40))
        h = np.maximum.accumulate(np.concatenate([[0.0], np.sort(rng.random(n)) ** rng.uniform(0.3, 3)]))
        if rng.random() < 0.5:
            h = s_curve(n, rng.uniform(1, n), rng.uniform(0.2, 4))
        c_min = rng.integers(1, n + 1, size=5)
        got, rounds = ratio_fixed_point(h, c_min)
        oracle = suffix_argmax_ratio(h)
        for cm, c in zip(c_min, got):
            best = oracle[cm]
            assert h[c] / c == pytest.approx(h[best] / best, rel=1e-12)
        assert rounds <= n + 1


def test_hide_fixed_point_is_least_hiding_theta_by_brute_force() -> None:
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(300):
        p = random_problem(rng, layers=2, experts=int(rng.integers(3, 12)), compute_ratio=float(rng.choice([0.5, 2.0, 5.0])))
        layer = 1
        grid = p.thetas()
        h = p.envelope("lcp")[layer]
        budgets = np.arange(p.layer_units + 1) * p.budget_unit_bytes
        got, _ = hide_fixed_point(p, layer, budgets, h, grid)
        r = p.prefetch_window_s()[layer] * p.bandwidth_bytes_per_s / (p.k_prefetch * p.expert_bytes)
        for b, th in zip(budgets, got):
            ok = [t for t in grid if t >= p.theta_hide - 1e-12 and t * h[int(capacity(p, b, t))] >= 1 - r - 1e-12]
            if ok:
                assert th == pytest.approx(min(ok))
                checked += 1
            else:
                assert np.isnan(th)
    assert checked > 100


def test_solution_respects_every_constraint_and_is_deterministic() -> None:
    rng = np.random.default_rng(2)
    for _ in range(40):
        p = random_problem(rng, layers=int(rng.integers(1, 6)), experts=int(rng.integers(2, 16)))
        a = solve(p)
        b = solve(p)
        assert validate(p, a) == []
        assert a.objective == b.objective
        assert np.array_equal(a.thetas, b.thetas) and np.array_equal(a.capacities, b.capacities)
        assert float((a.capacities * a.thetas * p.expert_bytes).sum()) <= p.budget_bytes + 1
        assert int(a.budget_units.sum()) <= p.total_units


def test_gap_to_exact_scan_merge_on_200_random_instances() -> None:
    rng = np.random.default_rng(3)
    gaps = []
    for _ in range(200):
        p = random_problem(rng, layers=int(rng.integers(1, 5)), experts=int(rng.integers(2, 12)))
        fp = solve(p).objective
        ex = solve_scan_merge(p).objective
        assert fp >= ex - 1e-12  # the exact reference can never be beaten
        gaps.append((fp - ex) / ex)
    gaps = np.array(gaps)
    assert np.median(gaps) == 0.0
    assert np.mean(gaps <= 0.01) >= 0.95, f"worst gap {gaps.max():.3%}"


def test_scan_merge_equals_enumeration_and_cpsat_on_tiny_instances() -> None:
    rng = np.random.default_rng(4)
    for _ in range(12):
        p = random_problem(rng, layers=2, experts=3, f=16, g=8, units_per_expert=2)
        ex = solve_scan_merge(p).objective
        en = solve_enumerate(p).objective
        cp = solve_cpsat(p).objective
        assert ex == pytest.approx(en, rel=1e-9)
        assert cp == pytest.approx(en, rel=1e-6)


def test_s_shaped_curve_gives_interior_theta_and_concave_gives_whole_experts() -> None:
    rng = np.random.default_rng(5)
    base = random_problem(rng, layers=1, experts=32, f=256, g=16, compute_ratio=0.01, budget_share=0.06)
    s = s_curve(32, midpoint=12, steepness=0.8)[None, :]
    conc = concave_curve(32, 0.5)[None, :]
    import dataclasses

    p_s = dataclasses.replace(base, hit_curves={k: s for k in base.hit_curves})
    p_c = dataclasses.replace(base, hit_curves={k: conc for k in base.hit_curves})
    c = base.budget_bytes / base.expert_bytes  # about 1.9 experts' worth of VRAM
    sol_s, sol_c = solve(p_s), solve(p_c)
    # S-shaped: many thin tops (C well above c), an interior theta
    assert 0.0 < sol_s.thetas[0] < 0.6 and sol_s.capacities[0] >= 2 * np.ceil(c)
    # concave: the ray from the origin touches at C* = ceil(c): as whole as the budget allows
    assert sol_c.capacities[0] == np.ceil(c) and sol_c.thetas[0] >= 0.85


def test_planned_time_is_nonincreasing_in_budget() -> None:
    rng = np.random.default_rng(6)
    import dataclasses

    p = random_problem(rng, layers=4, experts=8)
    last = np.inf
    for share in np.linspace(0.0, 1.0, 11):
        q = dataclasses.replace(p, budget_bytes=share * 4 * 8 * p.expert_bytes)
        v = solve(q).objective
        assert v <= last + 1e-12
        last = v


def test_plan_never_worse_than_baselines_inside_its_space() -> None:
    rng = np.random.default_rng(7)
    inside = [b.name for b in baselines.BASELINES if b.in_space and b.name != "llamacpp_cpu_moe"]
    assert inside == ["prefetch_only", "cache_only", "uniform_split", "adapmoe_dp"]
    for _ in range(60):
        p = random_problem(rng, layers=int(rng.integers(1, 6)), experts=int(rng.integers(2, 16)))
        plan = solve(p).objective
        for name in inside:
            b = baselines.baseline(name).solve(p)
            assert validate(p, b) == []
            assert plan <= b.objective * (1 + 1e-9), name


def test_layer_time_endpoints() -> None:
    rng = np.random.default_rng(8)
    p = random_problem(rng, layers=2, experts=8, compute_ratio=0.02)
    i = 1
    tau = p.transfer_s
    k = p.distinct_experts[i]
    # theta = 0 without prefetch: every activated expert crosses the link whole; only the last
    # arrival's compute is not hidden behind later copies
    t0 = layer_time(p, i, 5 * p.expert_bytes, 0.0, False)
    assert t0 == pytest.approx(p.attention_compute_s[i] + k * tau + p.expert_compute_s)
    # theta = 1 without prefetch: misses cross the link whole while the hits compute
    h = p.envelope("lcp")[i][4]
    t1 = layer_time(p, i, 4 * p.expert_bytes, 1.0, False)
    tx = p.expert_compute_s
    assert t1 == pytest.approx(p.layer_compute_s()[i] + max(0.0, k * (1 - h) * tau + min(k * (1 - h), 1) * tx - k * tx))


def test_evaluate_matches_solution_objective() -> None:
    rng = np.random.default_rng(9)
    p = random_problem(rng, layers=3, experts=10)
    s = solve(p)
    m = evaluate(p, s.thetas, s.capacities, s.prefetch, "lcp")
    assert m.tpot_s == pytest.approx(s.objective)


def test_cpu_miss_layers_dominate_llamacpp_when_the_host_is_fast() -> None:
    import dataclasses

    rng = np.random.default_rng(10)
    for _ in range(30):
        p = random_problem(rng, layers=int(rng.integers(2, 6)), experts=int(rng.integers(2, 12)))
        pop = rng.dirichlet(np.ones(p.num_experts), size=p.num_layers)
        static = np.concatenate([np.zeros((p.num_layers, 1)), np.cumsum(-np.sort(-pop, axis=1), axis=1)], axis=1)
        p = dataclasses.replace(p, host_expert_compute_s=p.transfer_s * float(rng.uniform(0.05, 2.0)),
                                hit_curves={**p.hit_curves, "static": static})
        ext = solve(p, MoEpicConfig(cpu_misses=True))
        assert validate(p, ext) == []
        gpu_only = solve(p)
        llama = baselines.llamacpp_cpu_moe(p)
        assert ext.objective <= min(gpu_only.objective, llama.objective) * (1 + 1e-9)
