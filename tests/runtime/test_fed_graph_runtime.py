"""fed-graph runtime: FedGCF's strategy with beta = 1 is per-cluster FedAvg exactly, and with one cluster it is
FedAvg exactly (oracle: a hand-written FedAvg loop over the same client training handler); the fusion's edge
cases are the models themselves; the runtime's UCB1 and clustering copies agree with the solver's."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.fed.graph_fusion import Ucb1 as RuntimeUcb1
from runtime.fed.graph_fusion import fedavg, fuse, update_clusters
from solvers.fed_graph.bandit import Ucb1 as SolverUcb1
from solvers.fed_graph.clustering import agglomerative, cosine_similarity


def test_fuse_endpoints_are_the_models_and_midpoint_is_the_mean() -> None:
    rng = np.random.default_rng(0)
    s = {"w": rng.normal(size=(3, 4)).astype(np.float32)}
    c = {"w": rng.normal(size=(3, 4)).astype(np.float32)}
    assert np.array_equal(fuse(s, c, 1.0)["w"], s["w"])
    assert np.array_equal(fuse(s, c, 0.0)["w"], c["w"])
    np.testing.assert_allclose(fuse(s, c, 0.5)["w"], (s["w"] + c["w"]) / 2, rtol=1e-6)


def test_ucb1_copies_choose_alike() -> None:
    rng = np.random.default_rng(1)
    for prior in (None, rng.normal(size=5) * 0.01):
        a, b = RuntimeUcb1(5, 0.05, prior, 1.0), SolverUcb1(5, 0.05, prior, 1.0)
        for _ in range(40):
            i, j = a.choose(), b.choose()
            assert i == j
            r = float(rng.normal(0.01 * i, 0.02))
            a.update(i, r)
            b.update(j, r)
        assert a.best() == b.best()


def test_update_clusters_matches_the_solvers_agglomeration() -> None:
    rng = np.random.default_rng(2)
    u = np.concatenate([rng.normal(loc=3, size=(4, 6)), rng.normal(loc=-3, size=(3, 6))])
    assert np.array_equal(update_clusters(u, 2), agglomerative(cosine_similarity(u, centre=False), k=2))
    assert sorted(set(update_clusters(u, 2)[:4])) == [0]


# ------------------------------------------------------------------ the strategy against hand-written FedAvg
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, object]:
    from codegen.fed_graph import save_graph
    from planner.families.fed_graph.lowering import load_clients

    gc = load_clients("csbm-clients:nodes=160,groups=2,clients=4,degree=8,features=6", 0)
    path = tmp_path_factory.mktemp("fg") / "graph.npz"
    save_graph(path, gc.x, gc.y, gc.edges, gc.client, gc.split)
    training = {"rounds": 3, "local_steps": 2, "lr": 0.05, "hidden": 8, "features": 6, "classes": gc.classes, "seed": 0}
    return {"clients": list(gc.ids), "training": training}, path


def _drive(job: dict, path: object) -> list[dict]:
    """The strategy's rounds, every client answered by the real train handler; returns the final uploads."""
    from flwr.app import Message, Metadata
    from flwr.supercore.task_identity import TaskIdentity

    from runtime.fed import graph_app
    from runtime.fed.graph_model import build_model, state_arrays

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    import json
    import tempfile
    from pathlib import Path

    jp = Path(tempfile.mkdtemp()) / "job.json"
    jp.write_text(json.dumps(job))
    rc = {"job-path": str(jp), "graph-path": str(path)}
    t = job["training"]
    strat = graph_app.FedGcf(job, {i: 100 + i for i in range(len(job["clients"]))},
                             state_arrays(build_model(t["features"], t["classes"], t["hidden"], t["seed"])))
    for rnd in range(1, job["rounds"] + 1):
        strat.start_round(rnd)
        msgs = strat.configure_train(rnd, strat.choose(None))
        replies = {}
        for i, m in enumerate(msgs):
            md = Metadata(run_id=1, message_id=f"{rnd}-{i}", src_node_id=0, dst_node_id=100 + i, reply_to_message_id="",
                          group_id="", created_at=0.0, ttl=60.0, message_type="train")
            replies[i] = graph_app.client_train(Message(content=m.content, metadata=md), rc, {"client-index": i})
        strat.aggregate_train(replies)
    return strat.uploads, strat


def _hand_fedavg(job: dict, path: object, members: list[int]) -> list[dict]:
    """Plain FedAvg over `members` with the same client training (no strategy, no fusion)."""
    import torch

    from runtime.fed.graph_app import client_tensors
    from runtime.fed.graph_model import build_model, load_arrays, state_arrays, train_local
    from pathlib import Path

    t = job["training"]
    model = build_model(t["features"], t["classes"], t["hidden"], 0)
    glob = state_arrays(build_model(t["features"], t["classes"], t["hidden"], t["seed"]))
    out = {}
    for _ in range(t["rounds"]):
        ups, w = [], []
        for i in members:
            x, ei, y, tr, _, _, _ = client_tensors(str(path), Path(path).stat().st_mtime_ns, i)
            load_arrays(model, glob)
            torch.set_num_threads(1)
            train_local(model, x, ei, y, tr, t["local_steps"], t["lr"])
            ups.append(state_arrays(model))
            w.append(float(tr.sum()))
            out[i] = ups[-1]
        glob = fedavg(ups, w)
    return out


def _job(base: dict, clusters: list[int], beta: float) -> dict:
    return {**base, "config": "t", "clusters": clusters, "common": [0, 1, 2, 3], "beta_mode": "fixed", "beta": beta,
            "arms": [], "ucb_c": 0.0, "prior_mean": None, "prior_count": 0.0, "gcfl_warmup": 0, "gcfl_k": 0,
            "rounds": base["training"]["rounds"]}


def test_beta_one_is_per_cluster_fedavg_exactly(tiny: tuple[dict, object]) -> None:
    base, path = tiny
    uploads, _ = _drive(_job(base, [0, 1, 0, 1], 1.0), path)
    ref = {**_hand_fedavg(base, path, [0, 2]), **_hand_fedavg(base, path, [1, 3])}
    for i in range(4):
        for k in ref[i]:
            assert np.array_equal(uploads[i][k], ref[i][k]), (i, k)


def test_one_cluster_beta_one_is_fedavg_exactly(tiny: tuple[dict, object]) -> None:
    base, path = tiny
    uploads, _ = _drive(_job(base, [0, 0, 0, 0], 1.0), path)
    ref = _hand_fedavg(base, path, [0, 1, 2, 3])
    for i in range(4):
        for k in ref[i]:
            assert np.array_equal(uploads[i][k], ref[i][k]), (i, k)


def test_beta_between_mixes_the_common_model(tiny: tuple[dict, object]) -> None:
    """Control for the exactness tests: with beta = 0.5 the uploads differ from per-cluster FedAvg's."""
    base, path = tiny
    uploads, _ = _drive(_job(base, [0, 1, 0, 1], 0.5), path)
    ref = {**_hand_fedavg(base, path, [0, 2]), **_hand_fedavg(base, path, [1, 3])}
    assert any(not np.array_equal(uploads[0][k], ref[0][k]) for k in ref[0])


def test_global_beta_ablation_sends_one_beta_and_learns_from_every_client(tiny: tuple[dict, object]) -> None:
    """The strategy's one-bandit ablation: every cluster gets the same beta each round, and its single bandit is
    updated once per round from round 2 on (round 1 has no trained models to compare with)."""
    base, path = tiny
    job = {**_job(base, [0, 1, 0, 1], 1.0), "beta_mode": "bandit_global", "arms": [0.0, 0.5, 1.0], "ucb_c": 0.005}
    _, strat = _drive(job, path)
    assert len(strat.bandits) == 1 and strat.bandits[0].count.sum() == job["rounds"] - 1
    assert len(set(strat.picks.values())) == 1
    assert len(set(strat.final_betas().values())) == 1
