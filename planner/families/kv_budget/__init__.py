"""The kv-budget family (GVote, arXiv 2509.08409): per-request KV-cache budgets as an output.

Per request, layer and KV head GVote keeps the union of what sampled future queries need (nucleus of the last
query's attention, top keys of S Monte-Carlo queries, sinks, recent window). The plan chooses GVote's knobs on
a calibration sample of the workload run through the real model, so that accuracy stays within
--max-accuracy-drop of the full cache at the least mean KV memory, and predicts per-request KV bytes (mean,
p95), accuracy and concurrency at the device's free memory, next to kvpress's fixed-ratio presses on the same
prompts. Design notes and measured figures: docs/kv-budget.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.errors import PlannerError
from planner.families.base import Family, Phase, PlanContext, Progress, RunReport
from planner.flags import Flag, FlagValues

PRESS_NAMES = ("snapkv", "adakv", "pyramidkv", "streamingllm", "expected_attention")


@dataclass(frozen=True)
class KvBudgetOptions:
    """The typed plan options."""

    workload: str
    max_accuracy_drop: float          # fraction (0.01 = 1 point)
    p_nuc: tuple[float, ...]
    samples: tuple[int, ...]
    sinks: int
    window: int
    kv_cap: float | None              # optional hard cap per head, share of the prompt
    presses: tuple[str, ...]
    press_ratios: tuple[float, ...]
    seed: int
    weights: str | None
    budgets: tuple[str, ...] = ("top",)   # GVote's per-sample budget readings to try: "top" (spec), "nucleus"
    anchors: int = 4                      # successor spans (ours): anchors x span keys after them; 0 = off
    span: int = 8


def _floats(flag: str, text: str, lo: float, hi: float, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(sorted({float(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise PlannerError(f"{flag} '{text}' is not a comma-separated list of numbers",
                           f"pass e.g. {flag} 0.9,0.95") from None
    bad = [v for v in vals if not lo < v <= hi]
    if not vals or bad:
        raise PlannerError(f"{flag} {bad[0] if bad else text!r} is outside ({lo:g}, {hi:g}]",
                           f"pass {what} in ({lo:g}, {hi:g}], e.g. {flag} 0.9,0.95")
    return vals


def _ints(flag: str, text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise PlannerError(f"{flag} '{text}' is not a comma-separated list of whole numbers",
                           f"pass e.g. {flag} 8,16") from None
    bad = [v for v in vals if v < 1]
    if not vals or bad:
        raise PlannerError(f"{flag} {bad[0] if bad else text!r}: {what} must be at least 1",
                           f"pass e.g. {flag} 8,16 (GVote needs at least one sampled query)")
    return vals


def _budgets(text: str) -> tuple[str, ...]:
    vals = tuple(sorted({x.strip() for x in text.split(",") if x.strip()}))
    bad = [v for v in vals if v not in ("top", "nucleus")]
    if not vals or bad:
        raise PlannerError(f"--budget {bad[0] if bad else text!r} is not a GVote budget reading",
                           "pass top, nucleus or top,nucleus")
    return vals


def _spans(text: str) -> dict[str, int]:
    try:
        a, r = (int(x) for x in text.split(":"))
    except ValueError:
        raise PlannerError(f"--spans '{text}' is not ANCHORS:SPAN", "pass e.g. --spans 4:8 (0:0 turns them off)") \
            from None
    if a < 0 or r < 0:
        raise PlannerError(f"--spans '{text}': anchors and span must be >= 0", "pass e.g. --spans 4:8")
    return {"anchors": a, "span": r}


class KvBudgetFamily(Family):
    """GVote's adaptive KV-cache budgets for a decoder LM on a prompt workload, beside kvpress's presses."""

    name = "kv-budget"
    method = "GVote"
    description = "per-request KV-cache budgets (GVote's keep sets) at a target accuracy, beside kvpress presses"
    objective_metric = "mean_kv_bytes"
    objective_sense = "min"
    claim_hint = "--scenario kv-budget --workload ruler:niah@2k:16 for per-request KV-cache budgets"
    metric_labels = {"mean_kv_bytes": "KV mean", "p95_kv_bytes": "KV p95", "accuracy": "acc",
                     "accuracy_drop_points": "drop pts", "concurrency_p95": "conc p95", "kept_fraction": "kept"}
    plan_flags = (
        Flag("--workload", "workload", "prompt workload (the calibration sample), e.g. ruler:niah,kv@2k:16"),
        Flag("--max-accuracy-drop", "percent", "accuracy the plan may lose vs the full cache (points)", default=0.01,
             minimum=0.0, maximum=1.0),
        Flag("--p-nuc", "str", "GVote nucleus masses to try, comma-separated, each in (0, 1]", default="0.9,0.95,0.99"),
        Flag("--samples", "str", "GVote Monte-Carlo sample counts S to try, comma-separated, each >= 1", default="4,16"),
        Flag("--budget", "str", "GVote's per-sample budget readings to try, comma-separated: top (the top-B_step "
             "keys of each sampled query, the spec) and/or nucleus (each sample's own p_nuc nucleus)", default="top"),
        Flag("--spans", "str", "successor spans ANCHORS:SPAN (ours): keep SPAN keys after each of the ANCHORS "
             "positions the last query attends to most, in every head; 0:0 is the paper's GVote", default="4:8"),
        Flag("--sinks", "int", "first tokens every head keeps", default=4, minimum=0),
        Flag("--window", "int", "last prompt tokens every head keeps", default=32, minimum=0),
        Flag("--kv-cap", "percent", "optional hard cap per KV head, share of the prompt (e.g. 50%)",
             minimum=0.0, minimum_exclusive=True, maximum=1.0),
        Flag("--presses", "str", "kvpress baselines, comma-separated", default=",".join(PRESS_NAMES)),
        Flag("--press-ratios", "str", "fixed compression ratios (share evicted) of every press baseline",
             default="0.25,0.5,0.75"),
        Flag("--seed", "int", "seed of the calibration prompts, GVote's samples and the tiny model", default=0,
             minimum=0),
        Flag("--weights", "path", "a Hugging Face model directory (config.json + safetensors) to run a full-size plan on"),
    )
    run_flags = (
        Flag("--workload", "workload", "held-out prompts to run (default: the plan's workload, another seed)"),
        Flag("--baseline", "str", "run a baseline's configuration from the plan (e.g. snapkv, full)"),
    )

    def claim(self, ctx: PlanContext) -> str | None:
        own = {"--max-accuracy-drop", "--p-nuc", "--samples", "--press-ratios", "--presses", "--kv-cap", "--budget",
               "--spans"}
        if ctx.request.flags.given & own:
            return "GVote knobs given: per-request KV-cache budgets"
        return None

    def options(self, ctx: PlanContext) -> Any:
        from planner.families.kv_budget.workload import check_model, parse_workload

        v = ctx.request.flags
        presses = tuple(p.strip() for p in str(v["presses"]).split(",") if p.strip())
        unknown = [p for p in presses if p not in PRESS_NAMES]
        if unknown:
            raise PlannerError(f"--presses: unknown press '{unknown[0]}'", f"use some of: {', '.join(PRESS_NAMES)}")
        opts = KvBudgetOptions(
            workload=v["workload"].text if v["workload"] is not None else "", max_accuracy_drop=float(v["max_accuracy_drop"]),
            p_nuc=_floats("--p-nuc", str(v["p_nuc"]), 0.0, 1.0, "nucleus masses"),
            samples=_ints("--samples", str(v["samples"]), "S"),
            sinks=int(v["sinks"]), window=int(v["window"]), kv_cap=v["kv_cap"], presses=presses,
            press_ratios=_floats("--press-ratios", str(v["press_ratios"]), 0.0, 0.99, "ratios"),
            seed=int(v["seed"]), weights=v["weights"], budgets=_budgets(str(v["budget"])),
            **_spans(str(v["spans"])))
        if not v["workload"]:
            raise PlannerError("kv-budget plans need a prompt workload", "pass --workload ruler:niah@2k:16")
        ctx.require_hardware()
        check_model(ctx.spec, ctx.request.tiny)
        parse_workload(opts.workload, ctx.spec, ctx.request.tiny)     # checks names and lengths now
        return opts

    def phases(self) -> Sequence[Phase]:
        from planner.families.kv_budget import phases as ph

        return (Phase("workload", ph.workload), Phase("model", ph.model), Phase("calibrate", ph.calibrate),
                Phase("solve", ph.solve), Phase("baselines", ph.baselines), Phase("lift", ph.lift))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.kv_budget.phases import validate_plan

        return validate_plan(plan)

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.kv_budget.views import kv_budget_tables

        return kv_budget_tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        return ("mean_kv_bytes", "p95_kv_bytes", "accuracy", "concurrency_p95", "feasible")

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.kv_budget.artifact import emit

        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.kv_budget.artifact import run

        return run(artifact, values, progress)
