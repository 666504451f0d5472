"""moe-offload runtime figures: tiny models through the offloading engine on the EMULATED link.

For tiny Mixtral and tiny Qwen2-MoE: record a routing trace from the model itself (sampled decoding,
seeded), plan with `--tiny --calibrate` on `cpu_emulated_link`, emit, then run the MoEpic plan and
the whole-expert LRU baseline (mixtral-offloading) at the same budget on other prompts, and print
measured vs predicted vs simulated TPOT and hit rate. The link is emulated (real copies paced at the
plan's bandwidth, labelled); timings are this CPU's, not a GPU's.

    .venv/bin/python benchmarks/moe_offload_runtime.py        # writes build/bench/moe_offload_runtime.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from core.atomic_io import write_text_atomic
from planner.api import emit_artifact, plan_from_argv
from planner.cli import main as planner_main
from planner.registry import resolve_model
from profilers.models import build_model
from profilers.moe import record_trace
from runtime.moe_offload.run import generate, load

CONFIGS = ("plan", "mixtral_offloading", "cache_only", "prefetch_only")


def prompts(seed: int, n: int, vocab: int, length: int = 12) -> list[list[int]]:
    """Seeded random token prompts (tiny models have no tokenizer)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(n)]


def run_model(name: str, budget: str, trace_tokens: int, run_tokens: int, workdir: Path) -> list[dict]:
    """Trace, plan, emit and run one tiny model; one row per configuration."""
    built = build_model(resolve_model(name), tiny=True)
    vocab = int(built.module.config.vocab_size)
    trace = record_trace(built.module, prompts(1, 4, vocab), trace_tokens // 4, model_name=name, temperature=1.0, seed=1)
    tpath = trace.save(workdir / f"{name}.trace.npz")
    cal = workdir / f"{name}.calibration.yaml"
    if planner_main(["calibrate", name, "--tiny", "--scenario", "moe-offload", "-o", str(cal), "--force"]) != 0:
        raise SystemExit(f"calibration of {name} failed")
    p = plan_from_argv([name, "--tiny", "--hardware", "cpu_emulated_link", "--trace", str(tpath), "--expert-budget", budget,
                        "--calibration", str(cal), "--sim-tokens", str(trace.num_tokens)]).plan
    art = emit_artifact(p, workdir / f"{name}.build", force=True)
    rows = []
    eval_prompts = prompts(99, 2, vocab)
    for config in CONFIGS:
        if config != "plan" and config not in p.baselines:
            continue
        tp = tm = 0.0
        hits = acts = bytes_ = 0.0
        for j, pr in enumerate(eval_prompts):
            loaded = load(art, config=config, device="cpu")
            r = generate(loaded, pr, run_tokens, temperature=1.0, seed=10 + j)
            tm += r.totals["tpot_ms_measured"] * r.totals["tokens"]
            tp += r.totals["tokens"]
            hits += sum(row["hits"] for row in r.rows)
            acts += sum(row["activations"] for row in r.rows)
            bytes_ += r.totals["bytes_h2d_per_token"] * r.totals["tokens"]
        pred = p.predicted if config == "plan" else p.baselines[config].predicted
        sim = p.simulated if config == "plan" else p.baselines[config].simulated
        rows.append({"model": name, "config": config, "budget": budget, "tokens": int(tp),
                     "tpot_ms_measured": tm / tp, "tpot_ms_predicted": pred["tpot_ms"], "tpot_ms_simulated": sim["tpot_ms"],
                     "hit_rate_measured": hits / max(acts, 1), "hit_rate_predicted": pred["hit_rate"],
                     "hit_rate_simulated": sim["hit_rate"], "bytes_per_token_measured": bytes_ / tp,
                     "bytes_per_token_predicted": pred["bytes_per_token"],
                     "label": "measured on this CPU with the emulated link (not a GPU measurement)"})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["mixtral-8x7b", "qwen1.5-moe-a2.7b"])
    ap.add_argument("--budget", default="40%")
    ap.add_argument("--trace-tokens", type=int, default=800)
    ap.add_argument("--run-tokens", type=int, default=64)
    ap.add_argument("-o", "--output", default="build/bench/moe_offload_runtime.json")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.models:
            rows += run_model(m, args.budget, args.trace_tokens, args.run_tokens, Path(tmp))
    print("tiny models, emulated link (real copies paced at the plan's bandwidth on this CPU): not a GPU measurement")
    head = (f"{'model':18} {'config':19} | {'TPOT meas':>9} {'pred':>7} {'sim':>7} | {'hit meas':>8} {'pred':>6} "
            f"{'|diff| pts':>10} | {'KiB/tok meas':>12} {'pred':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:18} {r['config']:19} | {r['tpot_ms_measured']:9.2f} {r['tpot_ms_predicted']:7.2f} "
              f"{r['tpot_ms_simulated']:7.2f} | {r['hit_rate_measured']:8.1%} {r['hit_rate_predicted']:6.1%} "
              f"{abs(r['hit_rate_measured'] - r['hit_rate_predicted']) * 100:10.1f} | "
              f"{r['bytes_per_token_measured'] / 1024:12.1f} {r['bytes_per_token_predicted'] / 1024:7.1f}")
    for m in args.models:
        by = {r["config"]: r for r in rows if r["model"] == m}
        if "mixtral_offloading" in by:
            print(f"{m}: TPOT plan / whole-expert LRU baseline = "
                  f"{by['plan']['tpot_ms_measured'] / by['mixtral_offloading']['tpot_ms_measured']:.2f} measured, "
                  f"{by['plan']['tpot_ms_predicted'] / by['mixtral_offloading']['tpot_ms_predicted']:.2f} predicted")
    write_text_atomic(args.output, json.dumps({"rows": rows, "wall_s": time.time() - t0}, indent=1, sort_keys=True))
    print(f"wrote {args.output} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
