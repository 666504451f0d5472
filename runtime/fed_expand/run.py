"""`planner run` for fed-expand artifacts: the federation on Flower (simulation or loopback deployment), or the
same apps driven in-process (benchmarks), and the receipt that checks every client-round against its budgets.

Receipt: per client and round the layers it trained (those whose parameters received a gradient) against the
planned ones, measured memory (bytes held for training on this CPU: weights, trainable parameters, gradients,
Adam state, saved activations) against the plan's prediction and the client's budget, the EMULATED round time
(CPU seconds here x the FLOP/s ratio, plus bytes over its links) against the prediction and the deadline;
`budget_check` lists every client-round over memory or deadline. Per round: held-out accuracy (teacher-forced
exact match and answer-token accuracy); at the start and the end the general-ability probe.
"""
from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from core.errors import ArtifactError
from runtime.fed.federation import kept_run_directory, run_federation
from runtime.fed_expand.app import APPS, round_configs
from runtime.fed_expand.model import read_config

RECEIPT_METRICS = ("exact_match", "token_accuracy", "probe_accuracy", "probe_top10_accuracy", "probe_loss_nats",
                   "probe_agreement")
EMULATION_NOTE = ("round times are EMULATED: each client's CPU seconds on this machine x (this CPU's measured FLOP/s / "
                  "the device profile's), plus the bytes it exchanged over its links; memory is counted on this CPU")


def node_configs(art: Mapping[str, Any], clients: list[str]) -> list[dict[str, Any]]:
    """One Flower node config per training client."""
    nodes = art["nodes"]
    return [{"device-id": cid, **{k: v for k, v in nodes[cid].items()}} for cid in clients]


def run_expand(artifact_dir: str | Path, *, config: str = "plan", mode: str = "simulation", rounds: int | None = None,
               lr: float | None = None, workdir: Path | None = None,
               on_round: Callable[[dict[str, Any]], None] | None = None, timeout_s: float = 3600.0) -> dict[str, Any]:
    """Run one configuration on Flower (`mode` simulation or deploy) and return the receipt."""
    art = read_config(str(Path(artifact_dir).resolve()))
    method, per_client = round_configs(art, config)
    if not per_client:
        raise ArtifactError("no client of this configuration trains anything", "re-plan with more memory")
    t = art["training"]
    n_rounds = int(rounds if rounds is not None else t["rounds"])
    run_config = {"artifact-dir": str(Path(artifact_dir).resolve()), "config": config, "num-rounds": n_rounds,
                  "lr": float(lr if lr is not None else t["lr"][method]), "emulate-sleep": mode == "deploy"}
    own = workdir is None
    workdir = workdir or kept_run_directory("planner-fed-expand-")
    result = run_federation(APPS, run_config, node_configs(art, sorted(per_client)), mode=mode, workdir=workdir,
                            on_round=on_round, timeout_s=timeout_s, sim_cpus=1)
    if own:
        shutil.rmtree(workdir, ignore_errors=True)
    return build_receipt(art, config, result.rounds, f"Flower {mode}", result.wall_s)


def run_in_process(artifact_dir: str | Path, *, config: str = "plan", rounds: int | None = None,
                   lr: float | None = None, probe_every_round: bool = False,
                   on_round: Callable[[dict[str, Any]], None] | None = None,
                   initial: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The same Flower apps driven in this process (no transport, no Ray), as runtime/fed/compress_inprocess.py
    does for fed-compress: the strategy's configure_train, each client's handler with Flower messages,
    aggregate_train, the server's evaluation. For learning curves of many configurations on a small machine.

    `initial`: the round-0 evaluation when the caller already has it. Every configuration starts from the base
    model's function exactly (identity blocks: zeroed output projections, checked at emit; LoRA: B = 0; full
    FT: the base), so one evaluation of the start serves every configuration of an artifact."""
    from flwr.supercore.task_identity import TaskIdentity

    from runtime.fed.compress_inprocess import train_round
    from runtime.fed.lora_strategy import to_numpy, to_record
    from runtime.fed_expand.app import BlockFedAvg, client_train, evaluate, initial_state

    path = str(Path(artifact_dir).resolve())
    art = read_config(path)
    method, per_client = round_configs(art, config)
    t = art["training"]
    n_rounds = int(rounds if rounds is not None else t["rounds"])
    run_config = {"artifact-dir": path, "config": config, "num-rounds": n_rounds,
                  "lr": float(lr if lr is not None else t["lr"][method]), "emulate-sleep": False}
    nodes = {cid: 1000 + i for i, cid in enumerate(sorted(per_client))}
    node_cfg = {cid: n for cid, n in zip(sorted(per_client), node_configs(art, sorted(per_client)))}
    replies_by_round: dict[int, dict[str, Any]] = {}
    strategy = BlockFedAvg({nodes[c]: per_client[c] for c in per_client},
                           on_replies=lambda r, rec: replies_by_round.__setitem__(r, rec))
    state = initial_state(art, method)
    start = dict(initial) if initial is not None else evaluate(art, path, method, state)
    records = [{"round": 0, "clients": {}, **start}]
    wall0 = time.perf_counter()
    arrays = to_record(state)
    by_node = {n: c for c, n in nodes.items()}
    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    for rnd in range(1, n_rounds + 1):
        new = train_round(strategy, rnd, arrays, by_node,
                          lambda m, cid: client_train(m, run_config, node_cfg[cid]))
        if new is not None:
            arrays = new
        rec = {"round": rnd, "clients": replies_by_round.get(rnd, {}),
               **evaluate(art, path, method, to_numpy(arrays), with_probe=probe_every_round or rnd == n_rounds)}
        records.append(rec)
        if on_round is not None:
            on_round(rec)
    receipt = build_receipt(art, config, records, "Flower apps in-process (no transport)", time.perf_counter() - wall0)
    receipt["final_state_keys"] = len(to_numpy(arrays))
    return receipt


def build_receipt(art: Mapping[str, Any], config: str, rounds: list[dict[str, Any]], mode: str,
                  wall_s: float) -> dict[str, Any]:
    """Per client-round checks against the plan and the budgets; the accuracy curve; the probe."""
    c = art["configs"][config]
    deadline = art.get("deadline_s")
    checks, violations, devices = [], [], {}
    clock = 0.0
    curve = []
    for r in sorted(rounds, key=lambda r: r["round"]):
        times = [float(m["emulated-round-s"]) for m in r.get("clients", {}).values() if "emulated-round-s" in m]
        clock += max(times) if times else 0.0
        curve.append({k: v for k, v in r.items() if k != "clients"} | {"emulated_round_s": max(times) if times else 0.0,
                                                                      "emulated_clock_s": clock})
        for cid, m in sorted(r.get("clients", {}).items()):
            plan = c["clients"][cid]
            if "error" in m:
                violations.append(f"round {r['round']} client {cid}: {m['error']}")
                continue
            budget = int(art["nodes_budget"][cid]["memory_budget_bytes"])
            mem_ok = int(m["measured-memory-bytes"]) <= budget
            time_ok = deadline is None or float(m["emulated-round-s"]) <= float(deadline)
            trained = [int(x) for x in m["trained-layers"] if int(x) >= 0]
            planned = [int(x) for x in plan.get("layers", [])]
            check = {"round": r["round"], "client": cid, "planned_layers": planned, "trained_layers": trained,
                     "measured_memory_bytes": int(m["measured-memory-bytes"]),
                     "predicted_memory_bytes": plan.get("predicted_memory_bytes"), "memory_budget_bytes": budget,
                     "emulated_round_s": float(m["emulated-round-s"]), "predicted_round_s": plan.get("predicted_round_s"),
                     "deadline_s": deadline, "within_memory": mem_ok, "within_deadline": time_ok,
                     "bytes_moved": int(m["bytes-down"]) + int(m["bytes-up"]),
                     "measured_cpu_s": float(m.get("measured-cpu-s", 0.0))}
            checks.append(check)
            if not mem_ok:
                violations.append(f"round {r['round']} client {cid}: {m['measured-memory-bytes']} B over its {budget} B budget")
            if not time_ok:
                violations.append(f"round {r['round']} client {cid}: {float(m['emulated-round-s']):.3g} s over the {deadline} s deadline")
            if c["method"] == "blocks" and trained != planned:
                violations.append(f"round {r['round']} client {cid}: trained layers {trained}, planned {planned}")
    for cid in sorted({k["client"] for k in checks}):
        mine = [k for k in checks if k["client"] == cid]
        mem = max(k["measured_memory_bytes"] for k in mine)
        em = statistics.median(k["emulated_round_s"] for k in mine)
        pm, pt = mine[0]["predicted_memory_bytes"], mine[0]["predicted_round_s"]
        devices[cid] = {"planned_layers": mine[0]["planned_layers"], "rounds": len(mine),
                        "measured_memory_bytes": mem, "predicted_memory_bytes": pm,
                        "memory_error": (mem / pm - 1) if pm else None, "emulated_round_s": em, "predicted_round_s": pt,
                        "round_time_error": (em / pt - 1) if pt else None,
                        "memory_budget_bytes": mine[0]["memory_budget_bytes"],
                        "all_within_budgets": all(k["within_memory"] and k["within_deadline"] for k in mine)}
    first, last = (curve[0], curve[-1]) if curve else ({}, {})
    return {"family": "fed-expand", "config": config, "method": c["method"], "mode": mode, "emulation": EMULATION_NOTE,
            "wall_s": wall_s, "rounds": curve, "devices": devices, "client_rounds": checks,
            "budget_check": {"client_rounds": len(checks), "violations": violations, "all_within": not violations},
            "final": {k: last.get(k) for k in RECEIPT_METRICS},
            "initial": {k: first.get(k) for k in RECEIPT_METRICS},
            "bytes_moved": sum(k["bytes_moved"] for k in checks), "emulated_clock_s": clock}
