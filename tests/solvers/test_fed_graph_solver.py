"""fed-graph solver: clustering and the common set on hand-made signatures (oracle: the planted groups), the
pilot's beta = 1 equals per-cluster FedAvg run cluster by cluster, and infeasible requests raise one-line errors."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.errors import InfeasibleError
from solvers.fed_graph.clustering import agglomerative, common_set, cosine_similarity, feature_graph
from solvers.fed_graph.gcf import configurations, topology
from solvers.fed_graph.pilot import simulate
from solvers.fed_graph.problem import ClientData, FedGraphProblem, FusionConfig


def _problem(n: int = 6, seed: int = 0, **kw: object) -> FedGraphProblem:
    rng = np.random.default_rng(seed)
    planted = np.arange(n) % 2
    structure = np.where(planted[:, None] == 0, [1.0, 0.0, 0.2], [0.0, 1.0, 0.2]) + rng.normal(scale=0.05, size=(n, 3))
    features = rng.normal(size=(n, 4)) * 0.1 + 1.0
    data = []
    for i in range(n):
        m = 30
        y = rng.integers(0, 3, size=m)
        z = np.eye(3)[y] @ rng.normal(size=(3, 5)) + rng.normal(scale=0.8, size=(m, 5))
        split = rng.permutation(np.arange(m) % 3)
        data.append(ClientData(z, y, split == 0, split == 1, split == 2))
    base = dict(client_ids=tuple(f"c{i}" for i in range(n)), structure=structure, features=features,
                train_nodes=np.full(n, 10), model_bytes=100, signature_bytes=28, rounds=4, classes=3, k=2,
                threshold=None, pilot=tuple(data))
    base.update(kw)
    return FedGraphProblem(**base)


def test_agglomerative_recovers_planted_groups_by_k_and_threshold() -> None:
    p = _problem()
    sim = cosine_similarity(p.structure)
    assert list(agglomerative(sim, k=2)) == [0, 1, 0, 1, 0, 1]
    assert list(agglomerative(sim, threshold=0.5)) == [0, 1, 0, 1, 0, 1]
    assert len(set(agglomerative(sim, k=6))) == 6


def test_common_set_is_the_most_central_half() -> None:
    adj = np.zeros((4, 4), dtype=bool)
    for a, b in ((0, 1), (0, 2), (0, 3), (1, 2)):
        adj[a, b] = adj[b, a] = True
    assert list(common_set(adj, 0.5)) == [0, 1]
    assert common_set(np.zeros((3, 3), dtype=bool)).size == 0
    assert feature_graph(np.eye(3), 0.5).sum() == 0


def test_pilot_beta_one_is_per_cluster_fedavg_run_cluster_by_cluster() -> None:
    p = _problem()
    topo = topology(p)
    run = simulate(p, configurations(p, topo, None)["beta_1"])
    correct = 0.0
    for g in (0, 1):
        members = np.flatnonzero(topo.clusters == g)
        sub = replace(p, client_ids=tuple(p.client_ids[i] for i in members), structure=p.structure[members],
                      features=p.features[members], train_nodes=p.train_nodes[members],
                      pilot=tuple(p.pilot[i] for i in members), k=1)
        one = simulate(sub, FusionConfig("fedavg", "", np.zeros(len(members), dtype=np.int64),
                                         np.arange(len(members)), "fixed", beta=1.0))
        correct += one.test[-1] * sum(p.pilot[i].test.sum() for i in members)
    assert run.test[-1] == pytest.approx(correct / sum(c.test.sum() for c in p.pilot), abs=1e-12)


def test_infeasible_requests_name_the_fix() -> None:
    with pytest.raises(InfeasibleError, match="k=7"):
        topology(_problem(k=7))
    with pytest.raises(InfeasibleError, match="common-feature set is empty"):
        topology(_problem(delta=1.0))


def test_prior_covers_every_arm_and_round_one_pays_no_reward() -> None:
    """The bandit's prior has one mean per arm and cluster (from the oracle pilot, which scores every arm); a
    one-round bandit run observes nothing (round 1 has no trained models to measure the fusion's gain against),
    so the bandit still plays its first unobserved arm and its pick equals plain UCB1's first pick."""
    from solvers.fed_graph.gcf import solve

    p = _problem(arms=(0.0, 0.5, 1.0), prior_count=1.0)
    sol = solve(p)
    prior = sol.configs["fedgcf"].prior_mean
    assert prior.shape == (2, 3) and np.ptp(prior, axis=1).max() > 0
    cfg = replace(sol.configs["fedgcf"], prior_mean=None, prior_count=0.0)
    one = simulate(replace(p, rounds=1), cfg)
    two = simulate(replace(p, rounds=2), cfg)
    assert one.betas[0].tolist() == [0.0, 0.0]
    assert two.betas[1].tolist() == [0.0, 0.0]     # arm 0 was played but not yet observed: still unobserved


def test_csbm_clients_structure_separates_groups() -> None:
    """The default mixed bed gives every client its own graph with its group's degree and homophily, so the
    uploaded structural signatures recover the groups exactly (oracle: the planted groups)."""
    from planner.families.fed_graph.lowering import FedGraphOptions, load_clients, lower

    gc = load_clients("csbm-clients:nodes=600,groups=3,clients=9,features=4", 0)
    assert gc.edges.size and not np.any(gc.client[gc.edges[0]] != gc.client[gc.edges[1]])
    p, _ = lower(gc, FedGraphOptions(graph="", rounds=1, k=3))
    labels = topology(p).clusters
    for g in range(3):
        assert len(set(labels[gc.group == g].tolist())) == 1
    assert len(set(labels.tolist())) == 3


def test_global_beta_ablation_plays_one_beta_for_every_cluster() -> None:
    """The ablation (one bandit for all clusters) plays the same beta in every cluster every round; its prior is
    the clusters' per-arm priors weighted by their validation nodes; the per-cluster bandit is free to differ."""
    from solvers.fed_graph.gcf import GLOBAL, solve

    p = _problem(arms=(0.0, 0.5, 1.0), prior_count=1.0, rounds=6)
    sol = solve(p)
    g = sol.configs[GLOBAL]
    assert g.mode == "bandit_global" and g.prior_mean.shape == (1, 3)
    w = np.array([sum(p.pilot[i].val.sum() for i in np.flatnonzero(sol.topology.clusters == k)) for k in (0, 1)])
    np.testing.assert_allclose(g.prior_mean[0], (sol.configs["fedgcf"].prior_mean * w[:, None]).sum(0) / w.sum())
    run = sol.runs[GLOBAL]
    assert np.all(run.betas[:, 0] == run.betas[:, 1])
    assert GLOBAL in sol.bytes_target
