"""fed-compress benchmark: Caesar's plan vs every baseline on a test bed where compression matters, plus solver quality.

Part 1 (learning curves, 5 seeds): digits-cnn (38 k parameters) on scikit-learn digits split over 100
clients by Dirichlet(alpha = 0.1) (strongly non-IID); population `gen:100:SEED`; 5 clients per round
(participation 5 %), 100 rounds, 10 local SGD steps (lr 0.05); kept fractions down to
10 % on downloads and 1-10 % on uploads (Caesar's θ_d,max = 0.9, θ_u in [0.9, 0.99]). Uncompressed
training needs 50+ rounds to the target (0.80, on the trailing mean of 5 rounds). Every configuration
of a seed has the same population, split, participation schedule and initial model.

Accounting (docs/fed-compress.md, "Accounting"): every payload byte every device receives and sends,
both ways, from its first contact; nothing is installed before round 1, so a device's first download
is the dense model in every configuration. Traffic to target = payload bytes (measured: the lengths of
the serialised payload arrays) up to and including the first round whose trailing 5-round mean
accuracy reaches the target. Device compute and links are EMULATED (this CPU's thread time x FLOP/s
ratio; bytes / bandwidth): the emulated clock times stragglers (round time = slowest selected device).

The runs call Flower's apps in one process (`runtime/fed/compress_inprocess.py`: the strategy, the
client mod and the training handler with Flower's message types; no Ray, no gRPC): the same payloads,
codecs and aggregation as `planner run`, at a cost 2 shared cores can pay for 5 seeds x 7 configurations.

Decide on one sample, score on another: the decision seeds (100-102; quick 100-101) give each configuration's
median rounds to target, written as the convergence record build/bench/fed_compress_convergence.json (what
`planner plan --convergence` reads); on each held-out seed (0-4) the planner's rule (`phases.recommend`) picks
the configuration with the least predicted traffic to target from that record and the seed's predicted
schedules, and the row "recommended" scores that pick. The summary's `traffic_to_target_vs_*` keys are the
recommendation's; `caesar_rule_traffic_to_target_vs_*` are Caesar's rule's.

Part 2 (solver): one round with 10 000 selected devices (ratio rules + the cvxpy batch LP), batch
gaps (LP rounding, T* rule) to the exact sweep, and the budgeted-download greedy against CP-SAT on
200 random rounds.

    nice .venv/bin/python -m benchmarks.fed_compress          # writes build/bench/fed_compress.json
    nice .venv/bin/python -m benchmarks.fed_compress --quick  # 2 + 5 seeds, 3 configurations, 100 rounds
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np

from core.atomic_io import write_text_atomic

OUT = Path("build/bench")
SPEC_GRID = (8, 12, 16, 24, 32, 48, 64)   # Caesar's coarse batch grid (docs/fed-compress.md, "Departures")
DECIDE_SEEDS = (100, 101, 102)   # the decision sample: rounds to target per configuration (held-out seeds: 0..4)
QUICK_DECIDE_SEEDS = (100, 101)
CONFIGS = ("plan", "no_compression", "uniform_mean", "uniform_traffic", "bandwidth_proportional", "topk_ef", "fedpaq")
QUICK_CONFIGS = ("plan", "uniform_mean", "bandwidth_proportional")
BED = {"clients": 100, "participation": 0.05, "alpha": 0.1, "local_iters": 10, "lr": 0.05, "round_overhead_s": 0.05,
       "min_download_ratio": 0.1, "min_upload_ratio": 0.01, "max_upload_ratio": 0.1, "ratio_step": 0.01}
SMOOTH = 5          # rounds in the trailing mean that decides when a run reaches the target


# ---------------------------------------------------------------- part 1: learning curves
def plan_configs(seed: int, rounds: int, calibration: dict) -> tuple[dict, dict, dict]:
    """Lower and solve one seed: (plan decisions, {config: decisions}, {config: predicted}); each predicted
    carries the per-round traffic (`traffic_per_round`, B) and feasibility the recommendation reads."""
    from planner.families.fed_compress.lowering import FedCompressOptions, decisions_of, lower, predicted_of
    from planner.registry import resolve_hardware, resolve_model
    from profilers.population import parse_population
    from solvers.fed_compress import baselines, caesar
    from solvers.fed_compress.validate import validate

    spec = resolve_model("digits-cnn")
    pop = parse_population(f"gen:{BED['clients']}:{seed}", resolve_hardware)
    opts = FedCompressOptions(rounds=rounds, participation=BED["participation"], alpha=BED["alpha"], seed=seed,
                              lr=BED["lr"], local_iters=BED["local_iters"], round_overhead_s=BED["round_overhead_s"],
                              min_download_ratio=BED["min_download_ratio"], min_upload_ratio=BED["min_upload_ratio"],
                              max_upload_ratio=BED["max_upload_ratio"], ratio_step=BED["ratio_step"],
                              calibration=calibration)
    problem, clients, _ = lower(spec, pop, opts)
    cfg = opts.caesar_config()
    sol = caesar.solve(problem, cfg)
    sols = {"plan": sol}
    for b in baselines.baselines(cfg, sol):
        sols[b.name] = b.solve(problem)
    for name, s in sols.items():
        bad = validate(problem, s)
        if bad:
            raise RuntimeError(f"{name}: {bad[:3]}")
    decisions = decisions_of(problem, sol, clients, opts)
    configs = {name: (decisions if name == "plan" else decisions_of(problem, s, None, opts)) for name, s in sols.items()}
    predicted = {name: {**predicted_of(problem, s), "feasible": bool(s.feasible),
                        "traffic_per_round": [float(x) for x in s.metrics.traffic_bytes]} for name, s in sols.items()}
    return decisions, configs, predicted


def run_config(decisions: dict, config: dict, name: str, seed: int, cpu_flops: float, model_path: Path,
               target: float) -> dict:
    """One run through the Flower apps (in-process); returns the receipt's per-round series and totals."""
    from codegen.fed_compress import job_for
    from runtime.fed.compress_inprocess import run_in_process

    job = job_for(decisions, config, name, seed, cpu_flops)
    t0 = time.perf_counter()
    rec = run_in_process(job, model_path, target_accuracy=target)
    rounds = [r for r in rec.totals["rounds"] if r["round"] > 0]
    rows = [r for r in rec.rows if r["status"] == "ok"]
    return {"config": name, "seed": seed, "wall_s": time.perf_counter() - t0,
            "accuracy": [r["accuracy"] for r in rounds], "traffic": [r["traffic_payload_bytes"] for r in rounds],
            "round_time_s": [r["round_time_s_emulated"] for r in rounds],
            "keep_down_mean": [r["keep_down_mean"] for r in rounds], "keep_up_mean": [r["keep_up_mean"] for r in rounds],
            "final_accuracy": float(np.mean([r["accuracy"] for r in rounds][-SMOOTH:])),
            "total_payload_bytes": rec.totals["total_payload_bytes"],
            "total_predicted_bytes": rec.totals["total_predicted_bytes"],
            "dev_recovery_mean": float(np.mean([r["dev_recovery_estimate"] for r in rows if r["keep_down"] < 1.0] or [0.0])),
            "byte_flags": len([f for f in rec.flags if "B vs predicted" in f]), "mode": rec.totals["mode"]}


def cached_part(seeds: list[int], configs: tuple[str, ...], rounds: int, work: Path) -> dict:
    """Only the runs already cached under `work` (for a summary while other processes still run seeds)."""
    runs = [json.loads(c.read_text()) for seed in seeds for name in configs
            if (c := work / f"seed{seed}" / f"{name}.r{rounds}.json").exists()]
    return {"calibration": None, "runs": runs}


def learning_part(seeds: list[int], configs: tuple[str, ...], rounds: int, target: float, work: Path) -> dict:
    """Plan and run every configuration for every seed (each run cached under `work`)."""
    import torch

    from codegen.fed_compress import export_model
    from profilers.digits_cnn import DigitsCNN
    from profilers.training_timing import calibrate_training

    torch.set_num_threads(1)
    torch.manual_seed(0)
    calibration = calibrate_training(DigitsCNN(), torch.zeros(2, 1, 8, 8))
    runs = []
    for seed in seeds:
        caches = [work / f"seed{seed}" / f"{name}.r{rounds}.json" for name in configs]
        if all(c.exists() for c in caches):      # every run of this seed is done: no need to plan it again
            runs += [json.loads(c.read_text()) for c in caches]
            continue
        decisions, cfgs, predicted = plan_configs(seed, rounds, calibration)
        write_text_atomic(work / f"seed{seed}" / f"predicted.r{rounds}.json", json.dumps(predicted, sort_keys=True))
        torch.manual_seed(seed)
        model_path = export_model(DigitsCNN(), work / f"seed{seed}" / "digits-cnn.pt2", torch.zeros(2, 1, 8, 8))
        for name in configs:
            cache = work / f"seed{seed}" / f"{name}.r{rounds}.json"
            if cache.exists():
                runs.append(json.loads(cache.read_text()))
                continue
            r = run_config(decisions, cfgs[name], name, seed, calibration["cpu_flops_per_s"], model_path, target)
            r["predicted"] = predicted[name]
            write_text_atomic(cache, json.dumps(r, sort_keys=True) + "\n")
            runs.append(r)
            hit = to_target(r, target)
            print(f"  seed {seed} {name:24} final {r['final_accuracy']:.3f}  to-target round {hit[0]}  "
                  f"{(hit[1] or float('nan')) / 1e6:8.2f} MB  ({r['wall_s']:.0f} s)", flush=True)
    return {"calibration": calibration, "runs": runs}


def to_target(run: dict, target: float) -> tuple[int | None, float | None, float | None]:
    """(first round whose trailing SMOOTH-round mean accuracy reaches `target`, payload bytes moved until then,
    emulated seconds until then), or Nones."""
    moved = clock = 0.0
    acc = run["accuracy"]
    for t, traffic in enumerate(run["traffic"], start=1):
        moved += traffic
        clock += run.get("round_time_s", [0.0] * len(acc))[t - 1]
        if np.mean(acc[max(0, t - SMOOTH):t]) >= target:
            return t, moved, clock
    return None, None, None


def convergence_record(part: dict, seeds: list[int], configs: tuple[str, ...], target: float) -> dict:
    """Rounds to target per configuration, median over the decision seeds (a miss counts as never; a median that
    is a miss is null): what `planner plan --convergence` reads (planner/families/fed_compress/convergence_record.py)."""
    from planner.families.fed_compress.convergence_record import KIND

    rounds, reached = {}, {}
    for c in configs:
        hits = [to_target(r, target)[0] for r in part["runs"] if r["config"] == c and r["seed"] in seeds]
        if not hits:          # not run on the decision seeds: absent from the record (never recommended)
            continue
        vals = sorted(float("inf") if h is None else float(h) for h in hits)
        med = statistics.median(vals) if vals else float("inf")
        rounds[c] = med if np.isfinite(med) else None
        reached[c] = sum(h is not None for h in hits)
    return {"kind": KIND, "target_accuracy": target, "smooth_rounds": SMOOTH, "seeds": list(seeds),
            "test_bed": {**BED, "rounds": part.get("rounds")}, "rounds_to_target": rounds, "reached": reached}


def recommendations(seeds: list[int], rounds: int, work: Path, record: dict, configs: tuple[str, ...]) -> dict[int, str]:
    """Per held-out seed, the configuration the planner recommends (planner/families/fed_compress/phases.py
    `recommend`) from that seed's predicted per-round traffic and the decision seeds' record; only configurations
    the benchmark runs are candidates."""
    from planner.families.fed_compress.phases import recommend

    rec = {**record, "rounds_to_target": {c: (float("inf") if r is None else r)
                                          for c, r in record["rounds_to_target"].items()},
           "source": "the decision seeds"}
    out = {}
    calibration = None
    for seed in seeds:
        path = work / f"seed{seed}" / f"predicted.r{rounds}.json"
        if not path.exists():     # runs cached by an older version: plan the seed again (rule-mode bytes do not
            if calibration is None:  # depend on the step times, so any calibration gives the same traffic)
                import torch

                from profilers.digits_cnn import DigitsCNN
                from profilers.training_timing import calibrate_training

                torch.set_num_threads(1)
                calibration = calibrate_training(DigitsCNN(), torch.zeros(2, 1, 8, 8))
            write_text_atomic(path, json.dumps(plan_configs(seed, rounds, calibration)[2], sort_keys=True))
        pred = json.loads(path.read_text())
        traffic = {c: np.array(pred[c]["traffic_per_round"]) for c in configs}
        choice, _ = recommend(rounds, traffic, {c: pred[c]["feasible"] for c in configs}, rec)
        out[seed] = choice.recommended
    return out


def _spread(xs: list[float]) -> str:
    """'median [min-max]' of the finite values, or '-'."""
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    if not xs:
        return "-"
    return f"{statistics.median(xs):.3g} [{min(xs):.3g}-{max(xs):.3g}]"


def learning_table(part: dict, configs: tuple[str, ...], target: float, seeds: list[int],
                   chosen: dict[int, str] | None = None) -> tuple[str, dict]:
    """One row per configuration (median [min-max] over the held-out `seeds`), the row "recommended" (per seed,
    the configuration the planner recommends from the decision seeds' record, `chosen`), and the summary."""
    runs = [r for r in part["runs"] if r["seed"] in seeds]
    by = {c: {r["seed"]: r for r in runs if r["config"] == c} for c in configs}
    seeds = sorted(set(by["plan"]) & set(by["uniform_mean"]))   # seeds with both runs (partial summaries)
    if chosen:
        by["recommended"] = {s: by[chosen[s]][s] for s in seeds if s in chosen and s in by[chosen[s]]}
        configs = (*configs, "recommended")
    hits = {c: {s: to_target(r, target) for s, r in by[c].items()} for c in configs}
    lines = [f"target {target:.2f} (trailing {SMOOTH}-round mean); MB = 1e6 payload bytes both ways, first contact "
             "dense for all; ratio = bytes to target / uniform_mean's, per seed; median [min-max] over seeds; "
             "time EMULATED",
             f"{'config':23} {'reached':>7} {'rounds to target':>18} {'MB to target':>22} {'vs uniform':>20} "
             f"{'final acc':>20} {'emulated s to target':>22}"]
    ratio_to: dict[str, dict[str, list[float]]] = {}
    for c in configs:
        reached = [s for s in seeds if hits[c].get(s, (None,))[0] is not None]
        vs_u = [hits[c][s][1] / hits["uniform_mean"][s][1] for s in reached
                if hits["uniform_mean"].get(s, (None, None))[1]]
        ratio_to[c] = {"vs_uniform": vs_u}
        lines.append(f"{c:23} {len(reached):>3}/{len(by[c]):<3} {_spread([hits[c][s][0] for s in reached]):>18} "
                     f"{_spread([hits[c][s][1] / 1e6 for s in reached]):>22} {_spread(vs_u):>20} "
                     f"{_spread([r['final_accuracy'] for r in by[c].values()]):>20} "
                     f"{_spread([hits[c][s][2] for s in reached]):>22}")
    # plan / each baseline, per seed; a seed where the plan misses the target and the baseline reaches it counts inf
    def versus(mine_name: str) -> dict[str, float]:
        """median over seeds of mine / each baseline (bytes to target); a miss of mine where they reach is inf"""
        out = {}
        for c in configs:
            if c in ("plan", "recommended"):
                continue
            rs = []
            for s in seeds:
                mine, theirs = hits[mine_name].get(s, (None, None))[1], hits[c].get(s, (None, None))[1]
                if theirs is None or s not in hits[mine_name]:
                    continue
                rs.append(float("inf") if mine is None else mine / theirs)
            if rs:
                out[c] = statistics.median(rs)
        return out

    per_base = versus("plan")
    best = min(per_base, key=lambda k: -per_base[k]) if per_base else None   # the baseline the plan does worst against
    head = "recommended" if chosen else "plan"
    rec_base = versus(head)
    rec_best = min(rec_base, key=lambda k: -rec_base[k]) if rec_base else None
    summary = {
        "traffic_to_target_vs_uniform": rec_base.get("uniform_mean"),
        "traffic_to_target_vs_best_baseline": rec_base.get(rec_best) if rec_best else None,
        "best_baseline": rec_best,
        "summary_configuration": (f"the planner's recommendation per held-out seed (from the decision seeds' rounds to "
                                  f"target): {', '.join(f'{s}: {chosen[s]}' for s in sorted(chosen))}") if chosen
                                 else "Caesar's rule",
        "traffic_to_target_vs_each_baseline": rec_base,
        "caesar_rule_traffic_to_target_vs_uniform": per_base.get("uniform_mean"),
        "caesar_rule_traffic_to_target_vs_best_baseline": per_base.get(best) if best else None,
        "caesar_rule_traffic_to_target_vs_each_baseline": per_base,
        "caesar_rule_worst_against": best,
        "seeds": len(seeds),
        "rounds_to_target_uniform": statistics.median([hits["uniform_mean"][s][0] for s in seeds
                                                       if hits["uniform_mean"][s][0] is not None] or [float("nan")]),
        "rounds_to_target_uniform_range": [min((hits["uniform_mean"][s][0] or 10**9) for s in seeds),
                                           max((hits["uniform_mean"][s][0] or -1) for s in seeds)],
        "target_accuracy": target,
        "plan_reached": sum(hits["plan"][s][0] is not None for s in seeds),
        "uniform_reached": sum(hits["uniform_mean"][s][0] is not None for s in seeds),
    }
    lines.append(f"Caesar's rule (plan) / baseline bytes to target (median over seeds): "
                 + ", ".join(f"{k} {v:.3f}" for k, v in sorted(per_base.items())))
    if chosen:
        lines.append(f"recommended / baseline bytes to target (median over seeds): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in sorted(rec_base.items())))
    return "\n".join(lines), summary


# ---------------------------------------------------------------- part 2: solver
def synthetic_problem(n: int, seed: int, compute_factor: float = 1.0):
    """n devices from gen:n:seed with synthetic Dirichlet(0.3) label counts (digits has too few samples for 10 000).

    `compute_factor` multiplies the per-iteration time (digits-cnn's, calibrated on this CPU) to stand for a
    larger model, for which compute and communication are comparable and batch sizes matter.
    """
    from planner.registry import resolve_hardware
    from profilers.population import parse_population
    from solvers.fed_compress.problem import FedCompressProblem

    pop = parse_population(f"gen:{n}:{seed}", resolve_hardware)
    rng = np.random.default_rng(seed)
    counts = np.array([rng.multinomial(int(rng.integers(5, 200)), rng.dirichlet(np.full(10, 0.3))) for _ in range(n)])
    counts[counts.sum(1) == 0, 0] = 1
    flops = np.array([d.hardware.flops_per_s("fp32") for d in pop.devices])
    scale = 1.35e11 / flops               # this CPU's single-thread FLOP/s as measured once (calibration figure)
    last = rng.integers(0, 10, n)         # devices last synced in rounds 0..9; the planned round is 10
    return FedCompressProblem(
        client_ids=pop.ids, label_counts=counts, tensor_numels=(144, 16, 4608, 32, 32768, 64, 640, 10),
        iter_fixed_s=1.4e-3 * scale * compute_factor, iter_per_sample_s=4.4e-5 * scale * compute_factor,
        downlink_bytes_per_s=np.array([d.downlink_bits_per_s / 8 for d in pop.devices]),
        uplink_bytes_per_s=np.array([d.uplink_bits_per_s / 8 for d in pop.devices]),
        latency_s=np.full(n, 0.05), memory_bytes=np.array([d.memory_bytes for d in pop.devices], dtype=float),
        train_fixed_bytes=3 * 153128.0, train_bytes_per_sample=2 * 27176.0,
        selected=(tuple(range(n)),), batch_grid=tuple(range(8, 65)), local_iters=20), last


def solver_part() -> dict:
    """Solver time per round vs devices, batch gaps, budget greedy vs CP-SAT."""
    from solvers.fed_compress import caesar, exact
    from solvers.fed_compress.cost import comm_time_s, download_bytes, upload_bytes

    out: dict = {"timing": [], "batch_gaps": [], "budget": {}}
    for n in (100, 1000, 10_000):
        p, last = synthetic_problem(n, 0)
        idx = np.arange(n)
        for method in ("convex", "rule", "sweep"):
            cfg = caesar.CaesarConfig(batch_method=method)
            caesar.plan_round(p, cfg, 10, idx[:50], last)        # warm-up (imports, cvxpy compile path)
            t0 = time.perf_counter()
            plan = caesar.plan_round(p, cfg, 10, idx, last)
            out["timing"].append({"devices": n, "batch_method": method, "seconds": time.perf_counter() - t0,
                                  "samples_per_s": plan.samples_per_s, "lp_bound": plan.lp_samples_per_s})
    for seed in range(60):
        factor = 1.0 if seed < 20 else 100.0
        p, last = synthetic_problem(200, 100 + seed, factor)
        if seed >= 40:   # the spec's coarse batch grid, where rounding to the grid costs more
            p = dataclasses.replace(p, batch_grid=SPEC_GRID)
        idx = np.arange(200)
        kd = 1 - caesar.download_thetas(10, 10 - last, caesar.CaesarConfig())
        bd = np.array([download_bytes(p.tensor_numels, k) for k in kd], dtype=float)
        bu = np.full(200, float(upload_bytes(p.tensor_numels, 0.7)))
        fixed = comm_time_s(p, idx, bd, bu)
        cap = caesar.batch_caps(p, idx, caesar.CaesarConfig())
        best = exact.samples_per_s(p, idx, fixed, exact.sweep_batches(p, idx, fixed, cap))
        conv, _, bound = caesar.convex_batches(p, idx, fixed, cap)
        rule = exact.samples_per_s(p, idx, fixed, caesar.rule_batches(p, idx, fixed, cap))
        out["batch_gaps"].append({"compute_factor": factor, "grid": "spec" if seed >= 40 else "integer", "convex_gap": 1 - exact.samples_per_s(p, idx, fixed, conv) / best,
                                  "rule_gap": 1 - rule / best, "lp_over_exact": bound / best - 1})
    gaps = []
    rng = np.random.default_rng(7)
    ref = exact.BudgetCpSat()
    cfg = caesar.CaesarConfig()
    thetas = caesar.theta_grid(cfg)
    numels = (144, 16, 4608, 32, 32768, 64, 640, 10)
    tb = np.array([download_bytes(numels, 1 - th) for th in thetas], dtype=float)
    from solvers.fed_compress.problem import DownloadBudgetProblem

    t_greedy = t_ref = 0.0
    for _ in range(200):
        n = int(rng.integers(3, 40))
        dev = rng.uniform(0.01, 1.0, n)[:, None] * (thetas[None, :] / thetas[-1]) ** rng.uniform(1.0, 3.0, n)[:, None]
        forced = rng.random(n) < 0.2
        lo, hi = float(np.where(forced, tb[0], tb[-1]).sum()), float(tb[0] * n)
        bp = DownloadBudgetProblem(thetas, tb, dev, forced, lo + rng.uniform(0.05, 0.9) * (hi - lo))
        t0 = time.perf_counter()
        g = caesar.greedy_budget(bp)
        t_greedy += time.perf_counter() - t0
        t0 = time.perf_counter()
        o = ref.solve(bp, 20.0)
        t_ref += time.perf_counter() - t0
        gaps.append((g.objective - o.objective) / max(o.objective, 1e-12))
    out["budget"] = {"instances": 200, "max_gap": float(max(gaps)), "mean_gap": float(np.mean(gaps)),
                     "within_2pct": int(sum(g <= 0.02 for g in gaps)), "greedy_s": t_greedy, "cpsat_s": t_ref}
    return out


def solver_table(s: dict) -> str:
    """Solver time per round and gaps."""
    lines = [f"{'devices':>8} {'batch method':>13} {'seconds/round':>14} {'samples/s':>12} {'LP bound':>12}"]
    for t in s["timing"]:
        lp = f"{t['lp_bound']:12.0f}" if t["lp_bound"] else f"{'-':>12}"
        lines.append(f"{t['devices']:8d} {t['batch_method']:>13} {t['seconds']:14.3f} {t['samples_per_s']:12.0f} {lp}")
    for factor, grid in ((1.0, "integer"), (100.0, "integer"), (100.0, "spec")):
        g = [x for x in s["batch_gaps"] if x["compute_factor"] == factor and x.get("grid", "integer") == grid]
        lines.append(f"batch gap to the exact sweep, 20 rounds of 200 devices, compute x{factor:g}, {grid} grid: "
                     "convex+rounding max "
                     f"{max(x['convex_gap'] for x in g) * 100:.2f}% mean {np.mean([x['convex_gap'] for x in g]) * 100:.2f}%; "
                     f"T* rule max {max(x['rule_gap'] for x in g) * 100:.2f}% mean {np.mean([x['rule_gap'] for x in g]) * 100:.2f}%; "
                     f"LP bound above exact by at most {max(x['lp_over_exact'] for x in g) * 100:.2f}%")
    b = s["budget"]
    lines.append(f"budgeted download, greedy vs CP-SAT on {b['instances']} rounds of 3-39 devices: max gap "
                 f"{b['max_gap'] * 100:.2f}%, mean {b['mean_gap'] * 100:.3f}%, within 2%: {b['within_2pct']}/{b['instances']} "
                 f"(greedy {b['greedy_s']:.2f} s total, CP-SAT {b['cpsat_s']:.2f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run both parts, print the tables, write build/bench/fed_compress.json (summary included)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 held-out + 2 decision seeds, 3 configurations (plan, "
                    "uniform_mean, bandwidth_proportional), no solver part")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--only-seeds", type=int, nargs="+", help="run just these seeds (to spread seeds over processes; "
                    "a last call without it reads every cached run and writes the summary)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per run (default 100)")
    ap.add_argument("--target", type=float, default=0.80)
    ap.add_argument("--skip-learning", action="store_true")
    ap.add_argument("--cached-only", action="store_true", help="summarise the runs already cached, run nothing")
    ap.add_argument("--only-configs", nargs="+", help="run just these configurations (with --only-seeds)")
    ap.add_argument("--decide-seeds", type=int, nargs="+", help="the decision sample (default 100 101 102; quick "
                    "100 101): their rounds to target per configuration make the record the planner recommends from")
    args = ap.parse_args(argv)
    seeds = list(args.only_seeds) if args.only_seeds else list(range(args.seeds))
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    rounds = args.rounds or 100
    OUT.mkdir(parents=True, exist_ok=True)
    result: dict = {"target_accuracy": args.target, "rounds": rounds, "seeds": seeds, "test_bed": BED}
    t0 = time.perf_counter()
    if not args.quick:
        result["solver"] = solver_part()
        print(solver_table(result["solver"]), flush=True)
    if not args.skip_learning:
        work = OUT / "fed_compress_runs"
        decide = list(args.decide_seeds or (QUICK_DECIDE_SEEDS if args.quick else DECIDE_SEEDS))
        if args.only_configs:
            learning_part(seeds, tuple(args.only_configs), rounds, args.target, work)
            return
        every = decide + [s for s in seeds if s not in decide]
        part = (cached_part(every, configs, rounds, work) if args.cached_only
                else learning_part(every, configs, rounds, args.target, work))
        part["rounds"] = rounds
        result["learning"] = part
        record = convergence_record(part, decide, configs, args.target)
        write_text_atomic(OUT / "fed_compress_convergence.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
        result["convergence_record"] = record
        print("decision seeds", decide, "rounds to target:", json.dumps(record["rounds_to_target"], sort_keys=True))
        chosen = recommendations(seeds, rounds, work, record, configs)
        result["recommended"] = chosen
        text, result["summary"] = learning_table(part, configs, args.target, seeds, chosen)
        result["summary"]["decision_seeds"] = decide
        print(text)
        print("summary:", json.dumps(result["summary"], sort_keys=True))
    result["wall_s"] = time.perf_counter() - t0
    write_text_atomic(OUT / ("fed_compress_quick.json" if args.quick else "fed_compress.json"),
                      json.dumps(result, indent=1, sort_keys=True, default=float) + "\n")


if __name__ == "__main__":
    main()
