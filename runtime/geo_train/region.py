"""One region's training process: `python -m runtime.geo_train.region JOB.json REGION OUT.json`.

Builds the model and its fragments, joins the torchft quorum through the lighthouse named in the job,
trains with the job's algorithm (CoCoDC, torchft's Streaming DiLoCo, or DiLoCo = one fragment, blocking)
over the emulated WAN, and writes its log: per-step wall time and loss, held-out perplexity of its model,
fragment choices, compensation lambdas, and the link's ledger.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch


def _outer(params: Any, job: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=job["outer_lr"], momentum=job["outer_momentum"], nesterov=True)


@torch.no_grad()
def perplexity(model: torch.nn.Module, tokens: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy) on `tokens` (eval mode, batches of 16)."""
    model.eval()
    losses = [float(model(input_ids=tokens[i:i + 16], labels=tokens[i:i + 16]).loss) for i in range(0, len(tokens), 16)]
    model.train()
    return math.exp(sum(losses) / len(losses))


def train_region(job: dict[str, Any], region: int, run: int = 0) -> dict[str, Any]:
    """Run one region to the end of one configuration; returns its log."""
    from torchft.local_sgd import DiLoCo
    from torchft.manager import Manager
    import torch.distributed as dist

    from runtime.geo_train.cocodc import CoCoDC
    from runtime.geo_train.data import CorpusStream, RegionStream, corpus_held_out, held_out
    from runtime.geo_train.model import build_lm, fragments
    from runtime.geo_train.wan import WanProcessGroupGloo

    torch.set_num_threads(1)
    model = build_lm(job["model_config"], job["seed"])
    frags = fragments(model, job["groups"] if job["algorithm"] != "diloco" else [sum(job["groups"], [])])
    inner = torch.optim.AdamW(model.parameters(), lr=job["inner_lr"], weight_decay=0.0)
    outers = [_outer(f.parameters(), job) for f in frags]
    d = job["data"]
    if d.get("kind") == "corpus":
        stream = CorpusStream(region, job["regions"], job["seed"], job["batch"], job["seq_len"])
        heldout = corpus_held_out(job["regions"], job["seed"], d["eval_batch"], job["seq_len"])
    else:
        stream = RegionStream(d["vocab"], region, d["sources"], job["seed"], job["batch"], job["seq_len"])
        heldout = held_out(d["vocab"], d["sources"], job["seed"], d["eval_batch"], job["seq_len"])

    store = dist.TCPStore(host_name="localhost", port=0, is_master=True, wait_for_workers=False)
    wan = job["wan"]
    pg = WanProcessGroupGloo(wan["rate_bps"], wan["rtt_s"], job["regions"], timeout=timedelta(seconds=job["timeout_s"]))
    manager = Manager(pg=pg, min_replica_size=job["regions"], load_state_dict=None, state_dict=None,
                      replica_id=f"region{region}-run{run}", store_addr="localhost", store_port=store.port, rank=0,
                      world_size=1, lighthouse_addr=job["lighthouse"], port=0, use_async_quorum=False,
                      timeout=timedelta(seconds=job["timeout_s"]), quorum_timeout=timedelta(seconds=job["timeout_s"]),
                      connect_timeout=timedelta(seconds=job["timeout_s"]))
    algo = job["algorithm"]
    H, tau = int(job["H"]), int(job["tau"])
    if algo == "cocodc":
        sync = CoCoDC(manager, frags, inner, outers, sync_every=H, slots_per_window=int(job["N"]),
                      fragment_sync_delay=tau, fragment_update_alpha=job["alpha"], lam0=job["lam0"],
                      kappa=job["kappa"], adaptive=job["adaptive"], compensate=job["compensate"],
                      compensation=job.get("compensation", "bounded"))
    elif algo == "streaming":
        sync = DiLoCo(manager, frags, inner, outers, sync_every=H, fragment_sync_delay=tau,
                      fragment_update_alpha=job["alpha"])
    elif algo == "diloco":
        sync = DiLoCo(manager, frags, inner, outers, sync_every=H, fragment_sync_delay=0, fragment_update_alpha=0.0)
    else:
        raise ValueError(f"unknown algorithm {algo}")

    log: dict[str, Any] = {"region": region, "algorithm": algo, "lighthouse": job["lighthouse"], "step_s": [],
                           "compute_s": [], "loss": [],
                           "eval": [], "commits": 0, "quorum_s": [], "quorum_step": []}
    # torchft blocks in start_quorum at every sync (use_async_quorum=False); each is timed. The first of a run
    # pays the quorum's set-up (the process group's configure): reported apart from the per-step figures. (It
    # took ~4.8 s while runs shared a lighthouse that still counted the last run's replicas alive; see launch.py)
    start_quorum = manager.start_quorum

    def timed_quorum(*args: Any, **kwargs: Any) -> Any:
        log["quorum_step"].append(len(log["step_s"]))      # 0-based index of the step it falls in
        t = time.perf_counter()
        try:
            return start_quorum(*args, **kwargs)
        finally:
            log["quorum_s"].append(time.perf_counter() - t)

    manager.start_quorum = timed_quorum  # type: ignore[method-assign]
    steps = int(job["steps"])
    # snapshots of this region's model every `snapshot_every` steps, for the benchmark's held-out curves
    snap_every = int(job.get("snapshot_every") or 0) if job.get("snapshot_dir") else 0
    snaps: list[tuple[int, dict[str, torch.Tensor]]] = []
    t_start = time.perf_counter()
    try:
        with sync:
            for step in range(steps):
                t0 = time.perf_counter()
                ids = stream.next()
                inner.zero_grad()
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                t1 = time.perf_counter()
                inner.step()                    # torchft's hooks send / apply fragments here
                t2 = time.perf_counter()
                log["loss"].append(float(loss))
                log["step_s"].append(t2 - t0)
                log["compute_s"].append(t1 - t0)
                if snap_every and ((step + 1) % snap_every == 0 or step + 1 == steps):
                    # kept in memory (a copy, well under a millisecond for lm-small), written after the run:
                    # the benchmark evaluates them in its own process, off this region's clock and link
                    snaps.append((step + 1, {k: v.detach().clone() for k, v in model.state_dict().items()}))
                if job["eval_every"] and ((step + 1) % job["eval_every"] == 0 or step + 1 == steps):
                    te = time.perf_counter()
                    log["eval"].append({"step": step + 1, "ppl": perplexity(model, heldout),
                                        "wall_s": te - t_start - sum(e.get("eval_s", 0.0) for e in log["eval"])})
                    log["eval"][-1]["eval_s"] = time.perf_counter() - te
    finally:
        manager.shutdown(wait=False)
    if snaps:
        torch.save(snaps, Path(job["snapshot_dir"]) / f"{job['name']}.s{job['seed']}.r{region}.pt")
    led = pg.ledger
    log.update({
        "manager_step": manager.current_step(),
        "choices": list(getattr(sync, "choices", [])),
        "lambdas": list(sync.comp_log.lam) if algo == "cocodc" else [],
        "lambda_fragments": list(sync.comp_log.fragment) if algo == "cocodc" else [],
        "payload_bytes": led.payload_bytes, "wire_bytes": led.wire_bytes, "transfers": led.transfers,
        "blocked_s": led.blocked_s, "link_busy_s": led.busy_s, "waits_s": list(led.waits),
        "final_params": [float(p.detach().double().sum()) for p in model.parameters()],
        "param_digest": float(sum(float(p.detach().double().abs().sum()) for p in model.parameters())),
    })
    if job.get("save_params"):
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, job["save_params"] + f".{region}.pt")
    return log


BATCH_WAIT_S = 3600.0   # how long a region waits for the launcher's next batch before giving up (exit 1)


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    region = int(argv[1])
    out = Path(argv[2])
    # one process runs every configuration of the job in turn (fresh model, manager and link each time):
    # the interpreter and its imports are paid once
    runs = job.get("runs") or [{}]
    batch = 0
    while True:
        log = [train_region({**job, **over}, region, 1000 * batch + i) for i, over in enumerate(runs)]
        dest = out if batch == 0 else out.with_suffix(f".b{batch}.json")
        tmp = dest.with_suffix(".tmp")
        tmp.write_text(json.dumps(log), encoding="utf-8")
        os.replace(tmp, dest)
        if not job.get("batch_dir"):
            return 0
        # more batches may follow (the launcher decides from these logs): wait for the next one or the stop file
        batch += 1
        nxt, stop = Path(job["batch_dir"]) / f"batch{batch}.json", Path(job["batch_dir"]) / "stop"
        t0 = time.monotonic()
        while not (nxt.exists() or stop.exists()):
            if time.monotonic() - t0 > BATCH_WAIT_S:
                print(f"no batch {batch} from the launcher within {BATCH_WAIT_S:g} s", file=sys.stderr)
                return 1
            time.sleep(0.05)
        if not nxt.exists():
            return 0
        runs = json.loads(nxt.read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
