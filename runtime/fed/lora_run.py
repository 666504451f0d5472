"""`planner run` for fed-lora artifacts: launch the federation, collect the receipt.

The receipt compares, per device, the plan's prediction with what the run measured (memory: bytes held
for training, counted on this CPU; round time: EMULATED from this CPU's measured seconds, see
runtime/fed/lora_app.py) and gives each device's waiting time; per round, the held-out accuracy and
the emulated wall clock (sum of emulated round times).
"""
from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from core.errors import ArtifactError
from runtime.fed.federation import kept_run_directory, run_federation
from runtime.fed.lora_app import APPS
from runtime.fed.lora_model import load_artifact

EMULATION_NOTE = ("round times are EMULATED: each client's CPU seconds on this machine x (this CPU's measured FLOP/s / "
                  "the device profile's), plus the bytes it exchanged over its link; memory is counted on this CPU "
                  "(parameters, gradients, Adam state, saved activations)")


def client_nodes(clients: dict[str, Any], all_ids: list[str]) -> list[dict[str, Any]]:
    """One node config per participating client (depth > 0), in id order."""
    nodes = []
    for cid in sorted(clients):
        c = clients[cid]
        if int(c["lora-depth"]) <= 0:
            continue
        nodes.append({"device-id": cid, "data-partition": all_ids.index(cid), "num-partitions": len(all_ids),
                      "compute-slowdown": float(c["compute-slowdown"]), "uplink-bytes-per-s": float(c["uplink-bytes-per-s"]),
                      "downlink-bytes-per-s": float(c["downlink-bytes-per-s"]), "latency-s": float(c["latency-s"])})
    return nodes


def _federation_setup(artifact_dir: str | Path, rounds: int | None, baseline: str | None, lr: float | None, *,
                      emulate_sleep: bool) -> tuple[Any, dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(artifact, planned clients, the nodes that train, Flower run config) of a run; refuses a plan where no
    client trains. Instruction-bed artifacts have no Dirichlet alpha (their split is by task): 1.0 is recorded."""
    art = load_artifact(artifact_dir)
    clients = dict(art.clients(baseline))
    nodes = client_nodes(clients, sorted(art.config["clients"]))
    if not nodes:
        raise ArtifactError("no client of this plan trains (every device sits out)", "re-plan with more memory")
    training = art.config["training"]
    run_config = {"artifact-dir": str(art.path.resolve()),
                  "num-rounds": int(rounds if rounds is not None else training["rounds"]), "baseline": baseline or "",
                  "lr": float(lr if lr is not None else training["lr"]),
                  "data-alpha": float(training["data"].get("alpha", 1.0)), "data-seed": int(training["data"]["seed"]),
                  "emulate-sleep": emulate_sleep}
    return art, clients, nodes, run_config


def run_fed_lora(artifact_dir: str | Path, *, mode: str = "simulation", rounds: int | None = None,
                 baseline: str | None = None, workdir: Path | None = None,
                 on_round: Callable[[dict[str, Any]], None] | None = None, timeout_s: float = 1800.0,
                 lr: float | None = None) -> dict[str, Any]:
    """Run the artifact's federation (`mode` "simulation" or "deploy") and return the receipt."""
    art, clients, nodes, run_config = _federation_setup(artifact_dir, rounds, baseline, lr,
                                                        emulate_sleep=mode == "deploy")
    own = workdir is None
    if workdir is None:       # removed after a successful run, kept when it fails (the error names its logs)
        workdir = kept_run_directory("planner-fed-lora-")
    result = run_federation(APPS, run_config, nodes, mode=mode, workdir=workdir, on_round=on_round,
                            timeout_s=timeout_s)
    if own:
        shutil.rmtree(workdir, ignore_errors=True)
    return build_receipt(art.config, clients, result.rounds, mode, baseline, result.wall_s)


# (initial adapters file, its mtime) -> (accuracy, loss) before any round: the same for every configuration of an
# artifact, so a benchmark running several configurations evaluates the start once (one entry kept).
_START_SCORES: dict[tuple[str, int], tuple[float, float]] = {}


def run_in_process(artifact_dir: str | Path, *, rounds: int | None = None, baseline: str | None = None,
                   lr: float | None = None, on_round: Callable[[dict[str, Any]], None] | None = None,
                   keep_state: bool = False) -> dict[str, Any]:
    """The same Flower apps driven in this process (no transport, no Ray), as runtime/fed_expand/run.py does: the
    strategy's configure_train, each client's handler with Flower messages, aggregate_train, the server's
    evaluation; every planned client every round. For learning curves of several configurations on a small
    machine; returns the receipt `run_fed_lora` returns (with `keep_state`, also the final global tensors as
    `final_state`)."""
    from flwr.supercore.task_identity import TaskIdentity

    from runtime.fed.compress_inprocess import train_round
    from runtime.fed.lora_app import client_train, evaluate_global, plan_node_configs
    from runtime.fed.lora_model import initial_lora
    from runtime.fed.lora_strategy import LayerwiseLoRA, to_numpy, to_record

    art, clients, nodes, run_config = _federation_setup(artifact_dir, rounds, baseline, lr, emulate_sleep=False)
    node_ids = {n["device-id"]: 1000 + i for i, n in enumerate(nodes)}
    node_cfg = {n["device-id"]: n for n in nodes}
    by_node = {v: k for k, v in node_ids.items()}
    replies: dict[int, dict[str, dict[str, Any]]] = {}
    strategy = LayerwiseLoRA(plan_node_configs(clients, {nid: {"device-id": cid} for cid, nid in node_ids.items()}),
                             art.lora["blocks_path"], art.num_blocks, on_replies=lambda r, rec: replies.__setitem__(r, rec))
    state = {k: v.numpy() for k, v in initial_lora(art).items()}
    start = art.path / art.config["adapters"]["initial"]
    key = (str(start.resolve()), start.stat().st_mtime_ns)      # every configuration of an artifact starts here
    if key not in _START_SCORES:
        _START_SCORES.clear()
        _START_SCORES[key] = evaluate_global(art, state)
    acc0, loss0 = _START_SCORES[key]
    records = [{"round": 0, "accuracy": acc0, "loss": loss0, "emulated_round_s": 0.0, "clients": {}}]
    arrays = to_record(state)
    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    wall0 = time.perf_counter()
    for rnd in range(1, int(run_config["num-rounds"]) + 1):
        new = train_round(strategy, rnd, arrays, by_node, lambda m, cid: client_train(m, run_config, node_cfg[cid]))
        if new is not None:
            arrays = new
        acc, loss = evaluate_global(art, to_numpy(arrays))
        rec = replies.get(rnd, {})
        times = [float(m["emulated-round-s"]) for m in rec.values() if "emulated-round-s" in m]
        records.append({"round": rnd, "accuracy": acc, "loss": loss, "emulated_round_s": max(times) if times else 0.0,
                        "clients": rec})
        if on_round is not None:
            on_round(records[-1])
    receipt = build_receipt(art.config, clients, records, "Flower apps in-process (no transport)", baseline,
                            time.perf_counter() - wall0)
    if keep_state:
        receipt["final_state"] = to_numpy(arrays)
    return receipt


def build_receipt(config: dict[str, Any], clients: dict[str, Any], rounds: list[dict[str, Any]], mode: str,
                  baseline: str | None, wall_s: float) -> dict[str, Any]:
    """Per device predicted vs measured/emulated, waiting times, and the accuracy curve."""
    per_round = [r for r in rounds if r.get("round", 0) >= 1]
    devices: dict[str, Any] = {}
    clock = 0.0
    curve = []
    for r in sorted(rounds, key=lambda r: r["round"]):
        clock += float(r.get("emulated_round_s", 0.0))
        curve.append({"round": r["round"], "accuracy": r["accuracy"], "loss": r["loss"],
                      "emulated_round_s": r.get("emulated_round_s", 0.0), "emulated_clock_s": clock})
    for cid in sorted(clients):
        c = clients[cid]
        depth = int(c["lora-depth"])
        entry: dict[str, Any] = {"lora_depth": depth, "act_quant_blocks": c["act-quant-blocks"],
                                 "predicted_round_s": c.get("predicted-round-s"),
                                 "predicted_memory_bytes": c.get("predicted-memory-bytes")}
        if depth <= 0:
            entry["sits_out"] = True
            devices[cid] = entry
            continue
        got = [r["clients"][cid] for r in per_round if cid in r.get("clients", {})]
        errors = [g["error"] for g in got if "error" in g]
        ok = [g for g in got if "error" not in g]
        expected = list(range(int(config["lora"]["num_blocks"]) - depth, int(config["lora"]["num_blocks"])))
        if ok:
            em = [float(g["emulated-round-s"]) for g in ok]
            waits = [float(r["emulated_round_s"]) - float(r["clients"][cid]["emulated-round-s"])
                     for r in per_round if cid in r.get("clients", {}) and "error" not in r["clients"][cid]]
            mem = max(int(g["measured-memory-bytes"]) for g in ok)
            entry.update({
                "emulated_round_s": statistics.median(em), "measured_cpu_s": statistics.median(float(g["measured-cpu-s"]) for g in ok),
                "wait_s": statistics.median(waits), "measured_memory_bytes": mem,
                "memory_error": (mem / entry["predicted_memory_bytes"] - 1) if entry.get("predicted_memory_bytes") else None,
                "round_time_error": (statistics.median(em) / entry["predicted_round_s"] - 1) if entry.get("predicted_round_s") else None,
                "trained_blocks": [int(b) for b in ok[0]["trained-blocks"]],
                "trained_planned_depth": all([int(b) for b in g["trained-blocks"]] == expected for g in ok),
                "rounds": len(ok)})
        if errors:
            entry["errors"] = errors
        devices[cid] = entry
    return {"family": "fed-lora", "mode": mode, "baseline": baseline, "emulation": EMULATION_NOTE,
            "wall_s": wall_s, "rounds": curve, "devices": devices,
            "final_accuracy": curve[-1]["accuracy"] if curve else None,
            "emulated_clock_s": clock}
