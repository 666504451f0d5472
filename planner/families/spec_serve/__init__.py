"""The spec-serve family (CoSine, arXiv 2504.17672): collaborative speculative decoding across drafter nodes.

Several drafter nodes and one verifier: requests are routed by domain (MiniLM nearest centroid) to the drafters
that know it, drafts of several drafters are fused by confidence, drafting and verification are pipelined,
verification batches are chosen by an LP each cycle, and the draft length adapts within the plan's bounds.
The plan decides placement, routing table, γ per domain and the batch cap from a calibration run of the real
drafters and target (acceptance per drafter set and domain, per-token times), and predicts goodput, latency
and idle shares beside target-only serving, single-drafter speculation and CoSine's ablations.
Design notes and measured figures: docs/spec-serve.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.errors import PlannerError
from planner.families.base import Family, Phase, PlanContext, Progress, RunReport
from planner.flags import Flag, FlagValues

_RPS = re.compile(r"^(?P<v>\d+(?:\.\d+)?)\s*rps$")
_EE = re.compile(r"^ee(?P<k>\d+)$")
_DIST = re.compile(r"^dist(?P<k>\d+)-(?P<dom>[a-z]+)$")


@dataclass(frozen=True)
class SpecServeOptions:
    """The typed plan options."""

    nodes: str
    workload: str
    arrival_rps: float                 # 0: offline (every request at once)
    drafters: tuple[str, ...]
    new_tokens: int
    calibration_prompts: int
    gamma_max: int
    fanout: int
    greedy: bool
    seed: int
    recalibrate: bool = False          # measure the calibration now even when a cached one exists


def parse_arrival(text: str) -> float:
    """`offline` -> 0, `4rps` -> 4.0 requests per second."""
    t = text.strip().lower()
    if t == "offline":
        return 0.0
    m = _RPS.match(t)
    if not m or float(m.group("v")) <= 0:
        raise PlannerError(f"--arrival '{text}' is not a request rate", "write e.g. --arrival 4rps, or offline")
    return float(m.group("v"))


def parse_drafters(text: str, target: Any, tiny: bool) -> tuple[str, ...]:
    """Drafter names: `eeK` (the target's first K layers), `ngram`, or a model name that must share the target's
    tokenizer (a `NAME:KL` truncation of the target is the same as `eeK`)."""
    from planner.registry import resolve_model

    out = []
    layers = int(target.config.get("num_hidden_layers", 0)) if not tiny else int(target.tiny.get("num_hidden_layers", 2))
    for raw in (x.strip() for x in text.split(",") if x.strip()):
        name = raw
        md = _DIST.match(raw)
        if md:
            from testbeds.domains import DOMAINS

            if md.group("dom") not in DOMAINS:
                raise PlannerError(f"--drafters {raw}: no domain '{md.group('dom')}' to distil on",
                                   f"use one of {', '.join(f'dist2-{d}' for d in DOMAINS)}")
            if not 1 <= int(md.group("k")) < layers:
                raise PlannerError(f"--drafters {raw}: a distilled drafter needs 1..{layers - 1} blocks",
                                   f"pass e.g. dist2-{md.group('dom')}")
        elif raw != "ngram" and not _EE.match(raw):
            spec = resolve_model(raw)                      # unknown names: one line with the closest ones
            base = raw.split(":")[0]
            if base != target.name.split(":")[0]:
                v_d, v_t = spec.config.get("vocab_size"), target.config.get("vocab_size")
                raise PlannerError(f"drafter {raw}'s tokenizer differs from the target {target.name}'s "
                                   f"(vocab {v_d} vs {v_t}): drafts would be in another token space",
                                   "use drafters that share the target's tokenizer: eeK (its first K layers), "
                                   "ngram, or a NAME:KL truncation of the target")
            name = f"ee{int(spec.config.get('num_hidden_layers', 1))}"
        m = _EE.match(name)
        if m and not 1 <= int(m.group("k")) < layers:
            raise PlannerError(f"--drafters {raw}: an early-exit drafter needs 1..{layers - 1} layers",
                               f"pass e.g. ee{max(1, layers // 4)}")
        if name in out:
            raise PlannerError(f"--drafters names {name} twice", "name each drafter once")
        out.append(name)
    if not out:
        raise PlannerError("--drafters is empty", "pass e.g. --drafters ee4,ee8,ngram")
    return tuple(out)


class SpecServeFamily(Family):
    """CoSine's collaborative speculative serving, planned from measured acceptance and times."""

    name = "spec-serve"
    method = "CoSine"
    description = "collaborative speculative decoding: routing, fusion, pipelining, LP batches, adaptive draft length"
    objective_metric = "goodput_tps"
    objective_sense = "max"
    claim_hint = "--nodes nodes.yaml --workload mix:code,chat,math:200 for speculative serving across drafter nodes"
    metric_labels = {"goodput_tps": "goodput", "latency_p50_s": "p50", "latency_p95_s": "p95",
                     "tokens_per_verify": "tok/verify", "verifier_idle": "v idle", "drafter_idle": "d idle"}
    plan_flags = (
        Flag("--nodes", "path", "nodes file: hardware per node, which verifies, links (docs/spec-serve.md)"),
        Flag("--workload", "workload", "prompt workload (the calibration sample), e.g. ruler:niah,kv@2k:16"),
        Flag("--arrival", "str", "request arrival rate (e.g. 4rps) or offline (all at once)", default="offline"),
        Flag("--drafters", "str", "drafters: eeK (target's first K layers), distK-DOMAIN (K blocks distilled on "
             "the domain), ngram; comma-separated",
             default="ee4,ee8,ngram"),
        Flag("--new-tokens", "int", "tokens generated per request", default=32, minimum=1),
        Flag("--calibration-prompts", "int", "calibration prompts per domain", default=3, minimum=1),
        Flag("--gamma-max", "int", "longest draft (γ upper bound)", default=8, minimum=1),
        Flag("--fanout", "int", "drafters per request at most (fusion of up to this many)", default=2, minimum=1),
        Flag("--decoding", "choice", "greedy (outputs equal target-only) or sample (rejection sampling)",
             default="greedy", choices=("greedy", "sample")),
        Flag("--seed", "int", "seed of the calibration prompts, the served requests and the tiny model", default=0,
             minimum=0),
        Flag("--recalibrate", "switch", "measure the calibration again (times move with the machine's load) and "
             "replace the cached one"),
    )
    run_flags = (
        Flag("--baseline", "str", "run a baseline's configuration from the plan (e.g. target-only, no-routing)"),
        Flag("--requests", "int", "serve only the first N requests of the workload", minimum=1),
        Flag("--transport", "choice", "ray (actors, one per node) or local (one process)", default="ray",
             choices=("ray", "local")),
        Flag("--kill", "str", "emulate a node failure: NODE@CYCLE (its requests are re-routed)"),
    )

    def claim(self, ctx: PlanContext) -> str | None:
        if "--nodes" in ctx.request.flags.given:
            return "a nodes file with drafter nodes and a verifier: speculative serving"
        return None

    def options(self, ctx: PlanContext) -> Any:
        from planner.families.spec_serve.nodes_file import load_nodes

        v = ctx.request.flags
        if not v["nodes"]:
            raise PlannerError("spec-serve plans need a nodes file", "pass --nodes nodes.yaml (docs/spec-serve.md)")
        if v["workload"] is None:
            raise PlannerError("spec-serve plans need a workload", "pass --workload mix:code,chat,math:200")
        load_nodes(str(v["nodes"]))            # checked now: nothing is measured on a bad file
        wl = v["workload"]
        if wl.suite != "mix" and not wl.path:
            raise PlannerError(f"--workload {wl.text}: spec-serve routes by domain",
                               "pass a mix workload, e.g. mix:code,chat,math:200")
        if ctx.spec.name.split(":")[0] != "smollm2-135m":
            raise PlannerError(f"spec-serve runs the SmolLM2 test bed; {ctx.spec.name} is not supported yet",
                               "plan smollm2-135m (see docs/spec-serve.md)")
        drafters = str(v["drafters"]) if "--drafters" in v.given or not ctx.request.tiny else "ee1,ngram"
        return SpecServeOptions(
            nodes=str(v["nodes"]), workload=wl.text, arrival_rps=parse_arrival(str(v["arrival"])),
            drafters=parse_drafters(drafters, ctx.spec, ctx.request.tiny), new_tokens=int(v["new_tokens"]),
            calibration_prompts=int(v["calibration_prompts"]), gamma_max=int(v["gamma_max"]),
            fanout=int(v["fanout"]), greedy=str(v["decoding"]) == "greedy", seed=int(v["seed"]),
            recalibrate=bool(v["recalibrate"]))

    def phases(self) -> Sequence[Phase]:
        from planner.families.spec_serve import phases as ph

        return (Phase("workload", ph.workload), Phase("calibrate", ph.calibrate), Phase("solve", ph.solve),
                Phase("baselines", ph.baselines), Phase("lift", ph.lift))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.spec_serve.phases import validate_plan

        return validate_plan(plan)

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.spec_serve.views import plan_tables

        return plan_tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        return ("goodput_tps", "latency_p50_s", "latency_p95_s", "tokens_per_verify", "verifier_idle")

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.spec_serve.artifact import emit

        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.spec_serve.artifact import run

        return run(artifact, values, progress)
