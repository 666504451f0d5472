"""`planner run` for fed-graph artifacts: the Flower apps on Flower's simulation or deployment engine, or driven in
this process (`in_process=True`: the benchmark's many runs cannot pay Ray's start on 2 shared cores).

In-process mode calls the same ServerApp main with a `Grid` whose `send_and_receive` hands every message to the
same client handlers (the ones the ClientApp dispatches to), with Flower's own Message types; only the
transport (gRPC / Ray) is missing. Receipts say which engine ran.

    receipt = run_fed_graph(Path("build/gcf"), config="fedgcf", in_process=True)
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from core.errors import ArtifactError
from runtime.fed.federation import END_EVENT, QUERY_IDENTITY, kept_run_directory, read_rounds, run_federation
from runtime.fed import graph_app

IN_PROCESS = "Flower apps in-process (no transport)"


class InProcessGrid:
    """The part of Flower's `Grid` the fed-graph server uses, delivering to handlers in this process."""

    def __init__(self, node_configs: list[dict[str, Any]], run_config: dict[str, Any]) -> None:
        self.nodes = {1000 + i: dict(n) for i, n in enumerate(node_configs)}
        self.run_config = run_config
        self._mid = 0

    def get_node_ids(self) -> list[int]:
        return sorted(self.nodes)

    def send_and_receive(self, messages: Iterable[Any], timeout: float | None = None) -> list[Any]:
        from flwr.app import ConfigRecord, Error, Message, Metadata, RecordDict
        from flwr.supercore.task_identity import TaskIdentity

        out = []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            self._mid += 1
            mid = f"m{self._mid}"
            md = Metadata(run_id=1, message_id=mid, src_node_id=0, dst_node_id=node, reply_to_message_id="",
                          group_id="", created_at=time.time(), ttl=3600.0, message_type=msg.metadata.message_type)
            TaskIdentity.node_id = node
            received = Message(content=msg.content, metadata=md)
            kind = msg.metadata.message_type
            try:
                if kind == "query" and QUERY_IDENTITY in msg.content.config_records:
                    reply = Message(content=RecordDict({QUERY_IDENTITY: ConfigRecord(dict(self.nodes[node]))}),
                                    reply_to=received)
                else:
                    reply = graph_app.HANDLERS[kind](received, self.run_config, self.nodes[node])
            except Exception as exc:   # Flower turns a failing ClientApp into an error reply
                reply = Message(error=Error(code=1, reason=f"{exc.__class__.__name__}: {exc}"), reply_to=received)
            TaskIdentity.node_id = 0
            rmd = Metadata(run_id=1, message_id=f"r{mid}", src_node_id=node, dst_node_id=0, reply_to_message_id=mid,
                           group_id="", created_at=time.time(), ttl=3600.0, message_type=kind)
            out.append(Message(error=reply.error, metadata=rmd) if reply.has_error()
                       else Message(content=reply.content, metadata=rmd))
        return out


def node_configs(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One node config per client, in client-index order."""
    return [{"device-id": cid, "client-index": i} for i, cid in enumerate(job["clients"])]


def run_job(job: Mapping[str, Any], graph_path: Path, *, mode: str = "simulation", in_process: bool = False,
            on_round: Callable[[dict[str, Any]], None] | None = None, timeout_s: float = 1800.0) -> dict[str, Any]:
    """Run one job (codegen/fed_graph.py) and return its receipt."""
    work = kept_run_directory("planner-fed-graph-")
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job, sort_keys=True), encoding="utf-8")
    run_config = {"job-path": str(job_path), "graph-path": str(Path(graph_path).resolve())}
    t0 = time.perf_counter()
    if in_process:
        from flwr.supercore.task_identity import TaskIdentity

        import torch

        torch.set_num_threads(1)
        TaskIdentity.run_id = 1
        TaskIdentity.task_id = 1
        TaskIdentity.node_id = 0
        rounds_path = work / "rounds.jsonl"
        cfg = {**run_config, "rounds-path": str(rounds_path), "num-clients": len(job["clients"])}
        graph_app.server_main(InProcessGrid(node_configs(job), cfg), cfg)
        rounds = [r for r in read_rounds(rounds_path) if END_EVENT not in r]
        engine = IN_PROCESS
    else:
        result = run_federation(graph_app.APPS, run_config, node_configs(job), mode=mode, workdir=work,
                                on_round=on_round, timeout_s=timeout_s)
        rounds = result.rounds
        engine = f"Flower {mode}"
    wall = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    return build_receipt(job, rounds, engine, wall)


def build_receipt(job: Mapping[str, Any], rounds: list[dict[str, Any]], engine: str, wall_s: float) -> dict[str, Any]:
    """Accuracy curve (test and validation nodes of every client, node-weighted), betas, regret, bytes, and the
    plan's predictions beside what ran."""
    sig = next((r for r in rounds if r.get("round") == -1), {})
    curve = sorted((r for r in rounds if r.get("round", -1) >= 0), key=lambda r: r["round"])
    if not curve:
        raise ArtifactError("the run left no round records", "rerun with -v and read the engine's log")
    out_rounds = []
    cum_regret = 0.0
    for r in curve:
        if r.get("regret") is not None:
            cum_regret += float(r["regret"])
        out_rounds.append({"round": r["round"], "test_accuracy": r["test_accuracy"], "val_accuracy": r["val_accuracy"],
                           "betas": r.get("betas") or r.get("final_betas"), "regret": r.get("regret"),
                           "rewards": {g: c["reward"] for g, c in (r.get("clusters") or {}).items() if "reward" in c},
                           "cumulative_regret": cum_regret if r.get("regret") is not None else None})
    # bytes moved before the models of round r were sent = signatures + r rounds of traffic
    per_round = [int(r.get("bytes_up", 0)) + int(r.get("bytes_down", 0)) for r in curve[:-1]]
    for i, rec in enumerate(out_rounds):
        rec["bytes_to_here"] = int(sig.get("signature_bytes", 0)) + int(sum(per_round[:i]))
    pred = job.get("predicted", {})
    return {"family": "fed-graph", "engine": engine, "config": job["config"], "wall_s": wall_s,
            "clients": len(job["clients"]), "rounds": out_rounds,
            "final_test_accuracy": curve[-1]["test_accuracy"], "final_val_accuracy": curve[-1]["val_accuracy"],
            "final_betas": curve[-1].get("final_betas"), "final_clusters": curve[-1].get("clusters_now"),
            "final_per_client_test": curve[-1].get("per_client_test"),
            "signature_bytes": int(sig.get("signature_bytes", 0)),
            "signature_max_abs_diff_vs_plan": sig.get("signature_max_abs_diff_vs_plan"),
            "measured_bytes_per_round": float(np.median(per_round)) if per_round else 0.0,
            "predicted_bytes_per_round": pred.get("bytes_per_round"),
            "predicted_pilot_final_val_accuracy": pred.get("pilot_final_val_accuracy"),
            "note": "accuracy: the models the server sent after r rounds, scored by every client on its own held-out "
                    "test nodes (validation nodes drive the bandit); bytes: fp32 payloads counted by the apps"}


def bytes_to_target(receipt: Mapping[str, Any], target: float, key: str = "test_accuracy") -> int | None:
    """Bytes moved before the first round whose models reach `target` (None if never)."""
    for r in receipt["rounds"]:
        if r[key] >= target - 1e-12:
            return int(r["bytes_to_here"])
    return None

