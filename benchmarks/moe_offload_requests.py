"""moe-offload whole requests: TTFT, TPOT and end-to-end time of the plan and every baseline, predicted and
SIMULATED (labelled simulator, not a measurement), and the plan's per-layer prefill decision.

Every simulated decode figure is HELD OUT (chosen on the trace's calibration sequences, scored on the others;
issue 18), and every cell runs at batch 1, 4 and 8 (B independent sequences).

For each model x device x prompt length P x batch B (N output tokens) it plans with the real pipeline
(objective: end-to-end time) and reports, for the plan, the prefill rules (llama.cpp's default copy rule,
ik_llama.cpp's MoE rule, always-host, always-stream, today's decode-only plan applied to prefill; all with the
plan's decode configuration) and the decode baselines (each with the prefill its system would do): TTFT,
TPOT and end-to-end. Per layer: streamed / host experts, the token threshold, and the break-even prompt length.

    .venv/bin/python benchmarks/moe_offload_requests.py            # writes build/bench/moe_offload_requests.json
    .venv/bin/python benchmarks/moe_offload_requests.py --quick    # mixtral-8x7b on a100_24gb
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from core.atomic_io import write_text_atomic
from planner.api import plan_from_argv
from solvers.common import InfeasibleError

MODELS = ("mixtral-8x7b", "qwen3-30b-a3b", "gpt-oss-20b", "deepseek-v2-lite")
HARDWARE = ("a100_24gb", "rtx4090_24gb")
PROMPTS = (128, 2048, 16384)
SHOWN = ("plan", "prefill_llamacpp", "prefill_ik_llamacpp", "prefill_host", "prefill_stream", "prefill_decode_plan",
         "llamacpp_cpu_moe", "ktransformers", "hybrimoe")
SHORT = ("plan", "llama", "ik", "host", "stream", "dec-plan", "n-cpu-moe", "ktrans", "hybri")


def run_cell(model: str, hw: str, prompt: int, output: int, sim_tokens: int, batch: int = 1) -> dict:
    """Plan one request shape and collect every configuration's request figures."""
    argv = [model, "--hardware", hw, "--prompt-tokens", str(prompt), "--output-tokens", str(output),
            "--sim-tokens", str(sim_tokens), "--batch", str(batch), "--all-baselines"]
    t0 = time.time()
    try:
        ctx = plan_from_argv(argv)
    except InfeasibleError as exc:
        return {"model": model, "hardware": hw, "prompt": prompt, "batch": batch, "feasible": False,
                "reason": exc.one_line()}
    plan = ctx.plan
    rows = {"plan": (dict(plan.predicted), dict(plan.simulated))}
    for name, b in plan.baselines.items():
        if "ttft_ms" in b.predicted:
            rows[name] = (dict(b.predicted), dict(b.simulated))
    keys = ("ttft_ms", "tpot_ms", "e2e_ms")
    figures = {n: {"predicted": {k: p.get(k) for k in keys}, "simulated": {k: s.get(k) for k in keys}}
               for n, (p, s) in rows.items()}
    layers = [{"layer": l["layer"], **l["prefill"]} for l in plan.decisions["layers"]]
    in_space = ("prefill_host", "prefill_stream", "prefill_decode_plan", "prefill_llamacpp", "prefill_ik_llamacpp")
    worse = [n for n in in_space if n in figures and figures[n]["predicted"]["e2e_ms"]
             < figures["plan"]["predicted"]["e2e_ms"] * (1 - 1e-9)]
    be = [l["break_even_prompt_tokens"] for l in layers]
    return {"model": model, "hardware": hw, "prompt": prompt, "batch": batch, "output": output, "feasible": True,
            "scored_on": plan.simulated.get("scored_on"), "figures": figures,
            "layers": layers, "streamed_layers": sum(1 for l in layers if l["streamed"] > 0.5),
            "break_even_min": min((b for b in be if b is not None), default=None),
            "break_even_max": max((b for b in be if b is not None), default=None),
            "never_break_even_layers": sum(1 for b in be if b is None),
            "prefill_rules_beating_plan_predicted": worse, "wall_s": time.time() - t0}


def fmt(cells: list[dict], which: str) -> str:
    """One table per metric source: TTFT / e2e in seconds per configuration."""
    head = f"{'model':17} {'hw':12} {'P':>5} {'B':>2} |" + "".join(f" {s:>9}" for s in SHORT) + " | TPOT ms  break-even"
    lines = [f"{which} TTFT s (e2e s below)", head, "-" * len(head)]
    for c in cells:
        lead = f"{c['model']:17} {c['hardware']:12} {c['prompt']:5d} {c.get('batch', 1):2d} |"
        if not c["feasible"]:
            lines.append(lead + " does not fit: " + c["reason"][:100])
            continue
        f = c["figures"]

        def cell(n: str, k: str) -> str:
            v = f.get(n, {}).get(which, {}).get(k)
            return f" {v / 1e3:9.2f}" if v is not None else f" {'-':>9}"
        be = f"{c['break_even_min']}-{c['break_even_max']}" if c["break_even_min"] else "never"
        lines.append(lead + "".join(cell(n, "ttft_ms") for n in SHOWN)
                     + f" | {f['plan'][which]['tpot_ms']:7.1f}  {be}")
        lines.append(f"{'':17} {'':12} {'e2e':>5} {'':2} |" + "".join(cell(n, "e2e_ms") for n in SHOWN) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--hardware", nargs="+", default=list(HARDWARE))
    ap.add_argument("--prompts", nargs="+", type=int, default=list(PROMPTS))
    ap.add_argument("--output-tokens", type=int, default=256)
    ap.add_argument("--sim-tokens", type=int, default=128)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    ap.add_argument("--quick", action="store_true", help="mixtral-8x7b on a100_24gb, a 512-token prompt")
    ap.add_argument("-o", "--output", default="build/bench/moe_offload_requests.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.hardware, args.prompts = ["mixtral-8x7b"], ["a100_24gb"], [512]
    t0 = time.time()
    cells = []
    for model in args.models:
        for hw in args.hardware:
            for prompt in args.prompts:
                for batch in args.batches:
                    cells.append(run_cell(model, hw, prompt, args.output_tokens, args.sim_tokens, batch))
                    print(f"[{time.time() - t0:6.0f}s] {model} {hw} P={prompt} B={batch} done", file=sys.stderr,
                          flush=True)
    print("Whole requests, batch B (independent sequences), N = %d output tokens; decode figures held out. SIMULATED figures come from the labelled simulator "
          "(prefill: the prompt's routing replayed expert by expert; decode: trace replay), not measurements. "
          "Prefill rules use the plan's decode configuration; n-cpu-moe, ktrans and hybri are decode baselines with "
          "their own prefill." % args.output_tokens)
    print(fmt(cells, "predicted"))
    print(fmt(cells, "simulated"))
    feasible = [c for c in cells if c["feasible"]]
    worse = [c for c in feasible if c["prefill_rules_beating_plan_predicted"]]
    print(f"cells where a prefill rule (inside the plan space) is predicted faster end to end than the plan: {len(worse)}"
          + "".join(f"; {c['model']}/{c['hardware']}/P={c['prompt']}: {c['prefill_rules_beating_plan_predicted']}"
                    for c in worse))
    for c in feasible:
        print(f"{c['model']}/{c['hardware']}/P={c['prompt']}: prefill streams experts in {c['streamed_layers']} of "
              f"{len(c['layers'])} layers; break-even prompt {c['break_even_min']}-{c['break_even_max']} tokens "
              f"({c['never_break_even_layers']} layers never break even up to 65536)")
    summary = {}
    for c in feasible:
        f = c["figures"]
        if "llamacpp_cpu_moe" not in f or f["llamacpp_cpu_moe"]["simulated"].get("e2e_ms") is None:
            continue
        key = f"{c['model']}/{c['hardware']}/P={c['prompt']}/B={c['batch']}"
        summary[key] = {"e2e_reduction_vs_llamacpp_heldout":
                        1 - f["plan"]["simulated"]["e2e_ms"] / f["llamacpp_cpu_moe"]["simulated"]["e2e_ms"],
                        "tpot_reduction_vs_llamacpp_heldout":
                        1 - f["plan"]["simulated"]["tpot_ms"] / f["llamacpp_cpu_moe"]["simulated"]["tpot_ms"]}
    print("summary: " + json.dumps(summary, sort_keys=True))
    write_text_atomic(args.output, json.dumps({"summary": summary, "cells": cells, "wall_s": time.time() - t0,
                                               "quick": bool(args.quick)}, indent=1, sort_keys=True, default=float))
    print(f"wrote {args.output} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
