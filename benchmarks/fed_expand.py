"""fed-expand benchmark (issue 24): FedBE's block expansion and allocation vs LoRA FedAvg (and, outside --quick,
fixed expansion, FedBE without dynamic allocation and full fine-tuning FedAvg) on SmolLM2 truncated, real
weights, the instruction test bed's non-IID split and a general-text probe.

1. LoRA's learning rate is chosen first, on a DECISION seed that is never scored (`--decision-seed`, 100): LoRA
   FedAvg runs at each of `--lora-lrs` and the rate with the best final held-out accuracy is used on every
   scored seed. FedBE's added blocks keep `--lr` (1e-3, not tuned: a tuning advantage can only go to LoRA).
2. Per scored seed (the data split, the data order and the plan change with it; the start, split and
   participation are the same for every configuration within a seed): `planner plan` (fed-expand) on a
   population of 4 clients whose memory differs, `emit`; each configuration of the artifact run through the
   Flower apps in-process (runtime/fed_expand/run.py), every client every round, configurations interleaved.
3. Per round: held-out instruction accuracy (teacher-forced answer-token accuracy and exact match). At the
   start (evaluated once per seed: every configuration starts from the base model's function exactly) and
   the end: the probe on held-out stdlib docstrings no training set uses (runtime/fed_expand/app.py `probe`):
   top-10 next-token accuracy (the retention score: the truncated base ranks the right token in its top 10
   far above chance, though its top-1 is nearly always wrong), top-1, loss, agreement with the base's top-1.
   The receipt's budget check of every client-round.

Target: fixed per seed BEFORE the runs from the start accuracy: the base model's held-out answer-token
accuracy on that seed plus `--target-points` (10) points. Rounds to target are counted per seed (censored at
rounds + 1 when not reached). Outside --quick also: the memory/time model against a measured configuration,
and the expansion identity on the full 30-layer SmolLM2 with the plan's layout.

    nice .venv/bin/python -m benchmarks.fed_expand --quick     # 3 seeds + the decision seed, FedBE vs LoRA
    nice .venv/bin/python -m benchmarks.fed_expand --full-model   # the same on the full 30-layer SmolLM2-135M

--full-model (build/bench/fed_expand_full.json): the truncated models are not working language models, so their
probe cannot show forgetting; the full model can. There the decision seed also chooses FedBE's learning rate
(`--fedbe-lrs`) and the target (`--target decision`: a fraction of the best final gain reached on the decision
seed, the first of 1/2, 3/4 that neither tuned method reached in round 1). The decision seed's results are cached
(build/bench/fed_expand_full_decision.json, reused only when every setting matches).
    nice .venv/bin/python -m benchmarks.fed_expand             # 5 seeds, every baseline, 10 rounds
"""
from __future__ import annotations

import argparse
import json
import os
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
# --full-model: the same four device kinds with memory that holds the 30-layer model (540 MB of fp32 weights) plus
# LoRA's or one-to-two added blocks' training state; the phones and the Pi hold one added block, the Orin both.
CLIENTS_FULL = {"devices": [
    {"id": "big", "kind": "jetson_orin_nano_8gb", "memory": "2GiB", "link": "100mbps"},
    {"id": "mid", "kind": "raspberry_pi5_8gb", "memory": "800MiB", "link": "50mbps"},
    {"id": "small-a", "kind": "phone_midrange_8gb", "memory": "700MiB", "link": "20mbps"},
    {"id": "small-b", "kind": "phone_midrange_8gb", "memory": "700MiB", "link": "20mbps"}]}


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "min": float(a.min()),
            "max": float(a.max()), "median": float(np.median(a))}


def plan_and_emit(work: Path, model: str, data: str, seed: int, args: argparse.Namespace) -> Path:
    """One plan + artifact per seed, through the CLI in-process."""
    from planner.cli import main

    pop = work / "clients.yaml"
    pop.write_text(yaml.safe_dump(args.clients), encoding="utf-8")
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


def run_config(art: Path, cfg: str, rounds: int, lr: float | None, start: dict[str, float]) -> dict[str, Any]:
    """One configuration's run through the Flower apps in-process, reduced to what the summary needs."""
    from runtime.fed_expand.run import run_in_process

    t0 = time.process_time()
    r = run_in_process(art, config=cfg, rounds=rounds, lr=lr, initial=start)
    per_round: dict[int, float] = {}
    for k in r["client_rounds"]:
        per_round[k["round"]] = per_round.get(k["round"], 0.0) + k["measured_cpu_s"]
    return {"curve": [x["token_accuracy"] for x in r["rounds"]], "exact": [x["exact_match"] for x in r["rounds"]],
            "client_train_cpu_s_median": statistics.median(k["measured_cpu_s"] for k in r["client_rounds"]),
            "round_train_cpu_s_median": statistics.median(per_round.values()),
            "initial": r["initial"], "final": r["final"], "budget_check": r["budget_check"], "lr": lr,
            "bytes_moved": r["bytes_moved"], "emulated_clock_s": r["emulated_clock_s"], "wall_s": r["wall_s"],
            "cpu_s": time.process_time() - t0,
            "devices": {c: {k: d[k] for k in ("measured_memory_bytes", "predicted_memory_bytes", "memory_error",
                                                "emulated_round_s", "predicted_round_s", "round_time_error")}
                        for c, d in r["devices"].items()}}


def start_of(art: Path) -> dict[str, float]:
    """The round-0 evaluation (downstream and probe) of an artifact's base model, shared by its configurations."""
    from runtime.fed_expand.app import evaluate, initial_state
    from runtime.fed_expand.model import read_config

    a = read_config(str(art.resolve()))
    return evaluate(a, str(art.resolve()), "blocks", initial_state(a, "blocks"))


def _line(seed: int, cfg: str, r: dict[str, Any], t0: float) -> str:
    i, f = r["initial"], r["final"]
    return (f"seed {seed} {cfg:18s} lr {r['lr']} acc {i['token_accuracy']:.3f} -> {f['token_accuracy']:.3f} (curve "
            f"{', '.join(f'{v:.3f}' for v in r['curve'])})  probe top10 {i['probe_top10_accuracy']:.4f} -> "
            f"{f['probe_top10_accuracy']:.4f} top1 {f['probe_accuracy']:.4f} agree {f['probe_agreement']:.3f}  "
            f"budget ok {r['budget_check']['all_within']}  cpu {r['cpu_s']:.0f} s ({time.perf_counter() - t0:.0f} s)")


def _grid(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def target_rule(start: float, curves: list[list[float]]) -> dict[str, Any]:
    """The downstream target's gain from the decision seed's curves (accuracy per round, round 0 first) of the tuned
    methods: a fraction of the best final gain, the first of 1/2, 3/4 that no method reached in round 1 (so the
    target is well above the start and a round count can tell the methods apart; 3/4 when neither is)."""
    best_gain = max(c[-1] for c in curves) - start
    first = max(c[1] for c in curves) - start
    frac = next((f for f in (0.5, 0.75) if f * best_gain > first), 0.75)
    return {"target_best_gain": best_gain, "target_fraction": frac, "target_points": 100 * frac * best_gain,
            "round1_best_gain": first, "target_above_round1": frac * best_gain > first}


def choose_lr(grid: list[float], sweep: dict[str, Any], rule: str, min_retention: float) -> float:
    """One method's rate from its decision-seed sweep. `accuracy`: best final held-out accuracy. `retention`: best
    final held-out accuracy among the rates whose probe retention is >= `min_retention` (share of the base); when no
    rate keeps that much, the rate with the highest retention. Ties go to the smaller rate."""
    if rule == "retention":
        ok = [lr for lr in grid if sweep[str(lr)]["retention_share_of_base"] >= min_retention]
        if not ok:
            return max(grid, key=lambda lr: (sweep[str(lr)]["retention_share_of_base"], -lr))
        grid = ok
    return max(grid, key=lambda lr: (sweep[str(lr)]["final_token_accuracy"], -lr))


def decide(args: argparse.Namespace, work: Path, t0: float) -> dict[str, Any]:
    """Everything chosen on the decision seed (never scored): each method's learning rate (best final held-out
    accuracy over its grid) and, with `--target decision`, the downstream target's gain."""
    art = plan_and_emit(work, args.model, args.data, args.decision_seed, args)
    start = start_of(art)
    sweeps: dict[str, dict[str, Any]] = {"plan": {}, "lora_fedavg": {}}
    grids = {"plan": _grid(args.fedbe_lrs), "lora_fedavg": _grid(args.lora_lrs)}
    for cfg in ("lora_fedavg", "plan"):
        if len(grids[cfg]) == 1 and args.target != "decision":
            continue              # nothing to choose
        for lr in grids[cfg]:
            r = run_config(art, cfg, args.rounds, lr, start)
            sweeps[cfg][str(lr)] = {"final_token_accuracy": r["final"]["token_accuracy"], "curve": r["curve"],
                                    "probe_top10_accuracy": r["final"]["probe_top10_accuracy"],
                                    "probe_accuracy": r["final"]["probe_accuracy"], "cpu_s": r["cpu_s"],
                                    "budget_ok": r["budget_check"]["all_within"]}
            print(_line(args.decision_seed, cfg, r, t0), flush=True)
    for cfg in sweeps:
        for v in sweeps[cfg].values():
            v["retention_share_of_base"] = v["probe_top10_accuracy"] / start["probe_top10_accuracy"]
    chosen = {cfg: (choose_lr(grids[cfg], sweeps[cfg], args.lr_rule, args.min_retention)
                    if sweeps[cfg] else grids[cfg][0]) for cfg in grids}
    out: dict[str, Any] = {"decision_seed": args.decision_seed, "sweeps": sweeps, "lr": chosen,
                           "lr_rule": args.lr_rule, "min_retention": args.min_retention,
                           "start_token_accuracy": start["token_accuracy"],
                           "start_probe_top10_accuracy": start["probe_top10_accuracy"]}
    if args.target == "decision":
        # Target gain: a fraction of the best final gain either tuned method reached on the decision seed, the
        # first of 1/2, 3/4 that neither method reached in round 1 there (so the target is well above the start
        # and a round count can tell the methods apart).
        out.update(target_rule(start["token_accuracy"], [sweeps[cfg][str(chosen[cfg])]["curve"] for cfg in grids]))
    else:
        out["target_points"] = args.target_points
    return out


def main(argv: list[str] | None = None) -> None:
    """Run everything, print the tables, write build/bench/fed_expand.json (--full-model: fed_expand_full.json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 seeds, 4 rounds, FedBE vs LoRA FedAvg only")
    ap.add_argument("--full-model", action="store_true",
                    help="the full 30-layer SmolLM2-135M: both methods' learning rates and the target chosen on the "
                         "decision seed; 3 seeds, 4 rounds x 2 local steps x batch 4, FedBE vs LoRA FedAvg")
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=None, help="default instruct:format+recall+sort+upper,total=400,test_per_task=8 "
                    "(--full-model: test_per_task=6)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--decision-seed", type=int, default=100, help="seed of the learning-rate sweeps (never scored)")
    ap.add_argument("--first-seed", type=int, default=0, help="scored seeds are first-seed .. first-seed+seeds-1")
    ap.add_argument("--lr-rule", choices=("accuracy", "retention"), default="accuracy",
                    help="accuracy: each method's rate with the best decision-seed accuracy; retention: the best "
                         "accuracy among rates keeping >= --min-retention of the base probe score (same rule for both)")
    ap.add_argument("--min-retention", type=float, default=0.98,
                    help="share of the base probe top-10 score a rate must keep under --lr-rule retention")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--local-steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="default 8 (--full-model: 4)")
    ap.add_argument("--seq-len", type=int, default=48)
    ap.add_argument("--added-blocks", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3,
                    help="the added blocks' learning rate when not swept (full FT: /10)")
    ap.add_argument("--fedbe-lrs", default=None, help="FedBE learning rates tried on the decision seed "
                    "(default: --lr only; --full-model: 1e-3,3e-3)")
    ap.add_argument("--lora-lrs", default=None, help="LoRA FedAvg learning rates tried on the decision seed "
                    "(default 1e-3,3e-3,1e-2,3e-2; --full-model: 3e-3,1e-2)")
    ap.add_argument("--target", choices=("start+points", "decision"), default=None,
                    help="start+points: start + --target-points; decision: start + a fraction of the best gain on "
                         "the decision seed (default for --full-model)")
    ap.add_argument("--target-points", type=float, default=10.0,
                    help="downstream target: the start accuracy plus this many points (fixed before the runs)")
    args = ap.parse_args(argv)
    full = args.full_model
    args.model = args.model or ("smollm2-135m" if full else "smollm2-135m:4L")
    args.clients = CLIENTS_FULL if full else CLIENTS
    seeds = args.seeds or (3 if args.quick or full else 5)
    args.rounds = args.rounds or (4 if args.quick or full else 10)
    args.local_steps = args.local_steps or (2 if full else 3)
    args.batch_size = args.batch_size or (4 if full else 8)
    args.data = args.data or f"instruct:format+recall+sort+upper,total=400,test_per_task={6 if full else 8}"
    args.fedbe_lrs = args.fedbe_lrs or ("1e-3,3e-3" if full else str(args.lr))
    args.lora_lrs = args.lora_lrs or ("3e-3,1e-2" if full else "1e-3,3e-3,1e-2,3e-2")
    args.target = args.target or ("decision" if full else "start+points")
    others = ["static_allocation", "fixed_expansion", "full_ft"]
    configs = ["plan", "lora_fedavg"] + ([] if args.quick or full else others)
    scored = range(args.first_seed, args.first_seed + seeds)
    if args.decision_seed in scored:
        raise SystemExit(f"--decision-seed {args.decision_seed} is a scored seed ({scored[0]}..{scored[-1]}); pick another")
    out_path = OUT.with_name("fed_expand_full.json") if full else OUT
    if args.lr_rule != "accuracy":
        out_path = out_path.with_name(f"{out_path.stem}_{args.lr_rule}.json")

    t0, c0 = time.perf_counter(), time.process_time()
    load0 = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    plans: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-fed-expand-") as tmp:
        work = Path(tmp) / "decision"
        work.mkdir()
        key = {k: (v if k != "clients" else json.dumps(v, sort_keys=True)) for k, v in vars(args).items()
               if k not in ("seeds", "quick", "first_seed")}
        cache = out_path.with_name(out_path.stem + "_decision.json")
        old = json.loads(cache.read_text()) if cache.exists() else {}
        if old.get("key") == key:
            decision = old["decision"]
            print(f"decision seed {args.decision_seed}: reusing {cache} (same settings)", flush=True)
        else:
            decision = decide(args, work, t0)
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(cache, json.dumps({"key": key, "decision": decision}, indent=1, default=float) + "\n")
        chosen = json.dumps({k: v for k, v in decision.items() if k != "sweeps"})
        print(f"chosen on decision seed {args.decision_seed}: {chosen}", flush=True)
        lr_plan, lora_lr = decision["lr"]["plan"], decision["lr"]["lora_fedavg"]
        lrs = {"plan": lr_plan, "lora_fedavg": lora_lr, "static_allocation": lr_plan, "fixed_expansion": lr_plan,
               "full_ft": lr_plan / 10}
        for seed in scored:
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
            start = start_of(art)
            for cfg in configs:           # interleaved per seed: every configuration sees the same load pattern
                r = run_config(art, cfg, args.rounds, lrs[cfg], start)
                results[cfg].append({"seed": seed, **r})
                print(_line(seed, cfg, r, t0), flush=True)
    timing = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
              "load_average_start": load0, "load_average_end": os.getloadavg()}
    return summarise(results, plans, configs, seeds, args, decision, timing, out_path)


def summarise(results: dict[str, list[dict[str, Any]]], plans: list[dict[str, Any]], configs: list[str], seeds: int,
              args: argparse.Namespace, decision: dict[str, Any], timing: dict[str, Any], out_path: Path) -> None:
    """Targets, per-configuration statistics and the summary; writes `out_path`."""
    targets = [r["initial"]["token_accuracy"] + decision["target_points"] / 100 for r in results["plan"]]
    base_top10 = statistics.mean(r["initial"]["probe_top10_accuracy"] for r in results["plan"])
    per: dict[str, Any] = {}
    for c in configs:
        rs = results[c]
        per[c] = {"final_token_accuracy": _stats([r["final"]["token_accuracy"] for r in rs]),
                  "final_exact_match": _stats([r["final"]["exact_match"] for r in rs]),
                  "probe_top10_accuracy": _stats([r["final"]["probe_top10_accuracy"] for r in rs]),
                  "probe_accuracy": _stats([r["final"]["probe_accuracy"] for r in rs]),
                  "probe_loss_nats": _stats([r["final"]["probe_loss_nats"] for r in rs]),
                  "probe_agreement": _stats([r["final"]["probe_agreement"] for r in rs]),
                  "retention_share_of_base": _stats([r["final"]["probe_top10_accuracy"] / r["initial"]["probe_top10_accuracy"]
                                                     for r in rs]),
                  "rounds_to_target": [rounds_to(r["curve"], t, args.rounds) for r, t in zip(rs, targets)],
                  "bytes_moved": _stats([r["bytes_moved"] for r in rs]),
                  "emulated_clock_s": _stats([r["emulated_clock_s"] for r in rs]),
                  "cpu_s": _stats([r["cpu_s"] for r in rs]),
                  "cpu_s_per_round": _stats([r["cpu_s"] / args.rounds for r in rs]),
                  "client_train_cpu_s_median": _stats([r["client_train_cpu_s_median"] for r in rs]),
                  "round_train_cpu_s_median": _stats([r["round_train_cpu_s_median"] for r in rs]),
                  "budget_violations": sum(len(r["budget_check"]["violations"]) for r in rs),
                  "client_rounds": sum(r["budget_check"]["client_rounds"] for r in rs)}
    fb, lo = results["plan"], results["lora_fedavg"]
    ret = [100 * (a["final"]["probe_top10_accuracy"] - b["final"]["probe_top10_accuracy"]) for a, b in zip(fb, lo)]
    top1 = [100 * (a["final"]["probe_accuracy"] - b["final"]["probe_accuracy"]) for a, b in zip(fb, lo)]
    agree = [100 * (a["final"]["probe_agreement"] - b["final"]["probe_agreement"]) for a, b in zip(fb, lo)]
    down = [100 * (a["final"]["token_accuracy"] - b["final"]["token_accuracy"]) for a, b in zip(fb, lo)]
    speed = [rounds_to(b["curve"], t, args.rounds) / max(1, rounds_to(a["curve"], t, args.rounds))
             for a, b, t in zip(fb, lo, targets)]
    extra: dict[str, Any] = {}
    if not args.quick:
        extra["identity_full_30_layers"] = full_model_identity(plans[0]["added_after"])
        extra["memory_time_model_check"] = model_check(args.model, args)
    summary = {
        "retention_points_vs_lora": _stats(ret)["mean"], "retention_points_vs_lora_spread": _stats(ret),
        "retention_share_of_base": {"fedbe": per["plan"]["retention_share_of_base"]["mean"],
                                    "lora_fedavg": per["lora_fedavg"]["retention_share_of_base"]["mean"]},
        "retention_probe": "top-10 next-token accuracy on held-out stdlib docstrings",
        "base_probe_top10_accuracy": base_top10,
        "probe_top1_points_vs_lora": _stats(top1)["mean"],
        "probe_agreement_points_vs_lora": _stats(agree)["mean"], "probe_agreement_points_vs_lora_spread": _stats(agree),
        "downstream_delta_vs_lora": _stats(down)["mean"], "downstream_delta_vs_lora_spread": _stats(down),
        "rounds_to_target_speedup_vs_lora": float(np.median(speed)), "rounds_to_target_speedup_per_seed": speed,
        "rounds_to_target_censored_at": args.rounds + 1,
        "seeds": seeds, "scored_seeds": [r["seed"] for r in fb], "lr_rule": args.lr_rule,
        "min_retention": args.min_retention, "decision_seed": args.decision_seed, "lora_lr_chosen": decision["lr"]["lora_fedavg"],
        "lora_lr_sweep": decision["sweeps"]["lora_fedavg"], "fedbe_lr": decision["lr"]["plan"],
        "fedbe_lr_sweep": decision["sweeps"]["plan"], "target_definition": args.target,
        "target_points": decision["target_points"], "target_token_accuracy_per_seed": targets,
        "retention_share_of_base_spread": {"fedbe": per["plan"]["retention_share_of_base"],
                                           "lora_fedavg": per["lora_fedavg"]["retention_share_of_base"]},
        "round_train_cpu_s_median": {"fedbe": per["plan"]["round_train_cpu_s_median"]["median"],
                                     "lora_fedavg": per["lora_fedavg"]["round_train_cpu_s_median"]["median"]},
        "model": args.model,
        "base_token_accuracy": statistics.mean(r["initial"]["token_accuracy"] for r in fb),
        "budget_violations_plan": per["plan"]["budget_violations"], "client_rounds_plan": per["plan"]["client_rounds"],
        "wall_s": timing["wall_s"], "cpu_s": timing["cpu_s"], "load_average_start": timing["load_average_start"],
        "load_average_end": timing["load_average_end"],
        "units": "points = percentage points (accuracy x 100); downstream = held-out answer-token accuracy "
                 "(teacher-forced); retention = probe top-10 next-token accuracy on held-out text",
    }
    out = {"summary": summary, "configs": per, "plans": plans, "runs": results, **extra, "decision": decision,
           "settings": {**vars(args), "seeds": seeds, "configs": configs},
           "machine": "shared 2-core CPU, loaded by other jobs (load averages in the summary; CPU seconds per process)"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_path, json.dumps(out, indent=1, sort_keys=True, default=float) + "\n")
    print(json.dumps(summary, indent=1, default=float))
    print(f"wrote {out_path} ({timing['wall_s']:.0f} s wall, {timing['cpu_s']:.0f} s CPU)")


if __name__ == "__main__":
    sys.exit(main())
