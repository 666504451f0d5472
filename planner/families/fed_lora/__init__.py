"""The fed-lora family (FedQuad): per device of a federation, the LoRA depth (trainable blocks counted from
the output) and how many of those blocks store their saved activations quantised, so every device fits
its memory and rounds are not held back by stragglers. Design notes: docs/fed-lora.md.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from planner.families.base import Family, Phase, PlanContext, Progress, RunReport, require_population
from planner.flags import Flag, FlagValues


class FedLoraFamily(Family):
    """Federated LoRA fine-tuning over a heterogeneous client population."""

    name = "fed-lora"
    method = "FedQuad"
    description = "per-device LoRA depth and activation-quantised layers for federated fine-tuning"
    objective_metric = "progress_rate_per_s"
    objective_sense = "max"
    claim_hint = "--clients FILE|gen:N --scenario fed-lora for federated LoRA fine-tuning"
    metric_labels = {"progress_rate_per_s": "R /s", "round_time_s": "round s", "round_time_spread": "spread",
                     "participants": "devices", "mean_depth": "depth", "peak_memory_bytes": "peak mem",
                     "feasible": "ok"}
    plan_flags = (
        Flag("--clients", "str", "client population: a YAML file or gen:N[:SEED]"),
        Flag("--batch-size", "int", "local batch size (samples per step)", default=8, minimum=1),
        Flag("--seq-len", "int", "sequence length in tokens (default: the model's)", minimum=1),
        Flag("--local-steps", "int", "local steps per round", default=20, minimum=1),
        Flag("--lora-rank", "int", "LoRA rank", default=8, minimum=1),
        Flag("--lora-alpha", "int", "LoRA alpha", default=16, minimum=1),
        Flag("--act-bits", "choice", "bits of quantised saved activations", default="8", choices=("8", "4")),
        Flag("--memory-margin", "percent", "memory kept free on every device (e.g. 10%)", default=0.1, minimum=0.0,
             maximum=0.9),
        Flag("--coverage", "percent", "data share that must train each of the top blocks (0% = off)", default=0.0,
             minimum=0.0, maximum=1.0),
        Flag("--coverage-blocks", "int", "how many top blocks need --coverage (default: half the blocks)", minimum=1),
        Flag("--deadline", "duration", "longest round a device may take (e.g. 30s; default none)", minimum=0.0,
             minimum_exclusive=True),
        Flag("--gamma", "float", "utility discount per quantised block (default 0.1 at 8 bit, 0.3 at 4 bit)",
             minimum=0.0, maximum=1.0),
        Flag("--utility-fit", "path", "JSON with the utility u(d, q) = d^depth_exponent - gamma*q fitted from a pilot "
             "(benchmarks/fed_lora_pilot.py) and its source; default the spec's u = d - gamma*q"),
        Flag("--round-overhead", "duration", "fixed per-round overhead of every client (e.g. 20ms)", default=0.02,
             minimum=0.0),
        Flag("--rounds", "int", "federated rounds the emitted run performs", default=20, minimum=1),
        Flag("--allow-sit-out", "switch", "let devices that cannot hold depth 1 sit out instead of failing"),
    )
    emit_flags = (
        Flag("--seed", "int", "seed of the initial adapters (and the tiny model's weights)", default=0, minimum=0),
        Flag("--lr", "float", "client learning rate written into the artifact", default=3e-3, minimum=0.0,
             minimum_exclusive=True),
        Flag("--task-data", "str", "causal LMs: the instruction test bed the clients train on, instruct:Ntasks or "
             "instruct:TASK+TASK[,total=N,alpha=A,seed=S,test_per_task=K] (non-IID by task)",
             default="instruct:4tasks,total=400,test_per_task=12"),
    )
    run_flags = (
        Flag("--deploy", "switch", "run through Flower's deployment engine: SuperLink + one SuperNode per client "
             "on loopback, started and stopped by this command"),
        Flag("--rounds", "int", "federated rounds (default: the artifact's)", minimum=1),
        Flag("--baseline", "str", "run a baseline's client configs from the plan (e.g. uniform_depth)"),
        Flag("--lr-override", "float", "client learning rate (default: the artifact's)", minimum=0.0,
             minimum_exclusive=True),
    )

    def claim(self, ctx: PlanContext) -> str | None:
        given = ctx.request.flags.given
        if "--clients" not in given:
            return None
        own = {f.name for f in self.plan_flags} - {"--clients", "--rounds", "--deadline", "--memory-margin"}
        if given & own:
            return "--clients with LoRA options: federated LoRA fine-tuning"
        if ctx.spec.task in ("causal-lm", "encoder") or ctx.spec.name == "digits-transformer":
            return f"--clients with the transformer {ctx.spec.name}: federated LoRA fine-tuning"
        return None

    def options(self, ctx: PlanContext) -> Any:
        from planner.families.fed_lora.lowering import FedLoraOptions, utility_setting

        v = ctx.request.flags
        require_population(ctx, "fed-lora")
        opts = FedLoraOptions(
            clients=v["clients"], batch_size=v["batch_size"], seq_len=v["seq_len"], local_steps=v["local_steps"],
            lora_rank=v["lora_rank"], lora_alpha=v["lora_alpha"], act_bits=int(v["act_bits"]),
            memory_margin=v["memory_margin"], coverage=v["coverage"], coverage_blocks=v["coverage_blocks"],
            deadline_s=v["deadline"] if v["deadline"] is not None else math.inf, gamma=v["gamma"],
            utility_fit=v["utility_fit"],
            round_overhead_s=v["round_overhead"], rounds=v["rounds"], allow_sit_out=bool(v["allow_sit_out"]))
        utility_setting(opts)          # a bad --utility-fit fails here, before the model is profiled
        return opts

    def phases(self) -> Sequence[Phase]:
        from planner.families.fed_lora import phases as ph

        return (Phase("population", ph.population), Phase("profile", ph.profile), Phase("lower", ph.lower),
                Phase("solve", ph.solve), Phase("baselines", ph.baselines), Phase("bound", ph.bound),
                Phase("lift", ph.lift))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.fed_lora.lowering import validate_plan_decisions

        return validate_plan_decisions(dict(plan.decisions), dict(plan.predicted), dict(plan.constraints),
                                       {k: {"decisions": dict(b.decisions), "predicted": dict(b.predicted)}
                                        for k, b in plan.baselines.items()})

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.fed_lora.views import fed_lora_tables

        return fed_lora_tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        if wide:
            return ("progress_rate_per_s", "round_time_s", "round_time_spread", "participants", "mean_depth",
                    "max_peak_memory_bytes", "feasible")
        return ("progress_rate_per_s", "round_time_s", "participants", "mean_depth", "feasible")

    def plot(self, plan: Any) -> Any:
        from planner.families.fed_lora.views import round_time_plot

        return round_time_plot(plan)

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.fed_lora.artifact import emit

        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.fed_lora.artifact import run

        return run(artifact, values, progress)
