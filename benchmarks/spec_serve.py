"""spec-serve benchmark: CoSine's plan vs target-only, single-drafter speculation (on the verifier and replicated on
every node), and CoSine's ablations on SmolLM2-135M, on held-out requests of the `mix:code,chat,math` workload,
same nodes, same requests.

1. Plan (`planner plan smollm2-135m --scenario spec-serve --recalibrate`): the calibration (acceptance, draft
   times, the batched verifier's (B, T) grid) is measured in THIS run, at this run's load, on its own seed.
2. Held-out requests (another seed), routed by MiniLM nearest centroid, served by the engine
   (runtime/spec_serve/engine.py; every batch verified in one forward) under the plan and under every engine
   baseline: target-only (batched) on the verifier and replicated on every node (equal node count, a standard
   router), the co-located prompt lookup (batched) on the verifier and replicated, CoSine's own configuration, and
   the ablations no-routing, no-fusion, no-pipelining, fixed-gamma. Every draft and verification runs for real; the
   clock is EMULATED (thread CPU seconds x node scale, links delay + bytes/rate), the same for every configuration.
   When the plan's configuration is one of those baselines, the plan's runs are that baseline's (`plan_alias`).
3. transformers' own assisted generation on the verifier, one request at a time (first come first served), with
   prompt lookup (`prompt_lookup_num_tokens=`) and (not under --quick unless --hf-assisted) with the best distilled
   drafter (`assistant_model=`, its adaptive `num_assistant_tokens_schedule="heuristic"`); thread CPU seconds x
   the verifier's scale.
4. The same again at each arrival rate of `--arrival` (default 10 and 2 requests/s; --quick: 10), from the same
   run's calibration.
5. The batch LP + rounding vs the exact CP-SAT ILP on batches built from the plan's calibrated constants.

Every configuration runs `--reps` times interleaved (order rotated per repetition): ratios are medians of
per-repetition ratios with min/max. Summary keys: goodput_ratio_vs_best_single_drafter,
latency_p50_ratio_vs_best_single_drafter (the plan / the best single drafter: transformers' own, the engine's
batched prompt lookup, or the same replicated on every node; < 1 is lower latency; `..._one_node` without the
replicas), goodput_ratio_vs_target_only_replicas (equal node count), greedy_identical (every configuration's
tokens equal target-only's on every request, every setting), tokens_per_verify_error (measured / predicted - 1 for
the plan), and per configuration the goodput, tokens-per-verification and p50 prediction errors (`by_config`);
`online` (and `online_<rate>`) hold the same per arrival rate. Writes build/bench/spec_serve.json. `--quick`: 6
requests of 24 tokens, local transport, offline and 10 requests/s, no ablations (`--ablations`), no neural
transformers assisted generation (`--hf-assisted`); models are built once per process and reused.
Drafters: the distilled domain drafters (benchmarks/spec_serve_drafters.py builds them) and prompt lookup.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # run as `python benchmarks/spec_serve.py` from the repo root
    sys.path.insert(0, str(ROOT))

from core.atomic_io import write_text_atomic  # noqa: E402
from planner.cli import main as cli  # noqa: E402
from planner.families.spec_serve.artifact import build_requests, serve  # noqa: E402
from solvers.spec_serve.batch import select_exact, select_lp  # noqa: E402

log = logging.getLogger("bench.spec_serve")

NODES = {"nodes": [{"name": "hub", "hardware": "jetson_agx_orin_32gb", "role": "verifier"},
                   {"name": "edge1", "hardware": "jetson_orin_nano_8gb", "role": "drafter"},
                   {"name": "edge2", "hardware": "jetson_orin_nano_8gb", "role": "drafter"},
                   {"name": "edge3", "hardware": "jetson_orin_nano_8gb", "role": "drafter"}],
         "links": [{"between": ["hub", f"edge{i}"], "rate": "1gbps", "delay": "1ms"} for i in (1, 2, 3)]}
ABLATIONS = ("no-routing", "no-fusion", "no-pipelining", "fixed-gamma")
DRAFTERS = "dist2-code,dist2-chat,dist2-math,ngram"     # distilled domain drafters + prompt lookup
# the online settings' arrival rates. 10 requests/s was fixed before any run of the batched engine as a low-load
# regime (a request alone takes ~0.07 s emulated target-only, so they mostly do not overlap), the complement of
# the offline setting where all requests wait at once. 2 requests/s was added in the next session (chosen before
# any run at it, from the brief's "1-2 rps"): requests arrive ~0.5 s apart, so batching has almost nothing to batch.
ARRIVALS = ("10rps", "2rps")


def assisted(cfg: dict[str, Any], requests: list[Any], drafter: str, loaded: dict[str, Any]) -> dict[str, Any]:
    """transformers' assisted generation (or prompt lookup) on the verifier, one request at a time (models built
    once per benchmark process: `loaded`; the schedule's state is reset below on every call)."""
    import torch

    from runtime.spec_serve.nodes import loaded_model

    target = loaded_model(loaded, cfg["model"])
    kw: dict[str, Any] = {}
    if drafter == "prompt-lookup":
        kw["prompt_lookup_num_tokens"] = 4
    else:
        helper = loaded_model(loaded, cfg["model"], cfg["drafters"][drafter])
        # transformers' adaptive schedule (its default is a constant 20 tokens): +2 after a fully accepted draft,
        # -1 otherwise, from 5 tokens (the standard single-drafter setting users run)
        helper.generation_config.num_assistant_tokens = 5
        helper.generation_config.num_assistant_tokens_schedule = "heuristic"
        kw["assistant_model"] = helper
    scale = float(cfg["configs"]["plan"]["verifier"]["scale"])
    t, rows = 0.0, []
    start = min(r.arrival_s for r in requests)
    for r in sorted(requests, key=lambda x: (x.arrival_s, x.rid)):     # one server, first come first served
        ids = torch.tensor([r.ids])
        t0 = time.thread_time()
        with torch.no_grad():
            out = target.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_new_tokens=r.max_new_tokens, pad_token_id=2, **kw)
        cpu = time.thread_time() - t0
        toks = out[0, len(r.ids):].tolist()
        t = max(t, r.arrival_s) + cpu * scale
        rows.append({"rid": r.rid, "latency_s": t - r.arrival_s, "tokens": len(toks), "out": toks})
    rows.sort(key=lambda x: int(x["rid"][1:]))
    tokens = sum(x["tokens"] for x in rows)
    lat = sorted(x["latency_s"] for x in rows)
    return {"goodput_tps": tokens / (t - start), "latency_p50_s": _pct(lat, 50), "latency_p95_s": _pct(lat, 95),
            "rows": rows, "makespan_s": t - start}


def _pct(xs: list[float], q: float) -> float:
    """The engine's percentile rule (runtime/spec_serve/engine.py), so every configuration is read alike."""
    import math

    s = sorted(xs)
    return float(s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))])


def lp_gap(cfg: dict[str, Any], n_instances: int, seed: int = 0) -> dict[str, float]:
    """LP + rounding vs CP-SAT on batches of 4-12 requests with the plan's calibrated E[n] and verify costs."""
    rng = np.random.default_rng(seed)
    c = cfg["configs"]["plan"]
    a, b = c["verify_cpu_s"]
    scale = float(c["verifier"]["scale"])
    tables = [t for t in c["expected_tokens"].values() if t] or [{"1": 1.5}]
    gaps = []
    for _ in range(n_instances):
        n = int(rng.integers(4, 13))
        g = rng.integers(1, 7, n)
        tab = [tables[int(rng.integers(len(tables)))] for _ in range(n)]
        v = np.array([float(t.get(str(int(x)), 1.0)) for t, x in zip(tab, g)]) * rng.uniform(1.0, 1.3, n)
        cost = (a + b * (g + 1)) * scale
        k = (g + 1).astype(float)
        budget = float(cost.sum() * rng.uniform(0.3, 0.7))
        lp, ex = select_lp(v, cost, k, budget, 256), select_exact(v, cost, k, budget, 256)
        gaps.append(1 - lp.objective / ex.objective)
    return {"mean": float(np.mean(gaps)), "max": float(np.max(gaps)), "instances": n_instances}


def plan_setting(work: Path, n_req: int, new_tokens: int, drafters: str, arrival: str, tiny: bool,
                 recalibrate: bool, tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Plan and emit one setting (offline or an arrival rate); (plan, runtime config)."""
    plan_path, art = work / f"spec-{tag}.json", work / f"art-{tag}"
    rc = cli(["plan", "smollm2-135m", "--scenario", "spec-serve", "--nodes", str(work / "nodes.yaml"),
              "--workload", f"mix:code,chat,math:{n_req}", "--new-tokens", str(new_tokens), "--calibration-prompts", "3",
              "--drafters", drafters, "--arrival", arrival, "-o", str(plan_path), "-q"]
             + (["--tiny"] if tiny else []) + (["--recalibrate"] if recalibrate else []))
    if rc != 0:
        raise SystemExit(f"planning failed (exit {rc})")
    assert cli(["emit", str(plan_path), "-o", str(art)]) == 0
    return json.loads(plan_path.read_text()), yaml.safe_load((art / "runtime.yaml").read_text())


def run_setting(plan: dict[str, Any], cfg: dict[str, Any], n_req: int, reps: int, quick: bool, transport: str,
                ablations: bool, loaded: dict[str, Any], hf_assisted: bool = True,
                only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Serve the held-out requests under every configuration, interleaved (order rotated per repetition).

    The plan's configuration is one of its candidates (target-only, a single drafter, their replicas, or
    CoSine's); when it is a baseline that runs here on the same transport, the plan's runs ARE that baseline's
    runs (the same configuration record served again would only add noise and minutes), and `plan_alias` says so.
    """
    template, routing_acc = build_requests(cfg, n_req, log.info)
    chosen = plan["decisions"]["configuration"]
    cos = "plan" if chosen == "cosine" else "cosine"
    ee = [d for d in cfg["drafters"] if d != "ngram"]
    if quick and ee:      # the neural drafter with the best measured acceptance (mean over domains)
        acc = plan["decisions"]["acceptance"]
        ee = [max(ee, key=lambda d: (sum(acc[d].values()), d))]
    # target-only on the verifier and replicated on every node (equal node count), CoSine's own configuration,
    # the engine's batched co-located prompt lookup on the verifier and replicated, and transformers' own
    # single-drafter generation (one request at a time, first come first served)
    engine = ["target-only", "replicas-target-only"] + ([cos] if cos != "plan" else []) + \
        ["assisted-ngram", "replicas-assisted-ngram"]
    engine = [n for n in engine if n in cfg["configs"] or n == cos]
    alias = chosen if chosen in engine and transport == "local" else None
    engine = ([] if alias else ["plan"]) + engine
    # transformers' assisted generation with a neural drafter: left out under --quick unless --hf-assisted (it was
    # the slowest single drafter in goodput and p50 in every run of the last two sessions and this one's first,
    # and the most CPU per run: 19 of 78 CPU s per offline repetition); transformers' prompt lookup always runs
    singles = ([f"hf-assisted-{d}" for d in ee] if hf_assisted else []) + ["hf-prompt-lookup"]
    if only:     # --configs: a subset of the baselines (the plan, CoSine's own and target-only always run)
        engine = [n for n in engine if n in only or n in ("plan", cos, "target-only")]
        singles = [n for n in singles if n in only]
    order = engine + singles + (list(ABLATIONS) if ablations else [])
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in order}

    def one(name: str) -> dict[str, Any]:
        t0, c0 = time.perf_counter(), time.process_time()
        load = os.getloadavg()[0]
        if name.startswith("hf-"):
            res = assisted(cfg, copy.deepcopy(template), name[len("hf-"):].replace("assisted-", "", 1), loaded)
        else:
            tr = transport if name == "plan" else "local"
            res = serve(cfg, name, copy.deepcopy(template), tr, {}, log.info, loaded=loaded)
            res["transport"] = tr
        res["wall_s"] = time.perf_counter() - t0
        res["cpu_s"] = time.process_time() - c0
        res["load"] = load
        log.info("%s: goodput %.1f tok/s, p50 %.3f s (emulated), wall %.0f s, CPU %.0f s, load %.1f", name,
                 res["goodput_tps"], res["latency_p50_s"], res["wall_s"], res["cpu_s"], load)
        return res

    for rep in range(max(1, reps)):
        k = rep % len(order)
        for name in order[k:] + order[:k]:
            log.info("rep %d: %s", rep, name)
            runs[name].append(one(name))
    if alias:
        runs["plan"] = runs[alias]
        engine = ["plan"] + engine
    return {"runs": runs, "engine": engine, "singles": singles, "cos": cos, "chosen": chosen,
            "routing_accuracy": routing_acc, "plan_alias": alias}


def summarise(plan: dict[str, Any], st: dict[str, Any]) -> dict[str, Any]:
    """Ratios (medians of per-repetition ratios, with min and max), prediction errors per configuration."""
    runs, cos, chosen = st["runs"], st["cos"], st["chosen"]
    ref = [r["out"] for r in runs["target-only"][0]["rows"]]
    identical = {k: all([r["out"] for r in x["rows"]] == ref for x in v) for k, v in runs.items()}
    # the best single drafter: transformers' own (one request at a time), the engine's batched prompt lookup on
    # the verifier, or the same replicated on every node (equal node count: CoSine uses every node too)
    one_node = st["singles"] + [n for n in st["engine"] if n.startswith("assisted-")]
    singles = one_node + [n for n in st["engine"] if n.startswith("replicas-assisted-")]

    def best_of(names: list[str], key: str, sign: float) -> str:
        return max(names, key=lambda k: sign * float(np.median([x[key] for x in runs[k]])))

    best_single, best_single_lat = best_of(singles, "goodput_tps", 1.0), best_of(singles, "latency_p50_s", -1.0)
    best_one, best_one_lat = best_of(one_node, "goodput_tps", 1.0), best_of(one_node, "latency_p50_s", -1.0)

    def ratios(a: str, b: str, key: str) -> dict[str, Any]:
        r = [x[key] / y[key] for x, y in zip(runs[a], runs[b])]
        return {"median": float(np.median(r)), "min": float(min(r)), "max": float(max(r)), "reps": len(r),
                "values": r}

    def med(name: str, key: str) -> float:
        return float(np.median([x[key] for x in runs[name]]))

    def spread(name: str, key: str) -> list[float]:
        v = [x[key] for x in runs[name]]
        return [float(np.median(v)), float(min(v)), float(max(v))]

    def pred_of(k: str) -> dict[str, Any]:
        return plan["predicted"] if k == "plan" else plan["baselines"][k]["predicted"]

    engine_cfgs = [k for k in runs if not k.startswith("hf-")]
    by_config = {k: {"goodput_tps": spread(k, "goodput_tps"), "goodput_predicted": pred_of(k)["goodput_tps"],
                     "goodput_error": med(k, "goodput_tps") / pred_of(k)["goodput_tps"] - 1.0,
                     "tokens_per_verify": spread(k, "tokens_per_verify"),
                     "tokens_per_verify_predicted": pred_of(k)["tokens_per_verify"],
                     "tokens_per_verify_error": med(k, "tokens_per_verify") / pred_of(k)["tokens_per_verify"] - 1.0,
                     "latency_p50_s": spread(k, "latency_p50_s"), "latency_p50_predicted": pred_of(k)["latency_p50_s"],
                     "latency_p50_error": med(k, "latency_p50_s") / pred_of(k)["latency_p50_s"] - 1.0,
                     "verifier_idle": med(k, "verifier_idle"), "mean_batch": med(k, "mean_batch")}
                 for k in engine_cfgs}
    by_config.update({k: {"goodput_tps": spread(k, "goodput_tps"), "latency_p50_s": spread(k, "latency_p50_s")}
                      for k in runs if k.startswith("hf-")})
    pred = plan["predicted"]
    cos_pred = pred_of(cos)
    out = {
        "goodput_ratio_vs_best_single_drafter": ratios("plan", best_single, "goodput_tps")["median"],
        "latency_p50_ratio_vs_best_single_drafter": ratios("plan", best_single_lat, "latency_p50_s")["median"],
        "goodput_ratio_vs_best_single_drafter_spread": ratios("plan", best_single, "goodput_tps"),
        "latency_p50_ratio_vs_best_single_drafter_spread": ratios("plan", best_single_lat, "latency_p50_s"),
        "best_single_drafter": best_single, "best_single_drafter_by_latency": best_single_lat,
        "plan_configuration": chosen, "plan_recommendation": plan["decisions"]["recommendation"]["why"],
        "greedy_identical": all(identical.values()),
        "tokens_per_verify_error": med("plan", "tokens_per_verify") / pred["tokens_per_verify"] - 1.0,
        "goodput_error_vs_plan_prediction": med("plan", "goodput_tps") / pred["goodput_tps"] - 1.0,
        "by_config": by_config,
        "cosine_goodput_ratio_vs_best_single_drafter": ratios(cos, best_single, "goodput_tps"),
        "cosine_latency_p50_ratio_vs_best_single_drafter": ratios(cos, best_single_lat, "latency_p50_s"),
        "cosine_goodput_ratio_vs_target_only": ratios(cos, "target-only", "goodput_tps"),
        "cosine_latency_p50_ratio_vs_target_only": ratios(cos, "target-only", "latency_p50_s"),
        "cosine_goodput_error_vs_prediction": med(cos, "goodput_tps") / cos_pred["goodput_tps"] - 1.0,
        "cosine_tokens_per_verify_error": med(cos, "tokens_per_verify") / cos_pred["tokens_per_verify"] - 1.0,
        "goodput_ratio_vs_target_only": ratios("plan", "target-only", "goodput_tps"),
        # the single-drafter references on the verifier alone (the previous sessions' definition)
        "best_single_drafter_one_node": best_one, "best_single_drafter_one_node_by_latency": best_one_lat,
        "goodput_ratio_vs_best_single_drafter_one_node": ratios("plan", best_one, "goodput_tps"),
        "latency_p50_ratio_vs_best_single_drafter_one_node": ratios("plan", best_one_lat, "latency_p50_s"),
        "plan_alias": st["plan_alias"],
        "identical_to_target_only": identical, "routing_accuracy": st["routing_accuracy"],
        "load_during_runs": [min(x["load"] for v in runs.values() for x in v),
                             max(x["load"] for v in runs.values() for x in v)],
    }
    if "replicas-target-only" in runs:
        # equal node count: target-only replicated on every node, split by a standard router
        out["goodput_ratio_vs_target_only_replicas"] = ratios("plan", "replicas-target-only", "goodput_tps")
        out["latency_p50_ratio_vs_target_only_replicas"] = ratios("plan", "replicas-target-only", "latency_p50_s")
        out["cosine_goodput_ratio_vs_target_only_replicas"] = ratios(cos, "replicas-target-only", "goodput_tps")
        out["cosine_latency_p50_ratio_vs_target_only_replicas"] = ratios(cos, "replicas-target-only", "latency_p50_s")
    # every baseline served here, measured: plan / baseline goodput and p50 (medians of per-repetition ratios)
    out["plan_vs_each_baseline"] = {k: {"goodput": ratios("plan", k, "goodput_tps")["median"],
                                        "latency_p50": ratios("plan", k, "latency_p50_s")["median"]}
                                    for k in runs if k != "plan" and k not in ABLATIONS}
    if all(a in runs for a in ABLATIONS):
        out["verifier_idle"] = med(cos, "verifier_idle")
        out["verifier_idle_no_pipelining"] = med("no-pipelining", "verifier_idle")
        out["idle_below_non_pipelined"] = med(cos, "verifier_idle") < med("no-pipelining", "verifier_idle")
        out["ablation_goodput_ratio"] = {k: ratios(cos, k, "goodput_tps") for k in ABLATIONS}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--transport", choices=("local", "ray"), default=None)
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of every configuration")
    ap.add_argument("--drafters", default=DRAFTERS)
    ap.add_argument("--arrival", default=None,
                    help="the online settings' arrival rates, comma-separated ('none': offline only; default "
                         f"{','.join(ARRIVALS)}, under --quick {ARRIVALS[0]})")
    ap.add_argument("--cached-calibration", action="store_true",
                    help="plan from a cached calibration (default: calibrate again in this run, at this load)")
    ap.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=None,
                    help="run CoSine's ablations in the repetitions (default: yes, except under --quick, where "
                         "they took 14 of 27 minutes)")
    ap.add_argument("--hf-assisted", action=argparse.BooleanOptionalAction, default=None,
                    help="run transformers' assisted generation with the best neural drafter (default: yes, except "
                         "under --quick)")
    ap.add_argument("--configs", default=None,
                    help="comma-separated baselines to serve (default: all; the plan, CoSine's own configuration and "
                         "target-only always run), e.g. for an ablation-only run")
    ap.add_argument("--tiny", action="store_true", help="smoke run on the tiny random model (figures meaningless)")
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "spec_serve.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    n_req = args.requests or (6 if args.quick else 24)
    new_tokens = args.new_tokens or (24 if args.quick else 32)
    cpu0 = time.process_time()
    transport = args.transport or ("local" if args.quick else "ray")
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="spec_serve_bench_"))
    (work / "nodes.yaml").write_text(yaml.safe_dump(NODES))
    load_cal = os.getloadavg()[0]
    t0 = time.perf_counter()
    plan, cfg = plan_setting(work, n_req, new_tokens, args.drafters, "offline", args.tiny,
                             not args.cached_calibration, "offline")
    cal_wall = time.perf_counter() - t0
    log.info("offline plan: %s (calibration %s, %.0f s, load %.1f)", plan["decisions"]["configuration"],
             "cached" if args.cached_calibration else "measured now", cal_wall, load_cal)
    ablations = (not args.quick) if args.ablations is None else args.ablations
    loaded: dict[str, Any] = {}          # models built once in this process, reused by every local run
    t_set = time.perf_counter()
    hf_assisted = (not args.quick) if args.hf_assisted is None else args.hf_assisted
    only = tuple(x.strip() for x in (args.configs or "").split(",") if x.strip())
    off = run_setting(plan, cfg, n_req, args.reps, args.quick, transport, ablations, loaded, hf_assisted, only)
    summary = summarise(plan, off)
    summary["offline_wall_s"] = time.perf_counter() - t_set
    settings = {"offline": {"plan": plan, "state": off}}
    arrival = args.arrival or (ARRIVALS[0] if args.quick else ",".join(ARRIVALS))
    rates = [] if arrival == "none" else [a.strip() for a in arrival.split(",") if a.strip()]
    for i, rate in enumerate(rates):
        # the same run's calibration (read back from the cache it just wrote): only the arrival rate differs
        t_set = time.perf_counter()
        plan_on, cfg_on = plan_setting(work, n_req, new_tokens, args.drafters, rate, args.tiny, False, f"online-{rate}")
        on = run_setting(plan_on, cfg_on, n_req, args.reps, args.quick, transport, False, loaded, hf_assisted, only)
        key = "online" if i == 0 else f"online_{rate}"
        summary[key] = {"arrival": rate, **summarise(plan_on, on), "wall_s": time.perf_counter() - t_set}
        settings[key] = {"plan": plan_on, "state": on}
        summary["greedy_identical"] = summary["greedy_identical"] and summary[key]["greedy_identical"]
    summary.update({
        "lp_gap_vs_exact_ilp": lp_gap(cfg, 30 if args.quick else 100),
        "calibration": "cached" if args.cached_calibration else "measured in this run",
        "calibration_wall_s": cal_wall, "calibration_load": load_cal,
        "verify_batch_grid": plan["decisions"].get("verify_batch_grid"),
        "requests": n_req, "new_tokens": new_tokens, "transport_plan": transport, "drafters": args.drafters,
        "reps": max(1, args.reps),
        "clock": "EMULATED: thread CPU seconds x node scale (memory-bandwidth ratio), links delay + bytes/rate",
        "machine": "shared 2-core CPU, loaded by other jobs (thread CPU time, not wall time, drives the clock)",
        "cpu_s": time.process_time() - cpu0,
    })
    keep = ("configuration", "recommendation", "placement", "colocated", "routing", "gamma_by_domain", "group",
            "replicas", "router",
            "acceptance", "draft_cpu_s", "verify_cpu_s", "node_scale", "verifier")
    out = {"summary": summary,
           "settings": {k: {"plan": {"predicted": v["plan"]["predicted"],
                                     "decisions": {d: v["plan"]["decisions"].get(d) for d in keep},
                                     "baselines": {b: x["predicted"] for b, x in v["plan"]["baselines"].items()}},
                            "measured": {c: [{kk: vv for kk, vv in x.items() if kk != "rows"} for x in runs]
                                         for c, runs in v["state"]["runs"].items()}}
                        for k, v in settings.items()},
           "wall_s": time.perf_counter() - t_start}
    summary["wall_s"] = out["wall_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(out, indent=1, sort_keys=True, default=float) + "\n")
    log.info("summary: %s", json.dumps({k: v for k, v in summary.items() if k not in ("by_config",)}, indent=1,
                                       default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
