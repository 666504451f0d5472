"""spec-serve emit and run entry points.

Artifact layout:
    plan.json       the plan
    runtime.yaml    every configuration the engine runs (the plan, target-only, the ablations), the model and
                    drafter records, nodes with emulated speed and links, routing centroids (codegen/spec_serve.py)
`run` draws held-out requests of the plan's workload (another seed than the calibration), routes each by MiniLM
nearest centroid, serves them on Ray actors (one per node; `--transport local` in one process) and returns the
receipt: measured goodput, tokens per verification, latency, idle shares vs the plan's prediction.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import yaml

from core.atomic_io import write_text_atomic
from core.errors import ArtifactError, PlannerError, reason_of
from planner.families.base import Progress, RunReport
from planner.flags import FlagValues
from planner.schema import Plan

HELD_OUT_SEED_OFFSET = 1_000_003


def emit(plan: Plan, values: FlagValues, staging: Path, progress: Progress) -> str:
    """Write runtime.yaml and plan.json."""
    from codegen.spec_serve import runtime_config
    from planner.registry import plan_model
    from planner.serde import dumps

    plan_model(plan)
    cfg = runtime_config(plan)
    write_text_atomic(staging / "runtime.yaml", yaml.safe_dump(cfg, sort_keys=True))
    write_text_atomic(staging / "plan.json", dumps(plan))
    return f"runtime.yaml ({len(cfg['configs'])} configurations), plan.json"


def lp_select(values: Any, costs: Any, tokens: Any, budget: float, cap: float) -> list[int]:
    """The planner's batch LP + rounding (solvers/spec_serve/batch.py), handed to the engine."""
    from solvers.spec_serve.batch import select_lp

    if budget == float("inf"):
        budget = sum(costs) + 1.0
    return list(select_lp(values, costs, tokens, budget, cap).chosen)


def build_requests(cfg: dict[str, Any], count: int | None, progress: Progress) -> tuple[list[Any], float]:
    """Held-out requests with their routed domain (MiniLM nearest centroid) and arrival times; routing accuracy."""
    import numpy as np

    from planner.families.spec_serve.measure import classify, embed
    from planner.families.spec_serve.phases import request_ids
    from runtime.spec_serve.engine import Request
    from testbeds.smollm2 import load_tokenizer
    from testbeds.specs import build_workload, parse_workload

    seed = int(cfg["seed"]) + HELD_OUT_SEED_OFFSET
    prompts = build_workload(parse_workload(cfg["workload"]), seed=seed)
    if count:
        prompts = prompts[:count]
    m = cfg["model"]
    vocab = int(m["config"]["vocab_size"]) if m.get("tiny") else 49152
    ids = request_ids(prompts, vocab, load_tokenizer())
    progress("routing requests (MiniLM nearest centroid)")
    dom = classify(embed([p.prompt for p in prompts]), np.array(cfg["centroids"]))
    rate = float(cfg["arrival_rps"])
    rng = random.Random(seed)
    t, reqs = 0.0, []
    for j, (p, x) in enumerate(zip(prompts, ids)):
        if rate > 0 and j > 0:
            t += -math.log(1.0 - rng.random()) / rate
        reqs.append(Request(f"r{j}", x, cfg["domains"][int(dom[j])], t, int(cfg["new_tokens"]), true_domain=p.task))
    acc = sum(r.domain == r.true_domain for r in reqs) / max(len(reqs), 1)
    return reqs, acc


def parse_kill(text: str | None, nodes: Any) -> dict[str, int]:
    """`NODE@CYCLE` -> {node: cycle}."""
    if not text:
        return {}
    name, _, cyc = text.partition("@")
    if name not in nodes or not cyc.isdigit():
        raise PlannerError(f"--kill '{text}' is not NODE@CYCLE with a drafter node of the plan",
                           f"write e.g. --kill {sorted(nodes)[0] if nodes else 'edge1'}@5")
    return {name: int(cyc)}


def refuse_kill_on_replicas(name: str, config: dict[str, Any], kill: dict[str, int]) -> None:
    """A replicated configuration has no drafter node to lose: `--kill` with it is a usage error."""
    if config.get("replicas") and kill:
        raise PlannerError(f"--kill does not apply to '{name}', which replicates the target on every node (no "
                           "drafter node to lose)", "drop --kill, or run a configuration with drafter nodes")


def serve(cfg: dict[str, Any], name: str, requests: list[Any], transport: str, kill: dict[str, int],
          progress: Progress, nodes_down: dict[str, str] | None = None,
          loaded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start the nodes of configuration `name`, serve `requests`, stop them; measured totals. `loaded`: models
    already built in this process (local transport), reused across calls (the benchmark's repetitions)."""
    from core.cache import cache_dir
    from runtime.spec_serve.engine import Engine, serve_replicas
    from runtime.spec_serve.nodes import make_nodes, stop_ray

    c = cfg["configs"][name]
    refuse_kill_on_replicas(name, c, kill)
    hosting = {n: cfg["drafters"][v["drafter"]] for n, v in c["nodes"].items()
               if v.get("drafter") and n not in (nodes_down or {})}
    progress(f"starting the verifier and {len(hosting)} drafter node(s) ({transport})")
    repo = str(Path(__file__).resolve().parents[3])
    ver, nodes, failures = make_nodes(cfg["model"], hosting, transport, repo, str(cache_dir()), loaded)
    failures.update(nodes_down or {})
    try:
        if c.get("replicas"):
            return serve_replicas(c, ver, nodes, requests, lp_select, progress)
        eng = Engine(c, ver, nodes, lp_select, failures, kill)
        return eng.serve(requests, progress)
    finally:
        if transport == "ray":
            stop_ray()


def run(artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
    """Serve one configuration on held-out requests; the receipt compares with the plan."""
    import json

    from planner.families.spec_serve.views import receipt_views
    from runtime.receipt import Receipt

    try:
        cfg = yaml.safe_load((artifact / "runtime.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ArtifactError(f"{artifact}/runtime.yaml is not readable ({reason_of(exc)})", "re-emit the plan") from exc
    name = values["baseline"] or "plan"
    if name not in cfg["configs"]:
        raise PlannerError(f"{artifact} has no configuration '{name}'",
                           f"use --baseline with one of: {', '.join(k for k in cfg['configs'] if k != 'plan')}")
    kill = parse_kill(values["kill"], cfg["configs"][name]["nodes"])
    refuse_kill_on_replicas(name, cfg["configs"][name], kill)      # before any model loads
    reqs, acc = build_requests(cfg, values["requests"], progress)
    res = serve(cfg, name, reqs, str(values["transport"]), kill, progress)
    rec = Receipt(family="spec-serve", config=name,
                  link="EMULATED links (delay + bytes/rate) between Ray actors on one machine", rows=res["rows"])
    pred = cfg["predicted"][name]
    by_domain: dict[str, Any] = {}
    for dom in cfg["domains"]:
        rs = [r for r in res["rows"] if r["domain"] == dom]
        if rs:
            lat = sorted(r["latency_s"] for r in rs)
            by_domain[dom] = {"n": len(rs), "drafters": ",".join(sorted({r["drafters"] for r in rs})),
                              "tokens_per_verify": sum(r["tokens_per_verify"] for r in rs) / len(rs),
                              "latency_p50_s": lat[(len(lat) - 1) // 2]}
    rec.totals = {k: v for k, v in res.items() if k != "rows"}
    rec.totals.update({f"{k}_predicted": pred.get(k) for k in ("goodput_tps", "tokens_per_verify", "latency_p50_s",
                                                               "latency_p95_s", "verifier_idle", "drafter_idle")})
    rec.totals.update({"workload": cfg["workload"], "transport": str(values["transport"]), "routing_accuracy": acc,
                       "by_domain": by_domain, "clock": "EMULATED"})
    if float(cfg["arrival_rps"]) > 0:
        rec.totals["events"] = list(rec.totals["events"]) + [
            f"online arrivals at {cfg['arrival_rps']:g} requests/s: the measured goodput is the served rate (bounded by "
            "arrivals), the predicted one the capacity; compare latencies"]
    return RunReport(rec.to_json(), receipt_views(json.loads(rec.to_json())))
