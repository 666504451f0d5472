"""The fed-expand family (FedBE): federated fine-tuning that inserts identity-initialised transformer blocks
(LLaMA-Pro construction), freezes the pretrained ones, and gives each client the added blocks that fit its
memory and round deadline and suit its data. Design notes and measurements: docs/fed-expand.md.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from core.errors import PlannerError
from planner.families.base import Family, Phase, PlanContext, Progress, RunReport, require_population
from planner.flags import Flag, FlagValues

RUN_CONFIGS = ("plan", "fixed_expansion", "static_allocation", "lora_fedavg", "full_ft")


class FedExpandFamily(Family):
    """Federated block expansion over a heterogeneous client population."""

    name = "fed-expand"
    method = "FedBE"
    description = "added transformer blocks and per-client block allocation for federated fine-tuning"
    objective_metric = "utility"
    objective_sense = "max"
    claim_hint = "--clients FILE --scenario fed-expand --data instruct:4tasks for federated block expansion"
    metric_labels = {"utility": "utility", "round_time_s": "round s", "bytes_per_round": "bytes/round",
                     "clients_over_budget": "over", "max_memory_bytes": "max mem", "feasible": "ok"}
    plan_flags = (
        Flag("--clients", "str", "client population: a YAML file or gen:N[:SEED]"),
        # the default is geo-train's (flags shared by families share their default); fed-expand reads
        # instruct:4tasks when --data is not given
        Flag("--data", "str", "fed-expand: instruction data, instruct:Ntasks or instruct:TASK+TASK[,total=N,alpha=A,"
             "seed=S] (default instruct:4tasks)", default="corpus:by-source"),
        Flag("--added-blocks", "int", "transformer blocks to add (default: a quarter of the model's, at least one "
             "per data cluster)", minimum=1),
        Flag("--batch-size", "int", "local batch size (samples per step)", default=8, minimum=1),
        Flag("--seq-len", "int", "sequence length in tokens (default: 48 for fed-expand)", minimum=1),
        Flag("--local-steps", "int", "local steps per round", default=20, minimum=1),
        Flag("--rounds", "int", "federated rounds the emitted run performs", default=20, minimum=1),
        Flag("--deadline", "duration", "longest round a client may take (e.g. 30s; default none)", minimum=0.0,
             minimum_exclusive=True),
        Flag("--memory-margin", "percent", "memory kept free on every device (e.g. 10%)", default=0.1, minimum=0.0,
             maximum=0.9),
        Flag("--round-overhead", "duration", "fixed per-round overhead of every client (e.g. 20ms)", default=0.02,
             minimum=0.0),
        Flag("--home-bonus", "float", "extra utility of a block in the client's data-cluster home subset",
             default=1.0, minimum=0.0),
        Flag("--allow-sit-out", "switch", "let clients that cannot hold one added block sit out instead of failing"),
    )
    emit_flags = (
        Flag("--seed", "int", "seed of the initial adapters (and the tiny model's weights)", default=0, minimum=0),
        Flag("--lr", "float", "client learning rate written into the artifact", default=3e-3, minimum=0.0,
             minimum_exclusive=True),
    )
    run_flags = (
        Flag("--deploy", "switch", "run through Flower's deployment engine: SuperLink + one SuperNode per client "
             "on loopback, started and stopped by this command"),
        Flag("--rounds", "int", "federated rounds (default: the artifact's)", minimum=1),
        Flag("--baseline", "str", "run a baseline instead of the plan: " + ", ".join(RUN_CONFIGS[1:])),
        Flag("--lr-override", "float", "client learning rate (default: the artifact's)", minimum=0.0,
             minimum_exclusive=True),
    )

    def claim(self, ctx: PlanContext) -> str | None:
        given = ctx.request.flags.given
        if "--clients" in given and given & {"--added-blocks", "--home-bonus"}:
            return "--clients with --added-blocks: federated block expansion"
        return None

    def options(self, ctx: PlanContext) -> Any:
        from planner.families.fed_expand.data_spec import parse_instruct
        from planner.families.fed_expand.lowering import FedExpandOptions

        v = ctx.request.flags
        require_population(ctx, "fed-expand")
        s = ctx.spec
        if s.kind != "transformers" or s.task != "causal-lm" or not isinstance(s.config.get("num_hidden_layers"), int):
            raise PlannerError(f"{s.name} has no transformer decoder blocks to expand",
                               "plan a decoder LM such as smollm2-135m or smollm2-135m:8L")
        data = v["data"] if "--data" in v.given else "instruct:4tasks"
        parse_instruct(data)          # bad --data fails before any work
        seq = int(v["seq_len"] or 48)
        if seq < 8:
            raise PlannerError(f"--seq-len {seq} cannot hold an instruction and its answer", "pass at least 8")
        return FedExpandOptions(
            clients=v["clients"], data=data, added_blocks=v["added_blocks"], batch_size=v["batch_size"],
            seq_len=seq, local_steps=v["local_steps"], rounds=v["rounds"],
            deadline_s=v["deadline"] if v["deadline"] is not None else math.inf, memory_margin=v["memory_margin"],
            round_overhead_s=v["round_overhead"], home_bonus=v["home_bonus"], allow_sit_out=bool(v["allow_sit_out"]),
            answer_tokens=max(1, min(12, seq // 4)))

    def phases(self) -> Sequence[Phase]:
        from planner.families.fed_expand import phases as ph

        return (Phase("population", ph.population), Phase("data", ph.data), Phase("profile", ph.profile),
                Phase("lower", ph.lower), Phase("solve", ph.solve), Phase("baselines", ph.baselines),
                Phase("bound", ph.bound), Phase("lift", ph.lift))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.fed_expand.views import validate_plan

        return validate_plan(plan)

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.fed_expand.views import tables

        return tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        return ("utility", "round_time_s", "bytes_per_round", "max_memory_bytes", "clients_over_budget", "feasible")

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.fed_expand.artifact import emit

        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.fed_expand.artifact import run

        return run(artifact, values, progress)
