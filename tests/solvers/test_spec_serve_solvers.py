"""spec-serve solvers: the E[n] formula, batch LP + rounding vs the exact CP-SAT ILP, the search's invariants."""
from __future__ import annotations

import numpy as np
import pytest

from solvers.spec_serve.batch import select_exact, select_lp
from solvers.spec_serve.cosine import MARGIN, colocated, solve, target_only
from solvers.spec_serve.cost import Config, expected_tokens_iid, metrics
from solvers.spec_serve.problem import SpecServeProblem
from solvers.spec_serve.validate import validate


def test_expected_tokens_closed_form() -> None:
    assert expected_tokens_iid(0.0, 5) == pytest.approx(1.0)
    assert expected_tokens_iid(0.5, 1) == pytest.approx(1.5)
    assert expected_tokens_iid(0.8, 4) == pytest.approx(sum(0.8 ** i for i in range(5)))
    assert expected_tokens_iid(0.999999, 3) == pytest.approx(4.0, rel=1e-4)


def _batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    gamma = rng.integers(1, 9, n)
    alpha = rng.uniform(0.3, 0.9, n)
    value = (1 - alpha ** (gamma + 1)) / (1 - alpha) * rng.uniform(1.0, 1.5, n)   # deadline priority
    cost = 0.02 + 0.004 * (gamma + 1) * rng.uniform(0.8, 1.2, n)
    tokens = gamma + 1
    return value, cost, tokens.astype(float), float(cost.sum() * rng.uniform(0.3, 0.7)), float(tokens.sum() * 0.8)


def test_lp_rounding_within_5_percent_of_the_exact_ilp() -> None:
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(40):
        v, c, k, budget, cap = _batch(rng, int(rng.integers(4, 13)))
        lp = select_lp(v, c, k, budget, cap)
        ex = select_exact(v, c, k, budget, cap)
        # invariants: both feasible, LP bound >= exact >= rounding
        for ch in (lp.chosen, ex.chosen):
            assert c[list(ch)].sum() <= budget + 1e-9 and k[list(ch)].sum() <= cap + 1e-9
        assert lp.lp_bound >= ex.objective - 1e-6 and ex.objective >= lp.objective - 1e-6
        gaps.append(1 - lp.objective / ex.objective)
    assert float(np.mean(gaps)) <= 0.05
    assert float(np.max(gaps)) <= 0.15


def test_lp_never_returns_an_empty_batch() -> None:
    ch = select_lp([3.0, 2.0], [1.0, 1.0], [4, 4], budget=0.1, cap=100)
    assert len(ch.chosen) == 1


def small_problem(arrival: float = 0.0) -> SpecServeProblem:
    drafters = ("ee4", "ee8", "ngram")
    sets = ((0,), (1,), (2,), (0, 1), (0, 2), (1, 2))
    alpha = np.array([[0.5, 0.4, 0.3], [0.6, 0.5, 0.4], [0.2, 0.7, 0.1], [0.65, 0.6, 0.45], [0.55, 0.75, 0.35],
                      [0.62, 0.76, 0.42]])
    return SpecServeProblem(drafters=drafters, nodes=("e1", "e2"), domains=("code", "chat", "math"), sets=sets,
                            alpha=alpha, draft_cpu_s=np.array([0.03, 0.05, 0.0005]), verify_cpu_s=(0.12, 0.006),
                            node_scale=np.array([0.1, 0.1]), verifier_scale=0.05,
                            link_delay_s=np.array([0.001, 0.001]), link_rate_bps=np.array([1e9, 1e9]),
                            domain_share=np.array([1 / 3] * 3), requests=24, new_tokens=32.0, arrival_rps=arrival,
                            node_ok=np.ones((2, 3), dtype=bool))


@pytest.mark.parametrize("arrival", [0.0, 2.0])
def test_search_beats_or_matches_its_ablations_and_validates(arrival: float) -> None:
    p = small_problem(arrival)
    sol = solve(p)
    assert validate(p, sol.config) == []
    for kw in ({"routing": False}, {"fusion": False}, {"one_gamma": True}):
        assert sol.objective >= solve(p, **kw).objective - 1e-9
    assert sol.metrics.goodput_tps == pytest.approx(metrics(p, sol.config).goodput_tps)
    # speculation pays where the verifier has spare positions: one request at a time with cheap drafting
    from dataclasses import replace

    one = replace(p, requests=1, draft_cpu_s=p.draft_cpu_s * 0.01)
    assert solve(one).objective > target_only(one).objective


def test_pipelining_cuts_idle_time() -> None:
    p = small_problem()
    sol = solve(p)
    barrier = Config(sol.config.placement, sol.config.routing, sol.config.gamma, sol.config.group, False)
    assert metrics(p, sol.config).verifier_idle < metrics(p, barrier).verifier_idle
    assert metrics(p, sol.config).goodput_tps > metrics(p, barrier).goodput_tps


def test_validate_catches_unplaced_drafters_and_gamma_bounds() -> None:
    p = small_problem()
    bad = Config((-1, -1), (0, 0, 0), (9, 1, 1), 2, True)
    msgs = validate(p, bad)
    assert any("unplaced" in m for m in msgs) and any("γ 9" in m for m in msgs)


def test_colocated_single_drafter_pays_drafting_on_the_verifier() -> None:
    p = small_problem()
    co = colocated(p, 0)
    assert co.metrics.tokens_per_verify > 1.0
    # the same drafter on its own node with pipelining is faster than drafting on the verifier
    from solvers.spec_serve.simulate import simulate

    off = solve(p, routing=False, fusion=False)
    assert simulate(p, off.config).goodput_tps > co.objective


def _useless(p: SpecServeProblem) -> SpecServeProblem:
    """The same problem with drafters that never match the target (acceptance 0, one token per verification)."""
    from dataclasses import replace

    return replace(p, alpha=np.zeros_like(p.alpha), meta={"tokens_per_verify": np.ones((len(p.sets), 3, 8))})


def test_plan_recommends_target_only_when_drafters_are_useless() -> None:
    from solvers.spec_serve.cosine import recommend, rescore

    p = _useless(small_problem())
    sols = {"cosine": rescore(p, solve(p)), "target-only": target_only(p),
            **{f"assisted-{d}": colocated(p, i) for i, d in enumerate(p.drafters)}}
    name, why = recommend(sols)
    assert name == "target-only"
    assert "do not pay" in why and "target-only" in why
    # every candidate is scored by the same replay: drafting that is never accepted only adds time
    assert all(s.objective <= sols["target-only"].objective * (1 + 1e-9) for s in sols.values())


def test_plan_recommends_cosine_when_its_drafters_pay() -> None:
    from solvers.spec_serve.cosine import recommend, rescore

    p = small_problem()
    sols = {"cosine": rescore(p, solve(p)), "target-only": target_only(p),
            **{f"assisted-{d}": colocated(p, i) for i, d in enumerate(p.drafters)}}
    name, _ = recommend(sols)
    assert name == _expected(sols, lambda n: -sols[n].objective, lambda a, b: -a * (1 + MARGIN) >= -b)
    assert sols[name].objective >= sols["target-only"].objective


def test_replay_equals_the_steady_state_formula_on_one_balanced_domain() -> None:
    """Oracle: one domain, many requests, pipelined groups of equal composition: the replay's goodput converges
    to cost.metrics' G·E/max(T_verify, T_draft) (prefill and drain aside)."""
    from dataclasses import replace

    from solvers.spec_serve.simulate import simulate

    p = replace(small_problem(), domains=("code",), domain_share=np.array([1.0]), alpha=small_problem().alpha[:, :1],
                requests=400, new_tokens=64.0)
    cfg = Config((0, 1), (0,), (4,), 2, True)
    steady = metrics(p, cfg).goodput_tps
    replay = simulate(p, cfg).goodput_tps
    assert replay == pytest.approx(steady, rel=0.03)
    assert replay <= steady * (1 + 1e-9)           # drain and fluid rounding only lose time


def test_replay_of_target_only_is_the_sum_of_its_batched_forwards() -> None:
    """Oracle by hand: target-only, offline, one group (no pipelining), 5 requests of N tokens each: requests are
    admitted in waves of the batch cap and every wave takes N forwards of one batched verification (a + b·B
    for B requests of one token, the linear model when no (B, T) grid was probed)."""
    from dataclasses import replace

    from solvers.spec_serve.cost import verify_batch_s
    from solvers.spec_serve.simulate import simulate

    p = replace(small_problem(), requests=5, new_tokens=7.0)
    a, b = p.verify_cpu_s
    for group, waves in ((1, [1] * 5), (2, [2, 2, 1]), (4, [4, 1]), (8, [5])):
        m = simulate(p, Config((-1, -1), (-1, -1, -1), (0, 0, 0), group, False))
        span = sum(7 * (a + b * w) * p.verifier_scale for w in waves)
        assert m.goodput_tps == pytest.approx(35 / span)
        assert m.tokens_per_verify == pytest.approx(1.0) and m.verifier_idle == pytest.approx(0.0, abs=1e-9)
    # the probed grid is interpolated in T within a batch size, then in B, and extrapolated beyond the largest B
    g = replace(p, meta={"verify_batch_grid": [[1, 1, 0.1], [1, 5, 0.2], [4, 1, 0.2], [4, 5, 0.6]]})
    s = g.verifier_scale
    assert verify_batch_s(g, 1, 3) == pytest.approx(0.15 * s)
    assert verify_batch_s(g, 4, 3) == pytest.approx(0.4 * s)
    assert verify_batch_s(g, 2, 1) == pytest.approx((0.1 + 0.1 / 3) * s)
    assert verify_batch_s(g, 7, 5) == pytest.approx((0.6 + 3 * 0.4 / 3) * s)
    # batching pays on a verifier with a fixed cost per forward: target-only's best batch cap is the largest
    t = target_only(replace(small_problem(), requests=6))
    assert t.config.group == 6 and not t.config.pipelined


def test_online_recommendation_compares_latency_when_every_candidate_keeps_up() -> None:
    from solvers.spec_serve.cosine import recommend, rescore

    p = small_problem(arrival=0.5)
    sols = {"cosine": rescore(p, solve(p)), "target-only": target_only(p),
            **{f"assisted-{d}": colocated(p, i) for i, d in enumerate(p.drafters)}}
    assert all(s.metrics.stable for s in sols.values())
    name, why = recommend(sols, online=True)
    lat = {n: sols[n].metrics.latency_p50_s for n in sols}
    assert name == _expected(sols, lambda n: lat[n], lambda a, b: a <= b * (1 + MARGIN))
    assert "p50" in why and "keeps up with the arrivals" in why


def _expected(sols, key, within) -> str:
    """The recommendation rule written out: the best by `key`, unless target-only (then the best single drafter)
    is within the margin of it."""
    best = min(sols, key=key)
    for group in (["target-only"], sorted((n for n in sols if n.startswith("assisted-")), key=key)):
        for n in group[:1]:
            if within(key(n), key(best)):
                return n
    return best


def test_online_utilisation_is_against_the_offline_capacity() -> None:
    """Online, the replayed goodput is the arrival rate when the configuration keeps up, so utilisation is the
    offered load over the offline replay's goodput: well below 1 at a light load, above 1 past capacity."""
    from dataclasses import replace

    from solvers.spec_serve.simulate import simulate

    cfg = Config((-1, -1), (-1, -1, -1), (0, 0, 0), 4, False)
    cap = simulate(replace(small_problem(), requests=12), cfg).goodput_tps
    rate = cap / 32.0                                     # requests/s that would fill the capacity
    light = simulate(replace(small_problem(arrival=0.25 * rate), requests=12), cfg)
    heavy = simulate(replace(small_problem(arrival=4.0 * rate), requests=12), cfg)
    assert light.utilisation == pytest.approx(0.25) and light.stable
    assert heavy.utilisation == pytest.approx(4.0) and not heavy.stable


def test_request_routers_split_by_count_and_by_speed() -> None:
    from core.request_router import assign

    assert assign(7, [1.0, 1.0, 1.0], "round-robin") == [0, 1, 2, 0, 1, 2, 0]
    w = assign(40, [20.0, 10.0, 10.0], "weighted-round-robin")           # a node twice as fast gets twice as many
    assert [w.count(i) for i in range(3)] == [20, 10, 10] and w[:4] == [0, 1, 2, 0]
    with pytest.raises(ValueError):
        assign(3, [1.0], "least-recently-used")


def test_replicas_replay_each_node_on_its_own_share_of_requests() -> None:
    """Oracle by hand (linear verify model, no grid): target-only, offline, one group per replica, 8 requests of 7
    tokens. Round-robin over three equal replicas: 3, 3, 2 requests, so the makespan is 7 forwards of a batch of 3.
    Speed-weighted over a verifier twice as fast as two drafter nodes: 4, 2, 2 requests, each replica at its own
    scale, the makespan the slowest replica's."""
    from dataclasses import replace

    from solvers.spec_serve.cosine import replica_nodes, replicated
    from solvers.spec_serve.simulate import simulate_replicas

    p = replace(small_problem(), requests=8, new_tokens=7.0)
    a, b = p.verify_cpu_s
    cfg = Config((-1, -1), (-1, -1, -1), (0, 0, 0), 8, False)
    m = simulate_replicas(p, cfg, [0.05, 0.05, 0.05], "round-robin")
    assert m.goodput_tps == pytest.approx(56 / (7 * (a + 3 * b) * 0.05))
    names, scales = replica_nodes(p)
    assert names == ["verifier", "e1", "e2"] and scales == [0.05, 0.1, 0.1]
    m = simulate_replicas(p, cfg, scales, "weighted-round-robin")
    assert m.goodput_tps == pytest.approx(56 / max(7 * (a + 4 * b) * 0.05, 7 * (a + 2 * b) * 0.1))
    assert m.tokens_per_verify == pytest.approx(1.0)
    # the baseline takes the better router and batch cap by the same replay
    rep = replicated(p)
    assert rep.params["replicas"] == names and rep.params["router"] in ("round-robin", "weighted-round-robin")
    for r in ("round-robin", "weighted-round-robin"):
        assert rep.objective >= simulate_replicas(p, cfg, scales, r).goodput_tps * (1 - 1e-9)
    # a node that cannot hold the target holds no replica
    assert replica_nodes(replace(p, target_ok=np.array([True, False])))[0] == ["verifier", "e1"]


def test_plan_recommends_replicas_when_they_beat_every_one_node_candidate() -> None:
    """Equal node count: with drafters that never match and drafter nodes as fast as the verifier, target-only on
    three nodes beats target-only on one (a verifier forward's fixed cost dominates), so the plan serves the
    replicas, never the one-node configuration its replica baseline beats."""
    from dataclasses import replace

    from solvers.spec_serve.cosine import recommend, replicated

    p = replace(_useless(small_problem()), node_scale=np.array([0.05, 0.05]))
    ngram = p.drafters.index("ngram")
    sols = {"target-only": target_only(p), "replicas-target-only": replicated(p),
            "assisted-ngram": colocated(p, ngram), "replicas-assisted-ngram": replicated(p, ngram)}
    assert sols["replicas-target-only"].objective > sols["target-only"].objective * (1 + MARGIN)
    name, why = recommend(sols)
    assert name == "replicas-target-only" and "replicas-target-only" in why
    assert all(s.objective <= sols[name].objective * (1 + MARGIN) for s in sols.values())
