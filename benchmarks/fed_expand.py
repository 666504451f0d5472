"""fed-expand benchmark (issue 24): FedBE's block expansion and allocation vs LoRA FedAvg, fixed expansion,
FedBE without dynamic allocation (and full fine-tuning FedAvg) on SmolLM2 truncated, real weights, the
instruction test bed's non-IID split and the forgetting probe.

Per seed (the data split, the data order and the plan change with it; the start, split and participation
are the same for every configuration within a seed):
  1. `planner plan` (fed-expand) on a population of 4 clients whose memory differs, `emit`;
  2. each configuration of the artifact run through the Flower apps in-process (runtime/fed_expand/run.py:
     the strategy's configure_train / aggregate_train and the client handler with Flower messages), every
     client every round;
  3. per round: held-out instruction accuracy (teacher-forced: answer-token accuracy and exact match);
     before and after: the probe (next-token accuracy and loss on held-out stdlib docstrings no training set
     uses); the receipt's budget check of every client-round.
Also: the memory/time model against a measured configuration of the same model, and the expansion identity
(max |Δ| of the logits) on the full 30-layer SmolLM2 with the plan's layout (skipped by --quick).

Target: the downstream target is fixed after the runs as the base accuracy plus half of the gap between it
and the best configuration's mean final accuracy (so it is well above where every model starts); rounds to
target are counted per seed (censored at rounds + 1 when not reached).

    nice .venv/bin/python -m benchmarks.fed_expand --quick     # 3 seeds, 4 configurations (< 15 min here)
    nice .venv/bin/python -m benchmarks.fed_expand             # 5 seeds, + full FT, the 30-layer identity
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from core.atomic_io import write_text_atomic

OUT = Path("build/bench/fed_expand.json")
CLIENTS = {"devices": [
    {"id": "big", "kind": "jetson_orin_nano_8gb", "memory": "2GiB", "link": "100mbps"},
    {"id": "mid", "kind": "raspberry_pi5_8gb", "memory": "350MiB", "link": "50mbps"},
    {"id": "small-a", "kind": "phone_midrange_8gb", "memory": "320MiB", "link": "20mbps"},
    {"id": "small-b", "kind": "phone_midrange_8gb", "memory": "320MiB", "link": "20mbps"}]}


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "min": float(a.min()),
            "max": float(a.max()), "median": float(np.median(a))}


def plan_and_emit(work: Path, model: str, data: str, seed: int, args: argparse.Namespace) -> Path:
    """One plan + artifact per seed, through the CLI in-process."""
    from planner.cli import main

    pop = work / "clients.yaml"
    pop.write_text(yaml.safe_dump(CLIENTS), encoding="utf-8")
    plan = work / f"plan-{seed}.json"
    argv = ["plan", model, "--scenario", "fed-expand", "--clients", str(pop), "--data", f"{data},seed={seed}",
            "--added-blocks", str(args.added_blocks), "--local-steps", str(args.local_steps), "--rounds", str(args.rounds),
            "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "-o", str(plan), "-q"]
    if main(argv) != 0:
        raise SystemExit(f"plan failed: {' '.join(argv)}")
    art = work / f"art-{seed}"
    if main(["emit", str(plan), "-o", str(art), "--seed", str(seed), "--lr", str(args.lr)]) != 0:
        raise SystemExit("emit failed")
    return art


def rounds_to(curve: list[float], target: float, rounds: int) -> int:
    """First round whose accuracy reaches `target` (rounds + 1 when none does)."""
    for r, v in enumerate(curve):
        if v >= target:
            return r
    return rounds + 1


def full_model_identity(added_after: list[int]) -> dict[str, Any]:
    """The expansion identity on the full 30-layer SmolLM2 with the plan's relative layout."""
    from codegen.fed_expand import identity_gap
    from testbeds.block_expansion import expand_blocks
    from testbeds.smollm2 import load_model

    base = load_model("smollm2-135m")
    after = sorted({min(29, int(round((a + 1) * 30 / 4)) - 1) for a in added_after} | {7, 15, 23, 29})
    big, inserted = expand_blocks(base, after=after)
    return {"model": "smollm2-135m (30 layers)", "added_after": after, "inserted": inserted,
            "max_abs_diff": identity_gap(base, big, int(base.config.vocab_size), seq=32)}


def model_check(model: str, args: argparse.Namespace) -> dict[str, Any]:
    """The fitted memory/time model vs a measured configuration not used for fitting."""
    from profilers.block_expansion import base_model_bytes, profile_block_expansion, validate_profile
    from testbeds.block_expansion import expand_blocks
    from testbeds.smollm2 import load_model

    base = load_model(model)
    L = len(base.model.layers)
    big, new = expand_blocks(base, after=[L // 2 - 1, L - 1])
    prof = profile_block_expansion(big, base_model_bytes(base), model, args.batch_size, args.seq_len, 12, repeats=2)
    return validate_profile(big, prof, new, repeats=2)


def main(argv: list[str] | None = None) -> None:
    """Run everything, print the tables, write build/bench/fed_expand.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 seeds, 4 configurations, no full FT, no 30-layer check")
    ap.add_argument("--model", default="smollm2-135m:4L")
    ap.add_argument("--data", default="instruct:format+recall+sort+upper,total=400,test_per_task=12")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--local-steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=48)
    ap.add_argument("--added-blocks", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3, help="added blocks' and LoRA's learning rate (full FT: /10)")
    ap.add_argument("--only-seed", type=int, default=None,
                    help="run one seed and write build/bench/fed_expand.seed<k>.json (seeds in parallel processes)")
    ap.add_argument("--merge", action="store_true", help="summarise the per-seed files of --only-seed runs")
    args = ap.parse_args(argv)
    seeds = args.seeds or (3 if args.quick else 5)
    args.rounds = args.rounds or (5 if args.quick else 10)
    configs = ["plan", "static_allocation", "fixed_expansion", "lora_fedavg"] + ([] if args.quick else ["full_ft"])
    from runtime.fed_expand.run import run_in_process

    t0 = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    plans: list[dict[str, Any]] = []
    if args.merge:
        parts = [json.loads((OUT.parent / f"fed_expand.seed{k}.json").read_text()) for k in range(seeds)]
        for part in parts:
            plans += part["plans"]
            for c in configs:
                results[c] += part["runs"][c]
        return summarise(results, plans, configs, seeds, args, t0, sum(p["wall_s"] for p in parts))
    with tempfile.TemporaryDirectory(prefix="bench-fed-expand-") as tmp:
        for seed in ([args.only_seed] if args.only_seed is not None else range(seeds)):
            work = Path(tmp) / f"s{seed}"
            work.mkdir()
            art = plan_and_emit(work, args.model, args.data, seed, args)
            plan = json.loads((art / "plan.json").read_text())
            plans.append({"seed": seed, "added_after": plan["decisions"]["added_after"],
                          "clients": {c: v["blocks"] for c, v in plan["decisions"]["clients"].items()},
                          "predicted_round_s": plan["predicted"]["round_time_s"],
                          "baselines_predicted_round_s": {k: v["predicted"]["round_time_s"] for k, v in plan["baselines"].items()},
                          "bytes_per_round": plan["predicted"]["bytes_per_round"],
                          "baselines_bytes_per_round": {k: v["predicted"]["bytes_per_round"] for k, v in plan["baselines"].items()}})
            for cfg in configs:           # interleaved per seed: every configuration sees the same load pattern
                r = run_in_process(art, config=cfg, rounds=args.rounds)
                results[cfg].append({"seed": seed, "curve": [x["token_accuracy"] for x in r["rounds"]],
                                     "exact": [x["exact_match"] for x in r["rounds"]], "initial": r["initial"],
                                     "final": r["final"], "budget_check": r["budget_check"],
                                     "bytes_moved": r["bytes_moved"], "emulated_clock_s": r["emulated_clock_s"],
                                     "wall_s": r["wall_s"],
                                     "devices": {c: {k: d[k] for k in ("measured_memory_bytes", "predicted_memory_bytes",
                                                                         "memory_error", "emulated_round_s",
                                                                         "predicted_round_s", "round_time_error")}
                                                 for c, d in r["devices"].items()}})
                print(f"seed {seed} {cfg:18s} token acc {r['initial']['token_accuracy']:.3f} -> {r['final']['token_accuracy']:.3f}"
                      f"  exact {r['final']['exact_match']:.3f}  probe {r['initial']['probe_accuracy']:.4f} -> "
                      f"{r['final']['probe_accuracy']:.4f}  agree {r['final']['probe_agreement']:.3f}  budget ok {r['budget_check']['all_within']}  "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.only_seed is not None:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(OUT.parent / f"fed_expand.seed{args.only_seed}.json", json.dumps(
            {"plans": plans, "runs": results, "wall_s": time.perf_counter() - t0}, default=float) + "\n")
        return None
    return summarise(results, plans, configs, seeds, args, t0, time.perf_counter() - t0)


def summarise(results: dict[str, list[dict[str, Any]]], plans: list[dict[str, Any]], configs: list[str], seeds: int,
              args: argparse.Namespace, t0: float, compute_s: float) -> None:
    """Targets, per-configuration statistics and the summary; writes build/bench/fed_expand.json."""
    base_acc = statistics.mean(r["initial"]["token_accuracy"] for r in results["plan"])
    base_probe = statistics.mean(r["initial"]["probe_accuracy"] for r in results["plan"])
    best_final = max(statistics.mean(r["final"]["token_accuracy"] for r in results[c]) for c in configs)
    target = base_acc + 0.5 * (best_final - base_acc)
    per: dict[str, Any] = {}
    for c in configs:
        rs = results[c]
        per[c] = {"final_token_accuracy": _stats([r["final"]["token_accuracy"] for r in rs]),
                  "final_exact_match": _stats([r["final"]["exact_match"] for r in rs]),
                  "probe_accuracy": _stats([r["final"]["probe_accuracy"] for r in rs]),
                  "probe_loss_nats": _stats([r["final"]["probe_loss_nats"] for r in rs]),
                  "probe_agreement": _stats([r["final"]["probe_agreement"] for r in rs]),
                  "retention_share_of_base": _stats([r["final"]["probe_accuracy"] / r["initial"]["probe_accuracy"] for r in rs]),
                  "rounds_to_target": [rounds_to(r["curve"], target, args.rounds) for r in rs],
                  "bytes_moved": _stats([r["bytes_moved"] for r in rs]),
                  "emulated_clock_s": _stats([r["emulated_clock_s"] for r in rs]),
                  "budget_violations": sum(len(r["budget_check"]["violations"]) for r in rs),
                  "client_rounds": sum(r["budget_check"]["client_rounds"] for r in rs)}
    fb, lo = results["plan"], results["lora_fedavg"]
    ret = [100 * (a["final"]["probe_accuracy"] - b["final"]["probe_accuracy"]) for a, b in zip(fb, lo)]
    agree = [100 * (a["final"]["probe_agreement"] - b["final"]["probe_agreement"]) for a, b in zip(fb, lo)]
    down = [100 * (a["final"]["token_accuracy"] - b["final"]["token_accuracy"]) for a, b in zip(fb, lo)]
    speed = [rounds_to(b["curve"], target, args.rounds) / max(1, rounds_to(a["curve"], target, args.rounds))
             for a, b in zip(fb, lo)]
    extra: dict[str, Any] = {}
    if not args.quick:
        extra["identity_full_30_layers"] = full_model_identity(plans[0]["added_after"])
        extra["memory_time_model_check"] = model_check(args.model, args)
    summary = {
        "retention_points_vs_lora": _stats(ret)["mean"], "retention_points_vs_lora_spread": _stats(ret),
        "retention_share_of_base": {"fedbe": per["plan"]["retention_share_of_base"]["mean"],
                                    "lora_fedavg": per["lora_fedavg"]["retention_share_of_base"]["mean"]},
        "probe_agreement_points_vs_lora": _stats(agree)["mean"], "probe_agreement_points_vs_lora_spread": _stats(agree),
        "probe_agreement": {c: per[c]["probe_agreement"]["mean"] for c in configs},
        "downstream_delta_vs_lora": _stats(down)["mean"], "downstream_delta_vs_lora_spread": _stats(down),
        "rounds_to_target_speedup_vs_lora": float(np.median(speed)), "rounds_to_target_speedup_per_seed": speed,
        "seeds": seeds, "target_token_accuracy": target, "base_token_accuracy": base_acc, "base_probe_accuracy": base_probe,
        "budget_violations_plan": per["plan"]["budget_violations"], "client_rounds_plan": per["plan"]["client_rounds"],
        "units": "points = percentage points (accuracy x 100); downstream = held-out answer-token accuracy "
                 "(teacher-forced); retention = probe next-token accuracy on held-out text",
    }
    out = {"summary": summary, "configs": per, "plans": plans, "runs": results, **extra,
           "settings": {**vars(args), "seeds": seeds, "configs": configs, "clients": CLIENTS},
           "machine": "shared 2-core CPU, loaded by other jobs (CPU seconds measured per process)",
           "wall_s": time.perf_counter() - t0, "seed_process_wall_s_sum": compute_s}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(OUT, json.dumps(out, indent=1, sort_keys=True, default=float) + "\n")
    print(json.dumps(summary, indent=1, default=float))
    print(f"wrote {OUT} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
