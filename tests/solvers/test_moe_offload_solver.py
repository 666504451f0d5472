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
    inside = [b.name for b in baselines.BASELINES if b.in_space and b.name not in baselines.HOST_BASELINES]
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


def _with_host(p, rng, dram_factor: float = 1.25):
    """Give a random problem a host: sustained host time per expert, peak DRAM, and a static popularity curve."""
    import dataclasses

    pop = rng.dirichlet(np.ones(p.num_experts), size=p.num_layers)
    static = np.concatenate([np.zeros((p.num_layers, 1)), np.cumsum(-np.sort(-pop, axis=1), axis=1)], axis=1)
    t_cpu = p.transfer_s * float(rng.uniform(0.05, 2.0))
    return dataclasses.replace(p, host_expert_compute_s=t_cpu, hit_curves={**p.hit_curves, "static": static},
                               host_dram_bytes_per_s=dram_factor * p.expert_bytes / t_cpu)


def test_split_layers_dominate_host_only_layers_and_the_host_baselines() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        p = _with_host(random_problem(rng, layers=int(rng.integers(2, 6)), experts=int(rng.integers(2, 12))), rng,
                       dram_factor=float(rng.choice([1.05, 1.25, 3.0])))
        split = solve(p, MoEpicConfig(cpu_misses=True, split_misses=True))
        cpu = solve(p, MoEpicConfig(cpu_misses=True))
        assert validate(p, split) == []
        assert split.objective <= cpu.objective * (1 + 1e-9)
        for name in ("llamacpp_cpu_moe", "ktransformers"):
            b = baselines.baseline(name).solve(p)
            assert validate(p, b) == []
            assert split.objective <= b.objective * (1 + 1e-9), name
        m = evaluate(p, split.thetas, split.capacities, split.prefetch, "lcp", cpu_layers=split.cpu_layers,
                     split=split.split_fraction)
        assert m.tpot_s == pytest.approx(split.objective)


def test_split_layer_time_closed_forms() -> None:
    from solvers.moe_offload.cost import host_and_link_finish, time_split

    rng = np.random.default_rng(12)
    p = _with_host(random_problem(rng, layers=2, experts=6, top_k=2), rng, dram_factor=10.0)
    i, n, b = 1, 2, p.expert_compute_s
    a = p.host_expert_compute_s
    for h in (0.0, 0.3, 1.0):
        probs = [(1 - h) ** 2, 2 * h * (1 - h), h ** 2]           # m = 2, 1, 0 misses
        # alpha = 0: the host computes every miss while the device computes the hits
        expect = sum(q * max(m * a, (n - m) * b) for q, m in zip(probs, (2, 1, 0)))
        assert float(time_split(p, i, h, 0.0)) == pytest.approx(p.attention_compute_s[i] + expect)
        # alpha = 1 (DRAM not binding here): misses arrive one after the other over the link
        tau = p.transfer_s
        expect1 = sum(q * max((n - m) * b + m * b, (m * tau + b) if m else 0.0) for q, m in zip(probs, (2, 1, 0)))
        assert float(time_split(p, i, h, 1.0)) == pytest.approx(p.attention_compute_s[i] + expect1)
    # shared DRAM: both at full rate under the cap; scaled by P / (H + BW) above it; then each alone
    th, tl = host_and_link_finish(np.array([4.0]), np.array([1.0]), 2.0, 1.0, 2.0)
    # together 2/3 of their rates until the link is done at t = 1.5 (host read 2), then host alone 2 B at 2 B/s
    assert float(tl[0]) == pytest.approx(1.5) and float(th[0]) == pytest.approx(2.5)
    th, tl = host_and_link_finish(np.array([4.0]), np.array([1.0]), 2.0, 1.0, np.inf)
    assert float(th[0]) == pytest.approx(2.0) and float(tl[0]) == pytest.approx(1.0)


def test_hybrimoe_schedule_follows_its_two_ended_greedy() -> None:
    from solvers.moe_offload.baselines import hss_expert_phase
    from runtime.sim.moe_offload import hybrimoe_split

    # a slow link: every uncached expert is computed on the host, cached ones on the device
    t, moved = hss_expert_phase(1, 2, gpu_s=1.0, cpu_s=3.0, move_s=100.0)
    assert moved == 0 and t == pytest.approx(6.0)
    gpu, cpu = hybrimoe_split([5], [6, 7], 1.0, 3.0, 100.0)
    assert gpu == [5] and sorted(cpu) == [6, 7]
    # a fast link and a slow host: uncached experts are loaded and computed on the device
    t, moved = hss_expert_phase(0, 2, gpu_s=1.0, cpu_s=50.0, move_s=2.0)
    assert moved == 2 and t == pytest.approx(5.0)
    gpu, cpu = hybrimoe_split([], [6, 7], 1.0, 50.0, 2.0)
    assert gpu == [6, 7] and cpu == []
