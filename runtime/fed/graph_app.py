"""fed-graph's Flower apps: FedGCF's server sends every client its own fused model
theta_c = beta_g * theta^S_g + (1 - beta_g) * theta^N each round; clients train a PyG GCN on their subgraph.

Run config: `job-path` (the JSON job of codegen/fed_graph.py: clusters, common set U, beta mode and bandit
settings, training), `graph-path` (graph.npz: features, labels, edges, owner and split of every node),
`rounds-path` (per-round records, see runtime/fed/federation.py). Node config: `device-id`, `client-index`.

Messages (every one addressed to one node; Flower's Message/RecordDict/ArrayRecord):
  query  `signature`      -> the client's structural and feature signature (uploaded once, before round 1)
  evaluate `structural`, `common` (+ `arms`) -> validation/test nodes correct for each arm's fusion
                            (the per-round oracle, the regret diagnostic and the final evaluation)
  train  `arrays` (its fused model) + `config` -> trained `arrays` + `metrics` (accuracy of the received
                            model on its validation and test nodes before training, bytes, losses)
The reward of a cluster's bandit is the validation accuracy gain of the round's fusion: the accuracy its
clients measure on this round's fused models minus the accuracy of the models they trained last round (each
client scores its trained model on its validation nodes before uploading it).
"""
from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from runtime.fed.federation import (FlowerApps, identify_nodes, make_client_app, make_server_app, report_end,
                                    report_round)  # first: it turns Flower's telemetry off before flwr is imported
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from runtime.fed.graph_fusion import Ucb1, fedavg, flat, fuse, update_clusters

log = logging.getLogger(__name__)
SIGNATURE_QUERY = "signature"


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """{name: numpy array} -> ArrayRecord."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord -> {name: numpy array}."""
    return {k: v.numpy() for k, v in record.items()}


def nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Payload bytes of a model (fp32 values)."""
    return int(sum(np.asarray(v).nbytes for v in arrays.values()))


# ------------------------------------------------------------------ client
@lru_cache(maxsize=4)
def _graph(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@lru_cache(maxsize=64)
def client_tensors(path: str, mtime_ns: int, index: int) -> tuple[Any, ...]:
    """(x, edge_index both ways, y, train, val, test masks, local edges once) of client `index`'s subgraph."""
    import torch

    g = _graph(path, mtime_ns)
    nodes = np.flatnonzero(g["client"] == index)
    local = -np.ones(g["x"].shape[0], dtype=np.int64)
    local[nodes] = np.arange(len(nodes))
    e = g["edges"]
    keep = (g["client"][e[0]] == index) & (g["client"][e[1]] == index)
    le = local[e[:, keep]]
    from runtime.fed.graph_model import normalized_graph

    ei = normalized_graph(torch.from_numpy(np.concatenate([le, le[::-1]], axis=1).copy()), len(nodes))
    s = g["split"][nodes]
    return (torch.from_numpy(g["x"][nodes].astype(np.float32)), ei, torch.from_numpy(g["y"][nodes].astype(np.int64)),
            torch.from_numpy(s == 0), torch.from_numpy(s == 1), torch.from_numpy(s == 2), le)


@lru_cache(maxsize=4)
def _model(features: int, classes: int, hidden: int) -> Any:
    """One module per process and shape: every handler loads all of its parameters before use, and the optimizer
    is new every call, so nothing carries over between clients or rounds."""
    from runtime.fed.graph_model import build_model

    return build_model(features, classes, hidden, 0)


def _setup(run_config: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[dict, Any, tuple]:
    import torch

    torch.set_num_threads(1)
    job = load_job(str(run_config["job-path"]))
    path = str(run_config["graph-path"])
    data = client_tensors(path, Path(path).stat().st_mtime_ns, int(node["client-index"]))
    t = job["training"]
    return job, _model(int(t["features"]), int(t["classes"]), int(t["hidden"])), data


def client_query(message: Message, run_config: dict[str, Any], node: dict[str, Any]) -> Message:
    """The signature upload (once): degree and clustering-coefficient histograms, feature mean and variance."""
    from runtime.fed.graph_signatures import client_signature

    _, _, (x, _, _, _, _, _, le) = _setup(run_config, node)
    sig = client_signature(le, x.numpy())
    rec = MetricRecord({"structure": [float(v) for v in sig.structure], "features": [float(v) for v in sig.features],
                        "nodes": int(sig.nodes)})
    return Message(content=RecordDict({SIGNATURE_QUERY: rec}), reply_to=message)


def client_evaluate(message: Message, run_config: dict[str, Any], node: dict[str, Any]) -> Message:
    """Validation and test nodes correct for every arm's fusion of the two models received."""
    from runtime.fed.graph_model import correct, load_arrays

    _, model, (x, ei, y, _, val, test, _) = _setup(run_config, node)
    s, c = to_numpy(message.content["structural"]), to_numpy(message.content["common"])
    arms = [float(a) for a in message.content["config"]["arms"]]
    vc, tc = [], []
    for b in arms:
        load_arrays(model, fuse(s, c, b))
        v, t = correct(model, x, ei, y, [val, test])
        vc.append(v)
        tc.append(t)
    m = MetricRecord({"val-correct": vc, "test-correct": tc, "val-total": int(val.sum()), "test-total": int(test.sum())})
    return Message(content=RecordDict({"metrics": m}), reply_to=message)


def client_train(message: Message, run_config: dict[str, Any], node: dict[str, Any]) -> Message:
    """Score the received fused model on validation and test nodes, then train it locally; send it back."""
    from runtime.fed.graph_model import correct, load_arrays, state_arrays, train_local

    job, model, (x, ei, y, train, val, test, _) = _setup(run_config, node)
    incoming = to_numpy(message.content["arrays"])
    load_arrays(model, incoming)
    v, t = correct(model, x, ei, y, [val, test])
    cfg = message.content["config"]
    t0 = time.process_time()
    losses = train_local(model, x, ei, y, train, int(cfg["local-steps"]), float(cfg["lr"]))
    out = state_arrays(model)
    v_after = correct(model, x, ei, y, [val])[0]
    metrics = {"train-nodes": int(train.sum()), "val-correct": v, "val-correct-trained": v_after,
               "val-total": int(val.sum()), "test-correct": t,
               "test-total": int(test.sum()), "bytes-down": nbytes(incoming), "bytes-up": nbytes(out),
               "loss-first": losses[0] if losses else 0.0, "loss-last": losses[-1] if losses else 0.0,
               "cpu-s": time.process_time() - t0}
    return Message(content=RecordDict({"arrays": to_record(out), "metrics": MetricRecord(metrics)}), reply_to=message)


# ------------------------------------------------------------------ server
def load_job(path: str) -> dict[str, Any]:
    """The job JSON (cached per file version: every client of a run reads the same file)."""
    return _job(path, Path(path).stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _job(path: str, mtime_ns: int) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class FedGcf:
    """The server strategy (Flower's Strategy shape: `configure_train` builds one message per node, its own fused
    model; `aggregate_train` folds the replies into the structural and common models and the bandits).

    State in client-index order: `uploads` (latest model of every client), `clusters`, `common` (indices of U).
    """

    def __init__(self, job: Mapping[str, Any], nodes: Mapping[int, int], initial: Mapping[str, np.ndarray]) -> None:
        self.job = job
        self.nodes = dict(nodes)                      # client index -> Flower node id
        n = len(job["clients"])
        self.n = n
        self.uploads = [dict(initial) for _ in range(n)]
        self.weights = np.ones(n)
        self.clusters = np.asarray(job["clusters"], dtype=np.int64).copy()
        self.common = np.asarray(job["common"], dtype=np.int64)
        self.mode = job["beta_mode"]
        self.arms = [float(a) for a in (job["arms"] or [job["beta"]])]
        if self.mode == "gcfl":
            self.clusters = np.zeros(n, dtype=np.int64)
        k = int(max(self.clusters.max() + 1, job.get("gcfl_k") or 1))
        prior = job.get("prior_mean")
        # "bandit": one UCB1 per structural cluster; "bandit_global" (the ablation): one UCB1, one beta for all
        self.bandits = [Ucb1(len(self.arms), float(job["ucb_c"]), prior[g] if prior else None,
                             float(job.get("prior_count") or 0.0)) for g in range(1 if self.mode == "bandit_global" else k)]
        self.trained_val: np.ndarray | None = None     # validation nodes right after last round's local training
        self.updates = np.zeros((n, flat(initial).size))
        self.picks: dict[int, int] = {}
        self.sent: list[dict[str, np.ndarray]] = []

    def models(self) -> tuple[dict[int, dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """Structural model of every cluster (per-cluster FedAvg) and the common model (FedAvg over U)."""
        S = {}
        for g in sorted(set(self.clusters.tolist())):
            members = np.flatnonzero(self.clusters == g)
            S[g] = fedavg([self.uploads[i] for i in members], self.weights[members])
        N = fedavg([self.uploads[i] for i in self.common], self.weights[self.common]) if self.common.size else S[0]
        return S, N

    def start_round(self, rnd: int) -> None:
        """GCFL-style: after the warm-up rounds, cluster the clients by their summed updates."""
        if self.mode == "gcfl" and rnd - 1 == int(self.job["gcfl_warmup"]) and self.n > 1:
            self.clusters = update_clusters(self.updates, int(self.job["gcfl_k"]))

    def choose(self, arm_val: Mapping[int, np.ndarray] | None) -> dict[int, float]:
        """beta of every cluster this round (arm_val: per-cluster validation accuracy of every arm, if known)."""
        betas = {}
        shared = self.bandits[0].choose() if self.mode == "bandit_global" else None
        for g in sorted(set(self.clusters.tolist())):
            if shared is not None:
                self.picks[g] = shared
            elif self.mode == "bandit":
                self.picks[g] = self.bandits[g].choose()
            elif self.mode == "oracle":
                self.picks[g] = int(np.argmax(arm_val[g]))
            else:
                self.picks[g] = 0
            betas[g] = self.arms[self.picks[g]]
        return betas

    def final_betas(self) -> dict[int, float]:
        """beta of every cluster for the final models (the bandit's greedy arm)."""
        if self.mode == "bandit_global":
            return {g: self.arms[self.bandits[0].best()] for g in sorted(set(self.clusters.tolist()))}
        return {g: self.arms[self.bandits[g].best()] if self.mode == "bandit" else self.arms[self.picks.get(g, 0)]
                for g in sorted(set(self.clusters.tolist()))}

    def configure_train(self, rnd: int, betas: Mapping[int, float]) -> list[Message]:
        """One train message per client, carrying its own fused model."""
        S, N = self.models()
        t = self.job["training"]
        cfg = ConfigRecord({"server-round": int(rnd), "local-steps": int(t["local_steps"]), "lr": float(t["lr"])})
        self.sent = [fuse(S[int(self.clusters[i])], N, betas[int(self.clusters[i])]) for i in range(self.n)]
        return [Message(content=RecordDict({"arrays": to_record(self.sent[i]), "config": cfg}), message_type="train",
                        dst_node_id=self.nodes[i]) for i in range(self.n)]

    def aggregate_train(self, replies: Mapping[int, Message]) -> dict[str, Any]:
        """Store every upload; update each cluster's bandit with its validation gain; the round's record."""
        val_c = np.zeros(self.n)
        val_after = np.zeros(self.n)
        val_t = np.zeros(self.n)
        test_c = np.zeros(self.n)
        test_t = np.zeros(self.n)
        up = down = 0
        for i, msg in replies.items():
            m = msg.content["metrics"]
            arrays = to_numpy(msg.content["arrays"])
            self.updates[i] += flat(arrays) - flat(self.sent[i])
            self.uploads[i] = arrays
            self.weights[i] = float(m["train-nodes"])
            val_c[i], val_t[i] = float(m["val-correct"]), float(m["val-total"])
            val_after[i] = float(m["val-correct-trained"])
            test_c[i], test_t[i] = float(m["test-correct"]), float(m["test-total"])
            up += int(m["bytes-up"])
            down += int(m["bytes-down"])
        rec: dict[str, Any] = {"bytes_up": up, "bytes_down": down,
                               "val_accuracy": float(val_c.sum() / max(val_t.sum(), 1)),
                               "test_accuracy": float(test_c.sum() / max(test_t.sum(), 1)), "clusters": {}}
        for g in sorted(set(self.clusters.tolist())):
            members = np.flatnonzero(self.clusters == g)
            acc = float(val_c[members].sum() / max(val_t[members].sum(), 1))
            # no reward in the first round: there are no trained models yet to measure the fusion's gain against
            reward = None if self.trained_val is None else acc - float(self.trained_val[members].sum() / max(val_t[members].sum(), 1))
            if self.mode == "bandit" and reward is not None:
                self.bandits[g].update(self.picks[g], reward)
            rec["clusters"][str(g)] = {"val_accuracy": acc, "reward": reward,
                                       "members": [self.job["clients"][i] for i in members]}
        if self.mode == "bandit_global" and self.trained_val is not None:   # one reward: every client's gain
            gain = float(val_c.sum() - self.trained_val.sum()) / max(val_t.sum(), 1)
            self.bandits[0].update(self.picks[min(self.picks)], gain)
        self.trained_val = val_after
        return rec


def _send(grid: Grid, msgs: list[Message], timeout: float, by_node: Mapping[int, int]) -> dict[int, Message]:
    from core.errors import PeerError

    replies = list(grid.send_and_receive(msgs, timeout=timeout))
    out = {}
    for r in replies:
        if r.has_error():
            raise PeerError(f"client node {r.metadata.src_node_id} failed ({r.error.reason})", "read the client log")
        out[by_node[int(r.metadata.src_node_id)]] = r
    if len(out) < len(msgs):
        raise PeerError(f"only {len(out)} of {len(msgs)} clients answered", "raise the round timeout or read the logs")
    return out


def evaluate_arms(grid: Grid, strat: FedGcf, arms: list[float], timeout: float,
                  by_node: Mapping[int, int]) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """Every client scores every arm's fusion: per cluster (validation accuracy per arm, test accuracy per arm)
    and per client (validation correct per arm, validation totals)."""
    S, N = strat.models()
    cfg = ConfigRecord({"arms": [float(a) for a in arms]})
    msgs = [Message(content=RecordDict({"structural": to_record(S[int(strat.clusters[i])]), "common": to_record(N),
                                        "config": cfg}), message_type="evaluate", dst_node_id=strat.nodes[i])
            for i in range(strat.n)]
    rep = _send(grid, msgs, timeout, by_node)
    vc = np.array([[float(v) for v in rep[i].content["metrics"]["val-correct"]] for i in range(strat.n)])
    tc = np.array([[float(v) for v in rep[i].content["metrics"]["test-correct"]] for i in range(strat.n)])
    vt = np.array([float(rep[i].content["metrics"]["val-total"]) for i in range(strat.n)])
    tt = np.array([float(rep[i].content["metrics"]["test-total"]) for i in range(strat.n)])
    per_val, per_test = {}, {}
    for g in sorted(set(strat.clusters.tolist())):
        m = np.flatnonzero(strat.clusters == g)
        per_val[g] = vc[m].sum(axis=0) / max(vt[m].sum(), 1)
        per_test[g] = tc[m].sum(axis=0) / max(tt[m].sum(), 1)
    return per_val, per_test, vc, vt


def server_main(grid: Grid, run_config: dict[str, Any]) -> None:
    """Identify the clients, collect their signatures, run the job's rounds; one record per round."""
    from runtime.fed.graph_model import build_model, state_arrays

    job = load_job(str(run_config["job-path"]))
    timeout = float(run_config.get("round-timeout-s", 600))
    idents = identify_nodes(grid, len(job["clients"]), timeout_s=float(run_config.get("connect-timeout-s", 180)))
    nodes = {int(ident["client-index"]): node for node, ident in idents.items()}
    by_node = {v: k for k, v in nodes.items()}
    # the signatures, uploaded once
    sig_msgs = [Message(content=RecordDict({SIGNATURE_QUERY: ConfigRecord({})}), message_type="query", dst_node_id=nodes[i])
                for i in sorted(nodes)]
    sigs = _send(grid, sig_msgs, timeout, by_node)
    planned = job.get("signatures") or {}
    sig_bytes = 0
    diffs = []
    for i, msg in sigs.items():
        rec = msg.content[SIGNATURE_QUERY]
        got = np.array(list(rec["structure"]) + list(rec["features"]), dtype=np.float64)
        sig_bytes += 4 * got.size
        cid = job["clients"][i]
        if cid in planned:
            diffs.append(float(np.max(np.abs(got - np.asarray(planned[cid], dtype=np.float64)))))
    t = job["training"]
    initial = state_arrays(build_model(int(t["features"]), int(t["classes"]), int(t["hidden"]), int(t["seed"])))
    strat = FedGcf(job, nodes, initial)
    diag = bool(job.get("arm_eval")) or strat.mode == "oracle"
    report_round(run_config, {"round": -1, "signature_bytes": sig_bytes,
                              "signature_max_abs_diff_vs_plan": max(diffs) if diffs else None})
    rounds = int(job["rounds"])
    for rnd in range(1, rounds + 1):
        strat.start_round(rnd)
        arm_val = arm_test = None
        regret = None
        if diag:
            arm_val, arm_test, _, _ = evaluate_arms(grid, strat, strat.arms, timeout, by_node)
        betas = strat.choose(arm_val)
        replies = _send(grid, strat.configure_train(rnd, betas), timeout, by_node)
        rec = strat.aggregate_train(replies)
        if arm_val is not None:
            sizes = {g: float(np.sum([replies[i].content["metrics"]["val-total"] for i in np.flatnonzero(strat.clusters == g)]))
                     for g in arm_val}
            tot = sum(sizes.values())
            regret = sum((arm_val[g].max() - arm_val[g][strat.picks[g]]) * sizes[g] for g in arm_val) / max(tot, 1)
        # the models sent this round are the models after rnd - 1 rounds of training
        report_round(run_config, {**rec, "round": rnd - 1, "betas": {str(g): b for g, b in betas.items()},
                                  "regret": regret, "clusters_now": [int(c) for c in strat.clusters]})
    finals = strat.final_betas()
    S, N = strat.models()
    sizes_v = sizes_t = 0.0
    val_acc = test_acc = 0.0
    # the final models: every cluster's fusion at its final beta, scored by its clients (evaluate messages)
    per_cluster = {}
    per_client: dict[str, list[float]] = {}
    for g, b in finals.items():
        members = np.flatnonzero(strat.clusters == g)
        fused = fuse(S[g], N, b)
        msgs = [Message(content=RecordDict({"structural": to_record(fused), "common": to_record(fused),
                                            "config": ConfigRecord({"arms": [1.0]})}), message_type="evaluate",
                        dst_node_id=nodes[int(i)]) for i in members]
        rep = _send(grid, msgs, timeout, by_node)
        for i, r in rep.items():
            per_client[str(i)] = [float(r.content["metrics"]["test-correct"][0]), float(r.content["metrics"]["test-total"])]
        v = sum(float(r.content["metrics"]["val-correct"][0]) for r in rep.values())
        vt_ = sum(float(r.content["metrics"]["val-total"]) for r in rep.values())
        tcor = sum(float(r.content["metrics"]["test-correct"][0]) for r in rep.values())
        tt_ = sum(float(r.content["metrics"]["test-total"]) for r in rep.values())
        val_acc += v
        sizes_v += vt_
        test_acc += tcor
        sizes_t += tt_
        per_cluster[str(g)] = {"beta": b, "val_accuracy": v / max(vt_, 1), "test_accuracy": tcor / max(tt_, 1)}
    report_round(run_config, {"round": rounds, "val_accuracy": val_acc / max(sizes_v, 1),
                              "test_accuracy": test_acc / max(sizes_t, 1), "final_betas": {str(g): b for g, b in finals.items()},
                              "clusters": per_cluster, "per_client_test": per_client, "bytes_up": 0, "bytes_down": 0,
                              "clusters_now": [int(c) for c in strat.clusters]})
    report_end(run_config)


HANDLERS = {"train": client_train, "evaluate": client_evaluate, "query": client_query}
APPS = FlowerApps(module=__name__, server_main=server_main, client_handlers=HANDLERS)
server_app = make_server_app(server_main)
client_app = make_client_app(HANDLERS)
