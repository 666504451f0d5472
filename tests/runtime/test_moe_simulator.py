"""The labelled simulator: independent of the planner, consistent with the trace replay, close to the analytic model."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from planner.families.moe_offload.lowering import MoeOffloadOptions, lower, simulate_solution
from planner.registry import resolve_hardware, resolve_model
from profilers.cache_replay import replay
from profilers.graph import profile_model
from profilers.synthetic_traces import generate_trace
from runtime.sim.moe_offload import SimConfig, SimLayer, simulate
from solvers.moe_offload import baselines
from solvers.moe_offload.cost import evaluate
from solvers.moe_offload.moepic import MoEpicConfig, solve

SIM = Path(__file__).resolve().parents[2] / "runtime" / "sim" / "moe_offload.py"


def test_simulator_imports_nothing_from_the_planner() -> None:
    tree = ast.parse(SIM.read_text())
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + [
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in modules if m and m.split(".")[0] in ("solvers", "profilers", "planner", "codegen")]


@pytest.mark.parametrize("policy", ["lcp", "lfu", "lru", "belady"])
def test_simulated_hit_rate_equals_replay_exactly(policy: str) -> None:
    trace = generate_trace(4, 24, 3, "moepic-calibrated", tokens=300, seed=3)
    curves = replay(trace.experts, 24, policy).curves
    for cap in (0, 1, 3, 8, 23):
        layers = tuple(SimLayer(cap, 1.0 if cap else 0.0, policy, True) for _ in range(4))
        res = simulate(trace.experts, trace.predicted, SimConfig(layers, 1e7, 1e10, 1e-5, [1e-4] * 4, 1e-3))
        np.testing.assert_allclose(res.layer_hit_rate, curves[:, cap], atol=1e-12)


@pytest.fixture(scope="module")
def lowered():
    structure = profile_model(resolve_model("mixtral-8x7b"), with_graph=False).moe
    opts = MoeOffloadOptions(trace_tokens=600, sim_tokens=600)
    return lower(structure, "mixtral-8x7b", resolve_hardware("a100_24gb"), opts)


def test_analytic_within_15_percent_of_simulated_across_theta_sweep(lowered) -> None:
    p = lowered.problem
    import dataclasses

    for theta in (0.0, 0.25, 0.5, 0.75, 1.0):
        for pref in (True, False):
            caps = np.full(p.num_layers, int(min(p.num_experts, (p.budget_bytes / p.num_layers) // (max(theta, 1e-9) * p.expert_bytes))) if theta else 0)
            sol = dataclasses.replace(baselines.cache_only(p), thetas=np.full(p.num_layers, theta), capacities=caps,
                                      prefetch=np.full(p.num_layers, pref))
            pred = evaluate(p, sol.thetas, sol.capacities, sol.prefetch, "lcp").tpot_s
            sim = simulate_solution(lowered, sol).tpot_s
            assert abs(pred - sim) / sim < 0.15, (theta, pref, pred, sim)


def test_plan_and_baselines_rank_the_same_way_analytic_and_simulated(lowered) -> None:
    p = lowered.problem
    sols = {"plan": solve(p)}
    for name in ("prefetch_only", "cache_only", "mixtral_offloading", "adapmoe_dp"):
        sols[name] = baselines.baseline(name).solve(p)
    pred = {k: evaluate(p, s.thetas, s.capacities, s.prefetch, s.policy).tpot_s for k, s in sols.items()}
    sim = {k: simulate_solution(lowered, s).tpot_s for k, s in sols.items()}
    assert min(pred, key=pred.get) == min(sim, key=sim.get) == "plan"
    assert sim["plan"] <= min(v for k, v in sim.items() if k != "plan")


def test_split_layers_analytic_within_15_percent_of_simulated(lowered) -> None:
    """Host + link split layers (and host-only ones) across the copied fraction: the analytic model and the
    event-by-event simulator (its own DRAM sharing) agree within 15 %."""
    import dataclasses

    p = lowered.problem
    assert p.host_dram_bytes_per_s and p.host_expert_compute_s
    plan = solve(p, MoEpicConfig(cpu_misses=True, split_misses=True))
    assert plan.split_fraction is not None
    for alpha in (0.0, 0.125, 0.5, 1.0):
        sol = dataclasses.replace(plan, split_fraction=np.full(p.num_layers, alpha))
        pred = evaluate(p, sol.thetas, sol.capacities, sol.prefetch, "static", split=sol.split_fraction).tpot_s
        sim = simulate_solution(lowered, sol).tpot_s
        assert abs(pred - sim) / sim < 0.15, (alpha, pred, sim)
    # the planned split beats the host-only and the link-only extremes in the simulator too
    sims = {a: simulate_solution(lowered, dataclasses.replace(plan, split_fraction=np.full(p.num_layers, a))).tpot_s
            for a in (0.0, 1.0)}
    assert simulate_solution(lowered, plan).tpot_s < min(sims.values())


def test_hybrimoe_runs_in_the_simulator_with_its_parameters(lowered) -> None:
    p = lowered.problem
    base = baselines.hybrimoe(p, prefetch_size=1)
    assert base.params["mrs_alpha"] == 0.5 and base.params["prefetch_size"] == 1
    res = simulate_solution(lowered, base)
    assert res.tpot_s > 0 and np.isfinite(res.tpot_s)
    # its cache starts with the lowest expert ids and adapts through MRS: some hits, never all
    assert 0.0 < res.hit_rate < 1.0


def _host_config(kind: str, trace, cap: int, bandwidth: float, **layer) -> SimConfig:
    """A 4-layer host/split configuration with a static hot set of the lowest ids (1e7-byte experts)."""
    import dataclasses

    base = SimLayer(cap, 1.0, prefetch=False, mode=kind, initial_resident=tuple(range(cap)),
                    split=0.25 if kind == "split" else 0.0)
    layers = tuple(dataclasses.replace(base, **layer) for _ in range(4))
    return SimConfig(layers, 1e7, bandwidth, 1e-5, [1e-4] * 4, 1e-3, host_expert_compute_s=1e-4,
                     host_dram_bytes_per_s=2e11)


@pytest.mark.parametrize("kind", ["cpu", "split"])
def test_dynamic_cache_without_prefetch_is_the_static_set(kind: str) -> None:
    """The dynamic variant (docs §10) admits only prefetched experts: without prefetch it is the static layer."""
    trace = generate_trace(4, 16, 2, "moepic-calibrated", tokens=200, seed=5)
    static = simulate(trace.experts, trace.predicted, _host_config(kind, trace, 3, 2.5e10))
    dyn = simulate(trace.experts, trace.predicted, _host_config(kind, trace, 3, 2.5e10, dynamic=True))
    assert dyn.tpot_s == static.tpot_s and dyn.hit_rate == static.hit_rate
    np.testing.assert_array_equal(dyn.layer_host_bytes_per_token, static.layer_host_bytes_per_token)


@pytest.mark.parametrize("stream", ["fifo", "background", "background-keep"])
@pytest.mark.parametrize("kind", ["cpu", "split"])
def test_dynamic_cache_with_perfect_prefetch_and_a_fast_link_hits_every_time(kind: str, stream: str) -> None:
    """Perfect prediction, a link that lands every copy before the next dispatch and room for k experts: every
    activation after the first layer is a device hit, nothing is read by the host there, and each admitted expert
    costs exactly one whole copy on the link."""
    import dataclasses

    trace = generate_trace(4, 16, 2, "moepic-calibrated", tokens=200, seed=5)
    cfg = dataclasses.replace(_host_config(kind, trace, 2, 1e15, dynamic=True, prefetch=True, split=0.0,
                                           dc_background=stream != "fifo", dc_keep=stream == "background-keep"),
                              perfect_prediction=True, host_dram_bytes_per_s=None)
    res = simulate(trace.experts, trace.predicted, cfg)
    np.testing.assert_allclose(res.layer_hit_rate[1:], 1.0)
    np.testing.assert_allclose(res.layer_host_bytes_per_token[1:], 0.0)
    assert res.layer_hit_rate[0] < 1.0      # layer 0 has no previous dispatch to prefetch from
    static = simulate(trace.experts, trace.predicted, dataclasses.replace(cfg, layers=tuple(
        dataclasses.replace(lay, dynamic=False, prefetch=False) for lay in cfg.layers)))
    assert res.tpot_s < static.tpot_s
    # link bytes: whole experts only, one per admission
    copies = res.layer_bytes_per_token * res.tokens / 1e7
    np.testing.assert_allclose(copies, np.round(copies), atol=1e-6)
    assert copies[1:].min() > 0 and copies[0] == 0


def test_background_copies_yield_to_foreground_ones() -> None:
    """The link serves background (low-priority prefetch) copies only while no foreground copy is queued."""
    from runtime.sim.moe_offload import _Link

    link = _Link(1.0, None, None)                       # 1 byte/s, no host
    link.enqueue(("bg",), 10.0, 0.0, background=True)
    link.enqueue(("fg",), 3.0, 2.0)                     # arrives while the background copy is 2 bytes in
    assert link.arrival(("fg",)) == pytest.approx(5.0)  # not delayed by the 8 bytes left of the background copy
    assert link.arrival(("bg",)) == pytest.approx(13.0)
    # a stale background copy is dropped with the bytes it did not copy; a landed one cannot be
    link.enqueue(("bg2",), 10.0, 13.0, background=True)
    assert link.cancel(("bg2",), 17.0) == pytest.approx(6.0)
    assert link.cancel(("bg",), 17.0) == 0.0 and not link.in_flight_any(17.0)
