"""fed-lora utility pilot (spec §9.9, issue 20): fit u(d, q) = d^α − γ·q from short runs on a DECISION seed.

The cost model's progress proxy says how much a round at LoRA depth d with q quantised blocks advances training.
The spec's default is linear in depth with γ = 0.1 per 8-bit block, not measured. This pilot runs the instruction
bed (`benchmarks/fed_lora.py`'s model, tasks and clients) on the data split of a decision seed (default 100; the
scored seeds are 0, 1, 2) with EVERY client at the same (d, q), for (1, 0), (2, 0), (4, 0) and (4, 4), through the
same Flower apps in-process, and measures the progress per round: the least-squares slope (through the origin) of
the held-out answer-token loss decrease over rounds 1..R. Then

    α = least squares of log(Δ(d, 0) / Δ(1, 0)) on log d over d = 2, 4 (through the origin), clipped to [0.05, 1]
    γ = max(0, (4^α − Δ(4, 4) / Δ(1, 0)) / 4)

and writes `{"gamma", "depth_exponent", "source", ...}` for `planner plan ... --utility-fit FILE`. One seed: the fit
is noisy, and says so in its source.

    nice env OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.fed_lora_pilot [--seed 100] [--rounds 4]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from core.atomic_io import write_text_atomic

OUT = Path("build/bench/fed_lora_utility_fit.json")
PILOT_CONFIGS = ((1, 0), (2, 0), (4, 0), (4, 4))


def loss_slope(curve: list[dict]) -> float:
    """Held-out loss decrease per round: least-squares slope through the origin of (loss_0 − loss_r) on r."""
    r = np.array([c["round"] for c in curve[1:]], dtype=float)
    dec = np.array([curve[0]["loss"] - c["loss"] for c in curve[1:]], dtype=float)
    return float((r * dec).sum() / (r * r).sum())


def fit_utility(progress: dict[tuple[int, int], float]) -> tuple[float, float]:
    """(α, γ) from the per-round progress of the pilot configurations (see the module docstring)."""
    base = progress[(1, 0)]
    xs, ys = [], []
    for d in (2, 4):
        if (d, 0) in progress and progress[(d, 0)] > 0 and base > 0:
            xs.append(math.log(d))
            ys.append(math.log(progress[(d, 0)] / base))
    alpha = float(np.dot(xs, ys) / np.dot(xs, xs)) if xs else 1.0
    alpha = min(1.0, max(0.05, alpha))
    gamma = max(0.0, (4**alpha - progress[(4, 4)] / base) / 4) if base > 0 else 0.0
    return alpha, float(gamma)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=100, help="decision seed (never a scored one: 0-2)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--local-steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.seed in (0, 1, 2):
        raise SystemExit("the pilot must not use a scored seed (0, 1, 2)")
    import torch

    torch.set_num_threads(1)
    from benchmarks.fed_lora import BED_MODEL, BED_TASKS, bed_artifact
    from runtime.fed.lora_run import run_in_process

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="fedlora-pilot-"))
    art, cfg = bed_artifact(work, args.seed, args.rounds, args.local_steps)
    cfg_path = art / "runtime.yaml"
    L = int(cfg["lora"]["num_blocks"])
    template = cfg["baselines"]["uniform_depth"]["clients"]
    for d, q in PILOT_CONFIGS:          # every client at (d, q): a pseudo-baseline the runtime can run by name
        cfg["baselines"][f"pilot_{d}_{q}"] = {
            "description": f"pilot: every client at depth {d}, {q} quantised blocks",
            "clients": {cid: {**c, "lora-depth": d,
                              "act-quant-blocks": ",".join(str(b) for b in range(L - d, L - d + q))}
                        for cid, c in template.items()}}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=True))
    runs = {}
    for d, q in PILOT_CONFIGS:
        rec = run_in_process(art, rounds=args.rounds, baseline=f"pilot_{d}_{q}",
                             on_round=lambda r, c=(d, q): print(f"  pilot {c} round {r['round']}: loss {r['loss']:.4f} "
                                                                f"acc {r['accuracy']:.3f}", flush=True))
        curve = [{"round": c["round"], "loss": c["loss"], "accuracy": c["accuracy"]} for c in rec["rounds"]]
        runs[(d, q)] = {"curve": curve, "loss_decrease_per_round": loss_slope(curve)}
        print(f"(d={d}, q={q}): held-out loss decrease per round {runs[(d, q)]['loss_decrease_per_round']:.4f}",
              flush=True)
    progress = {k: v["loss_decrease_per_round"] for k, v in runs.items()}
    alpha, gamma = fit_utility(progress)
    ratio = {f"{d},{q}": progress[(d, q)] / progress[(1, 0)] for d, q in PILOT_CONFIGS}
    source = (f"pilot on decision seed {args.seed} (not scored), {BED_MODEL}, instruct:{BED_TASKS}, "
              f"{args.rounds} rounds x {args.local_steps} local steps, every client at (d, q) in "
              f"{list(PILOT_CONFIGS)}; progress = held-out loss decrease per round; one seed, noisy "
              f"(benchmarks/fed_lora_pilot.py, {time.strftime('%Y-%m-%d', time.gmtime())})")
    out = {"gamma": gamma, "depth_exponent": alpha, "source": source, "seed": args.seed, "rounds": args.rounds,
           "progress_per_round": {f"{d},{q}": v for (d, q), v in progress.items()},
           "progress_ratio_to_depth1": ratio,
           "linear_model_ratio_to_depth1": {f"{d},{q}": d - 0.1 * q for d, q in PILOT_CONFIGS},
           "runs": {f"{d},{q}": v for (d, q), v in runs.items()}, "wall_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(out, indent=2) + "\n")
    print(f"fitted: depth_exponent {alpha:.3f}, gamma {gamma:.3f}; progress ratio to depth 1 {ratio}")
    print(f"wrote {args.out} ({out['wall_s']:.0f} s)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
