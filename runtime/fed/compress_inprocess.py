"""fed-compress's Flower apps driven in one process, for learning curves of many rounds on a small machine.

The CLI's `planner run` executes a job on Flower's simulation (Ray actors) or deployment engine. A
benchmark that needs 5 seeds × 7 configurations × 60+ rounds cannot pay Ray's start and per-message
costs on 2 shared cores, so `run_in_process` calls the same pieces Flower would call, in the same
order, with Flower's own message types: the server strategy's `configure_train`, every selected
client's `compression_mod` around the training handler `compress_app.train` (each client with its
own persistent `Context`, as a SuperNode keeps it), then `aggregate_train` and the server-side
evaluation. Only the transport is missing (no gRPC, no Ray); the payloads, codecs, aggregation and
receipt are the ones a Flower run produces. Results are labelled "Flower apps in-process".

    receipt = run_in_process(job, Path("build/model/digits-cnn.pt2"), target_accuracy=0.8)
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from runtime.fed import compress_app
from runtime.fed.compress_run import build_receipt, check_job
from runtime.receipt import Receipt

MODE = "Flower apps in-process (no transport)"


def _received(msg: Any, node: int, mid: str) -> Any:
    """A server message as a client receives it (Flower fills in the metadata on the way)."""
    from flwr.app import Message, Metadata

    md = Metadata(run_id=1, message_id=mid, src_node_id=0, dst_node_id=node, reply_to_message_id="", group_id="",
                  created_at=time.time(), ttl=3600.0, message_type=msg.metadata.message_type)
    return Message(content=msg.content, metadata=md)


def _from_client(reply: Any, node: int, mid: str) -> Any:
    """A client's reply (or its error) as the server receives it."""
    from flwr.app import Message, Metadata

    md = Metadata(run_id=1, message_id=f"r{mid}", src_node_id=node, dst_node_id=0, reply_to_message_id=mid,
                  group_id="", created_at=time.time(), ttl=3600.0, message_type="train")
    return Message(error=reply.error, metadata=md) if reply.has_error() else Message(content=reply.content, metadata=md)


def train_round(strategy: Any, rnd: int, arrays: Any, by_node: Mapping[int, str],
                handle: Callable[[Any, str], Any]) -> Any:
    """One Flower training round in this process: the strategy's messages as each client receives them,
    `handle(message, client_id)` for each (a failing client becomes an error reply, as Flower does), and the
    strategy's aggregation. Returns the aggregated arrays, or None when the strategy keeps the old ones."""
    from flwr.app import ConfigRecord, Error, Message
    from flwr.supercore.task_identity import TaskIdentity

    replies = []
    TaskIdentity.node_id = 0       # the server's messages
    for i, msg in enumerate(list(strategy.configure_train(rnd, arrays, ConfigRecord(), grid=None))):
        node = int(msg.metadata.dst_node_id)
        TaskIdentity.node_id = node
        mid = f"{rnd}-{i}"
        received = _received(msg, node, mid)
        try:
            reply = handle(received, by_node[node])
        except Exception as exc:   # Flower turns a failing ClientApp into an error reply
            reply = Message(error=Error(code=1, reason=f"{exc.__class__.__name__}: {exc}"), metadata=received.metadata)
        replies.append(_from_client(reply, node, mid))
    TaskIdentity.node_id = 0
    new, _ = strategy.aggregate_train(rnd, replies)
    return new


def run_in_process(job: Mapping[str, Any], model_path: Path, *, target_accuracy: float | None = None,
                   job_path: Path | None = None) -> Receipt:
    """Run `job` (see `compress_run.check_job`) through the Flower apps in this process; return the receipt."""
    import json
    import tempfile

    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    check_job(job)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fed-compress-inproc-") as tmp:
        path = job_path or Path(tmp) / "job.json"
        path.write_text(json.dumps(job), encoding="utf-8")
        run_config = {"job-path": str(path), "model-path": str(Path(model_path).resolve())}
        model = compress_app.load_model(run_config["model-path"])
        initial = {k: v.detach().clone().to(torch.float32) for k, v in model.state_dict().items()}
        nodes = {str(c["id"]): 1000 + int(c["index"]) for c in job["clients"]}
        node_cfg = {str(c["id"]): {"device-id": str(c["id"]), "client-index": int(c["index"]),
                                   "compute-scale": float(c["compute_scale"])} for c in job["clients"]}
        contexts = {cid: Context(1, n, dict(node_cfg[cid]), RecordDict(), dict(run_config)) for cid, n in nodes.items()}
        by_node = {n: cid for cid, n in nodes.items()}
        strategy = compress_app.strategy_for(job, nodes, initial)
        x_test, y_test = compress_app.test_data(job)
        weights = compress_app.dense_record(initial)
        records = [{"round": 0, "clients": {}, "accuracy": compress_app.accuracy(model, initial, x_test, y_test)}]
        TaskIdentity.run_id = 1
        TaskIdentity.task_id = 1
        for rnd in sorted(int(r["round"]) for r in job["rounds"]):
            new = train_round(strategy, rnd, weights, by_node, lambda m, cid: compress_app.compression_mod(
                m, contexts[cid], lambda m2, c, cid=cid: compress_app.train(m2, run_config, node_cfg[cid])))
            if new is not None:
                weights = new
            acc = compress_app.accuracy(model, compress_app.state_dict_of(weights), x_test, y_test)
            record = strategy.records.pop(rnd, {"round": rnd, "clients": {}})
            record["accuracy"] = acc
            records.append(record)
    return build_receipt(job, records, MODE, target_accuracy)
