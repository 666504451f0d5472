"""Launch one process per worker, watch them, and build the receipt (measured vs predicted per round).

A worker that dies never hangs the run: the launcher polls every process; once one has exited with an error,
the others get the job's peer timeout to notice (they exit with a one-line message), then any still alive
are terminated. The receipt then says which worker died in which round and what was lost.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import torch

from core.p2p_topology import pair_distance_bounds
from runtime.dfgl.worker import entry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_logs(work: Path, m: int) -> list[list[dict]]:
    out = []
    for r in range(m):
        p = work / f"worker{r}.jsonl"
        out.append([json.loads(line) for line in p.read_text().splitlines()] if p.is_file() else [])
    return out


def run_job(job: dict[str, Any], work: Path, on_round: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run `job` (from codegen.dfgl) with its worker processes in `work`; return the receipt record."""
    m = len(job["workers"])
    job = {**job, "port": _free_port(), "out_dir": str(work)}
    job_file = work / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    # fork after importing torch and PyG once here: each worker is its own process (own gloo rank, one torch
    # thread) without paying PyG's import per worker
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=entry, args=(str(job_file), r), daemon=True) for r in range(m)]
    for p in procs:
        p.start()
    first_fail: tuple[int, int] | None = None
    fail_at = 0.0
    grace = float(job["timeout_s"]) + 10.0
    while any(p.is_alive() for p in procs):
        for r, p in enumerate(procs):
            if not p.is_alive() and p.exitcode not in (None, 0) and first_fail is None:
                first_fail, fail_at = (r, p.exitcode), time.monotonic()
        if first_fail is not None and time.monotonic() - fail_at > grace:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            break
        time.sleep(0.05)
    for p in procs:
        p.join()
    if first_fail is None:
        bad = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode != 0]
        first_fail = bad[0] if bad else None
    logs = _read_logs(work, m)
    return _receipt(job, logs, first_fail, work)


def _receipt(job: dict, logs: list[list[dict]], fail: tuple[int, int] | None, work: Path) -> dict[str, Any]:
    m = len(job["workers"])
    done = min(len(lg) for lg in logs)
    rounds = []
    for k in range(done):
        recs = [lg[k] for lg in logs]
        pred = job["rounds"][k]["predicted"]
        bound_ok = True
        if job.get("log_models"):
            models = [np.load(work / f"model_r{k}_w{r}.npy") for r in range(m)]
            known = np.asarray(recs[0]["known"], float)
            bound = pair_distance_bounds(known)
            for i in range(m):
                for j in range(m):
                    # the triangle-inequality bound from measured neighbour distances vs the true distance
                    if i != j and bound[i, j] + 1e-4 * (1 + bound[i, j]) < np.linalg.norm(models[i] - models[j]):
                        bound_ok = False
        ids = job["workers"]
        planned = job["rounds"][k]
        # what ran: every worker logs the action it decoded; they must agree (same state, same code)
        chosen_links = sorted(tuple(lk) for lk in recs[0]["links"])
        agree = all(sorted(tuple(lk) for lk in r["links"]) == chosen_links for r in recs)
        same = (chosen_links == sorted(tuple(sorted(lk)) for lk in planned["links"])
                and np.allclose(recs[0]["ratios"], planned["ratios"], atol=1e-6))
        online_pred = recs[0].get("online_predicted")
        ran_pred = online_pred if online_pred is not None else pred
        rounds.append({
            "round": k, "measured_s": max(r["wall_s"] for r in recs), "predicted_s": float(ran_pred["round_time_s"]),
            "measured_bytes": float(sum(r["bytes_in"] for r in recs)), "predicted_bytes": float(ran_pred["bytes"]),
            "controller": recs[0].get("controller", job["controller"]), "workers_agree": agree,
            "chosen": {"links": [[ids[a], ids[b]] for a, b in chosen_links],
                       "ratios": {ids[i]: round(float(v), 6) for i, v in enumerate(recs[0]["ratios"])}},
            "planned": {"links": [[ids[a], ids[b]] for a, b in planned["links"]],
                        "ratios": {ids[i]: round(float(v), 6) for i, v in enumerate(planned["ratios"])},
                        "predicted_s": float(pred["round_time_s"]), "predicted_bytes": float(pred["bytes"])},
            "same_as_planned": bool(same), "mean_train_error": float(np.mean([r["train_error"] for r in recs])),
            "consensus_estimate": float(recs[0]["consensus_estimate"]), "bound_holds": bound_ok,
            "accuracy": sum(r["correct"] for r in recs) / max(sum(r["tested"] for r in recs), 1),
            "mean_loss": float(np.mean([r["loss"] for r in recs])),
            "peers": {job["workers"][r]: [job["workers"][j] for j in recs[r]["peers"]] for r in range(m)},
            "ratios": {job["workers"][r]: recs[r]["ratio"] for r in range(m)},
            "emulated_comm_s": max(r["emulated_comm_s"] for r in recs),
        })
    lost = ""
    if fail is not None:
        r, code = fail
        died_in = len(logs[r])
        why = {3: "killed by --kill-worker", 4: "lost a peer"}.get(code, f"exit {code}")
        lost = (f"worker {job['workers'][r]} (rank {r}) stopped in round {died_in} ({why}); the others "
                f"stopped at their {job['timeout_s']:g} s peer timeout; {len(job['rounds']) - done} of "
                f"{len(job['rounds'])} rounds were not completed by every worker")
    return {"config": job["config"], "workers": m, "rounds": rounds, "lost": lost,
            "links": "emulated in the transport (sleep to bytes / rate + latency per neighbour)",
            "completed_rounds": done}
