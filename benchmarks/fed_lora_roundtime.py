"""fed-lora round-time model vs the client runtime (issue 20): per-step CPU seconds of the client's own training
loop (`runtime/fed/lora_app.train_client`, which fixes glibc's mmap threshold first) at several (depth, quantised
blocks) against the profile's prediction t(d, q) = F + B1 + (d − 1)·Bmid + [q ≥ 1]·(c1 + (q − 1)·cmid), on a
CALIBRATION sample: the instruction bed's data split for a decision seed (default 100; the scored seeds are
0, 1, 2), never the scored runs.

Each call to the client's loop is one round of `--local-steps` steps on that client's batches; the configurations
are interleaved (ABC ABC ...) and each is reported as median and min-max over `--repeats` calls. The profile is the
one the planner uses (fitted and cached by `planner plan`), and, with `--refit`, one fitted fresh in this process
beside it, so a stale cache entry shows.

    nice env OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.fed_lora_roundtime [--seed 100] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from core.atomic_io import write_text_atomic

OUT = Path("build/bench/fed_lora_roundtime.json")
CONFIGS = ((1, 0), (2, 0), (4, 0), (4, 4))


def predicted_step_s(prof: object, depth: int, quant: int) -> float:
    """The profile's host CPU seconds per step at (depth, quant) (what the cost model scales to a device)."""
    p = prof
    t = p.host_forward_s + p.host_backward_s_first + (depth - 1) * p.host_backward_s_mid
    if quant >= 1:
        t += p.host_quant_s_first + (quant - 1) * p.host_quant_s_mid
    return float(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=100, help="decision seed of the calibration sample (not 0-2)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--local-steps", type=int, default=3)
    ap.add_argument("--client", default="pi5", help="whose data share and batches to train on")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from benchmarks.fed_lora import BED_MODEL, BED_TASKS, bed_population
    from planner.api import emit_artifact, plan_from_argv
    from runtime.fed.lora_app import train_client
    from runtime.fed.lora_model import initial_lora, load_artifact
    from runtime.fed.lora_run import _federation_setup

    work = Path(tempfile.mkdtemp(prefix="fedlora-rt-"))
    pop = work / "clients.yaml"
    bed_population(pop)
    ctx = plan_from_argv([BED_MODEL, "--scenario", "fed-lora", "--clients", str(pop), "--batch-size", "4",
                          "--seq-len", "48", "--local-steps", str(args.local_steps), "--rounds", "6"])
    prof = ctx.state.profile
    data = f"instruct:{BED_TASKS},total=400,test_per_task=12,seed={args.seed}"
    art_dir = emit_artifact(ctx.plan, work / "build", ["--seed", str(args.seed), "--task-data", data])
    art, clients, nodes, run_config = _federation_setup(art_dir, 1, None, None, emulate_sleep=False)
    node = dict(next(n for n in nodes if n["device-id"] == args.client))
    node["compute-slowdown"] = 1.0
    base_cfg = dict(clients[args.client])
    state = {k: v.numpy() for k, v in initial_lora(load_artifact(art_dir)).items()}
    L = art.num_blocks
    got: dict[tuple[int, int], list[float]] = {c: [] for c in CONFIGS}
    for rep in range(args.repeats):
        for d, q in CONFIGS:
            cfg = {**base_cfg, "lora-depth": d, "act-quant-blocks": ",".join(str(b) for b in range(L - d, L - d + q)),
                   "local-steps": args.local_steps, "server-round": rep + 1}
            _, m = train_client(cfg, state, run_config, node)
            got[(d, q)].append(float(m["measured-cpu-s"]) / args.local_steps)
    rows = []
    base = float(np.median(got[(1, 0)]))
    for (d, q), xs in got.items():
        pred = predicted_step_s(prof, d, q)
        med = float(np.median(xs))
        rows.append({"depth": d, "quant": q, "measured_step_s_median": med, "measured_step_s_min": min(xs),
                     "measured_step_s_max": max(xs), "predicted_step_s": pred, "error": pred / med - 1,
                     "measured_over_depth1": med / base, "predicted_over_depth1": pred / predicted_step_s(prof, 1, 0)})
        print(f"d={d} q={q}: measured {med * 1e3:.0f} ms/step ({min(xs) * 1e3:.0f}-{max(xs) * 1e3:.0f}), predicted "
              f"{pred * 1e3:.0f} ms ({pred / med - 1:+.1%}); ratio to d=1: measured {med / base:.3f}, predicted "
              f"{pred / predicted_step_s(prof, 1, 0):.3f}", flush=True)
    out = {"seed": args.seed, "client": args.client, "repeats": args.repeats, "local_steps": args.local_steps,
           "profile": {k: getattr(prof, k) for k in ("host_forward_s", "host_backward_s_first", "host_backward_s_mid",
                                                     "host_quant_s_first", "host_quant_s_mid", "source")},
           "rows": rows, "load_avg": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["profile"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
