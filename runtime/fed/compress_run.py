"""Run a fed-compress job on Flower and turn its per-round records into a receipt.

    job = json.loads(Path("build/job.plan.json").read_text())
    receipt = run_fed_compress(job, Path("build/model/digits-cnn.pt2"), Path("build/run-plan"))

A job (written by `codegen/fed_compress.py`) is plain JSON: the clients with their emulated links and
compute scale, the schedule (per round, per selected client: kept fractions both ways, batch, the
plan's predicted bytes and time), the codec, training settings and the data split. The receipt
lists, per round and client, what was applied and measured (payload and serialised bytes, emulated
times, status) beside what was predicted, plus accuracy per round and the traffic to reach a target.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from core.atomic_io import write_text_atomic
from core.errors import PlannerError
from runtime.fed.federation import run_federation
from runtime.receipt import Receipt

log = logging.getLogger(__name__)

JOB_FORMAT = 1
ACCOUNTING = ("every payload byte every device receives and sends, both ways, from its first contact; nothing is "
              "installed before round 1, so a device's first download is the dense model in every configuration")


def check_job(job: Mapping[str, Any]) -> None:
    """Reject a job the runtime cannot run, naming the field at fault."""
    if job.get("format") != JOB_FORMAT:
        raise PlannerError(f"job format {job.get('format')!r} is not {JOB_FORMAT}", "re-emit the plan with this version")
    ids = {c["id"] for c in job["clients"]}
    for c in job["clients"]:
        if "compute_scale" not in c:
            raise PlannerError(f"client {c['id']} has no compute scale for the device emulation",
                               "pass the job through with_emulation(job, this CPU's FLOP/s) first")
        for key in ("uplink_bytes_per_s", "downlink_bytes_per_s"):
            if not float(c[key]) > 0:
                raise PlannerError(f"client {c['id']}: {key} is {c[key]}", "give every client a positive bandwidth")
        if int(c["samples"]) < 1:
            raise PlannerError(f"client {c['id']} has no training data", "give every client at least one sample")
    seen: set[str] = set()
    for r in sorted(job["rounds"], key=lambda x: int(x["round"])):
        for cid, s in r["clients"].items():
            if cid not in ids:
                raise PlannerError(f"round {r['round']} schedules unknown client {cid}", "re-emit the plan")
            if cid not in seen and float(s["keep_down"]) < 1.0:
                raise PlannerError(f"round {r['round']}: client {cid} holds no model yet, but its first download keeps "
                                   f"{s['keep_down']} of the values", "re-emit the plan with this version "
                                   "(first downloads are dense)")
            seen.add(cid)
            for key in ("keep_down", "keep_up"):
                if not 0.0 < float(s[key]) <= 1.0:
                    raise PlannerError(f"round {r['round']}, client {cid}: {key} = {s[key]} is outside (0, 1]",
                                       "ratios are fractions of values kept, in (0, 1]")


def node_configs(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Flower node config per client, in job order."""
    return [{"device-id": str(c["id"]), "client-index": int(c["index"]), "compute-scale": float(c["compute_scale"])}
            for c in job["clients"]]


def with_emulation(job: Mapping[str, Any], cpu_flops_per_s: float) -> dict[str, Any]:
    """The job with every client's compute scale (`cpu_flops_per_s / device FLOP/s`) for the CPU it runs on."""
    out = dict(job)
    out["clients"] = [{**c, "compute_scale": float(cpu_flops_per_s) / float(c["flops_per_s"])} for c in job["clients"]]
    return out


def with_dropouts(job: Mapping[str, Any], probability: float, seed: int) -> dict[str, Any]:
    """The job with each scheduled (round, client) failing mid-round with `probability` (seeded, EMULATED)."""
    import numpy as np

    rng = np.random.default_rng([int(seed), 0xD0])   # a stream of its own, apart from the participation draw
    out = dict(job)
    out["rounds"] = [{**r, "clients": {cid: {**c, "drop": bool(c.get("drop")) or bool(rng.random() < probability)}
                                       for cid, c in sorted(r["clients"].items())}} for r in job["rounds"]]
    return out


def truncated(job: Mapping[str, Any], rounds: int) -> dict[str, Any]:
    """The job's first `rounds` rounds."""
    return {**job, "rounds": [r for r in job["rounds"] if int(r["round"]) <= rounds]}


def run_fed_compress(job: Mapping[str, Any], model_path: Path, workdir: Path, *, mode: str = "simulation",
                     target_accuracy: float | None = None, on_round: Callable[[dict[str, Any]], None] | None = None,
                     timeout_s: float = 1800.0) -> Receipt:
    """Run `job` with the model at `model_path`; write the job and the rounds under `workdir`; return the receipt."""
    check_job(job)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    job_path = workdir / "job.json"
    write_text_atomic(job_path, json.dumps(job, sort_keys=True, indent=1) + "\n")
    from runtime.fed.compress_app import APPS

    result = run_federation(APPS, {"job-path": str(job_path), "model-path": str(Path(model_path).resolve())},
                            node_configs(job), mode=mode, workdir=workdir, on_round=on_round, timeout_s=timeout_s)
    return build_receipt(job, result.rounds, mode, target_accuracy)


def traffic_to_target(rounds: list[Mapping[str, Any]], target: float) -> tuple[int | None, float | None]:
    """(first round whose accuracy reaches `target`, payload bytes moved up to and including it), or (None, None)."""
    moved = 0.0
    for r in rounds:
        if int(r["round"]) == 0:
            continue
        moved += r["traffic_payload_bytes"]
        if r["accuracy"] >= target:
            return int(r["round"]), moved
    return None, None


def build_receipt(job: Mapping[str, Any], records: list[Mapping[str, Any]], mode: str,
                  target_accuracy: float | None = None) -> Receipt:
    """Rows per (round, client): applied settings, measured bytes, emulated times, predictions; totals per run."""
    rec = Receipt(family="fed-compress", config=str(job.get("config", "plan")),
                  link=f"Flower {mode}; device compute and links EMULATED from hardware profiles (times are "
                       "measured CPU seconds × each device's compute scale, and payload bytes / its bandwidth)")
    rounds = []
    for r in sorted(records, key=lambda x: int(x["round"])):
        clients = r.get("clients", {})
        down = sum(c["down_payload_bytes"] for c in clients.values())
        up = sum(c.get("up_payload_bytes", 0) for c in clients.values())
        ser = sum(c["down_serialised_bytes"] + c.get("up_serialised_bytes", 0) for c in clients.values())
        pred = sum(c["predicted"].get("bytes_down", 0.0) + c["predicted"].get("bytes_up", 0.0)
                   for c in clients.values() if c["status"] == "ok")
        pred += sum(c["predicted"].get("bytes_down", 0.0) for c in clients.values() if c["status"] != "ok")
        times = [c["time_s_emulated"] for c in clients.values() if c["status"] == "ok"]
        kd = [float(c["keep_down"]) for c in clients.values()]
        ku = [float(c["keep_up"]) for c in clients.values() if c["status"] == "ok"]
        pred_t = [c["predicted"].get("time_s", 0.0) for c in clients.values()]
        rounds.append({"round": int(r["round"]), "accuracy": float(r["accuracy"]),
                       "traffic_payload_bytes": float(down + up), "traffic_serialised_bytes": float(ser),
                       "predicted_traffic_bytes": float(pred),
                       "round_time_s_emulated": max(times, default=0.0),
                       "predicted_round_time_s": max(pred_t, default=0.0),
                       "answered": int(r.get("answered", 0)), "dropped": int(r.get("dropped", 0)),
                       "wall_s": float(r.get("wall_s", 0.0)),
                       "down_bytes": float(down), "up_bytes": float(up),
                       "keep_down_mean": sum(kd) / len(kd) if kd else None,
                       "keep_down_min": min(kd, default=None), "keep_down_max": max(kd, default=None),
                       "keep_up_mean": sum(ku) / len(ku) if ku else None,
                       "keep_up_min": min(ku, default=None), "keep_up_max": max(ku, default=None)})
        for cid, c in sorted(clients.items()):
            p = c["predicted"]
            row = {"round": int(r["round"]), "name": f"r{r['round']}:{cid}", **{k: v for k, v in c.items() if k != "predicted"}}
            row["predicted_bytes_down"] = p.get("bytes_down")
            row["predicted_bytes_up"] = p.get("bytes_up")
            row["predicted_time_s"] = p.get("time_s")
            rec.rows.append(row)
            if c["status"] == "ok" and p.get("bytes_up") is not None and c["up_payload_bytes"] != p["bytes_up"]:
                rec.flags.append(f"r{r['round']}:{cid}: upload {c['up_payload_bytes']} B vs predicted {p['bytes_up']:.0f} B")
            if p.get("bytes_down") is not None and c["down_payload_bytes"] != p["bytes_down"]:
                rec.flags.append(f"r{r['round']}:{cid}: download {c['down_payload_bytes']} B vs predicted {p['bytes_down']:.0f} B")
    rec.flag_differences((("time_s_emulated", "predicted_time_s"),))
    trained = [r for r in rounds if r["round"] > 0]
    totals: dict[str, Any] = {
        "rounds": rounds,
        "total_payload_bytes": float(sum(r["traffic_payload_bytes"] for r in trained)),
        "total_serialised_bytes": float(sum(r["traffic_serialised_bytes"] for r in trained)),
        "total_predicted_bytes": float(sum(r["predicted_traffic_bytes"] for r in trained)),
        "final_accuracy": trained[-1]["accuracy"] if trained else None,
        "best_accuracy": max((r["accuracy"] for r in trained), default=None),
        "dropped_client_rounds": int(sum(r["dropped"] for r in trained)),
        "emulated_time_s": float(sum(r["round_time_s_emulated"] for r in trained)),
        "mode": mode,
        "accounting": ACCOUNTING,
    }
    if target_accuracy is not None:
        rnd, moved = traffic_to_target(rounds, target_accuracy)
        totals.update(target_accuracy=target_accuracy, round_to_target=rnd, bytes_to_target=moved)
    rec.totals = totals
    return rec
