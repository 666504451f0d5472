"""The dfgl family (Duplex): per round of decentralised federated GNN training, the P2P topology and every
worker's neighbour sampling ratio, chosen jointly by a DDPG controller trained in the planner's simulator;
run with one torch.distributed (gloo) process per worker. Design notes: docs/dfgl.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.errors import PlannerError
from planner.families.base import Family, Phase, PlanContext, Progress, RunReport
from planner.flags import Flag, FlagValues


@dataclass(frozen=True)
class DfglFamilyOptions:
    """The workers spec, the graph spec and the lowering options."""

    workers: str
    graph: str
    lowering: Any


class DfglFamily(Family):
    """Decentralised federated GNN training: joint topology and neighbour sampling per round."""

    name = "dfgl"
    method = "Duplex"
    description = "per-round P2P topology and neighbour sampling ratios for decentralised federated GNN training"
    objective_metric = "time_to_target_s"
    objective_sense = "min"
    claim_hint = "--workers FILE|gen:N --graph csbm:nodes=N,workers=M for decentralised federated GNN training"
    metric_labels = {"time_to_target_s": "s to target", "bytes_to_target": "bytes to target",
                     "objective_sum": "sum J", "total_time_s": "time s", "total_bytes": "bytes",
                     "surrogate_final_loss": "error (surr.)", "surrogate_mean_consensus": "consensus (surr.)"}
    plan_flags = (
        Flag("--workers", "str", "P2P workers: a YAML file (hardware + time-varying links) or gen:N[:SEED]"),
        Flag("--graph", "str", "graph test bed and its split, e.g. csbm:nodes=8000,workers=8"),
        Flag("--rounds", "int", "training rounds the plan schedules", default=20, minimum=1),
        Flag("--degree", "int", "links each worker keeps before symmetrising (top-d)", default=2, minimum=1),
        Flag("--r-min", "float", "smallest neighbour sampling ratio", default=0.1, minimum=0.0,
             minimum_exclusive=True, maximum=1.0),
        Flag("--c-max", "float", "consensus-distance threshold (relative model distance)", default=0.5,
             minimum=0.0, minimum_exclusive=True),
        Flag("--episodes", "int", "DDPG training episodes in the simulator", default=40, minimum=1),
        Flag("--local-epochs", "int", "local full-batch GNN steps per round", default=5, minimum=1),
        Flag("--seed", "int", "seed of the graph, the agent and the models", default=0, minimum=0),
        Flag("--metric", "choice", "accuracy the plan aims at: global (every worker's model on all held-out nodes) "
             "or local (each worker's model on its own held-out nodes)", default="global",
             choices=("global", "local")),
        Flag("--target-accuracy", "percent", "accuracy to reach, e.g. 85% (default: 95 % of the full topology's "
             "predicted final accuracy)", minimum=0.0, maximum=1.0),
        Flag("--round-overhead", "duration", "fixed per-round overhead of every client (e.g. 20ms)", default=0.02,
             minimum=0.0),
    )
    run_flags = (
        Flag("--baseline", "str", "run a baseline's schedule from the plan (e.g. full_full)"),
        Flag("--controller", "choice", "online (default for the plan): the plan's DDPG actor with the rule-based "
             "fallback, run each round on measured losses, consensus and link times; schedule (default with "
             "--baseline): follow the planned schedule; rule: the rule-based controller alone",
             choices=("online", "schedule", "rule")),
        Flag("--rounds", "int", "rounds to run (default: the plan's)", minimum=1),
        Flag("--kill-worker", "str", "fault injection: RANK:ROUND kills that worker at the start of that round"),
        Flag("--timeout", "duration", "how long a worker waits for a peer before giving up", default=30.0,
             minimum=0.0, minimum_exclusive=True),
    )

    def claim(self, ctx: PlanContext) -> str | None:
        given = ctx.request.flags.given
        if "--workers" in given and "--graph" in given:
            return "--workers with --graph: decentralised federated GNN training"
        return None

    def options(self, ctx: PlanContext) -> Any:
        from planner.families.dfgl.lowering import DfglOptions

        v = ctx.request.flags
        if not v["workers"] or not v["graph"]:
            raise PlannerError("dfgl plans need workers and a graph", "pass --workers FILE|gen:N and --graph csbm:...")
        if ctx.hardware is not None:
            raise PlannerError("--hardware does not apply to dfgl plans: every worker's hardware comes from --workers",
                               "drop --hardware and name hardware in the workers file")
        layer = {"gcn": "gcn", "sage": "sage"}.get(ctx.spec.name)
        if layer is None:
            raise PlannerError(f"dfgl trains a GNN, which {ctx.spec.name} is not", "plan gcn or sage with --scenario dfgl")
        return DfglFamilyOptions(v["workers"], v["graph"], DfglOptions(
            rounds=v["rounds"], degree=v["degree"], r_min=v["r_min"], c_max=v["c_max"], episodes=v["episodes"],
            local_steps=v["local_epochs"], seed=v["seed"], layer=layer, metric=v["metric"],
            target_accuracy=v["target_accuracy"], round_overhead_s=v["round_overhead"]))

    def phases(self) -> Sequence[Phase]:
        from planner.families.dfgl import phases as ph

        return (Phase("inputs", ph.inputs), Phase("lower", ph.lower), Phase("solve", ph.solve),
                Phase("baselines", ph.baselines), Phase("select", ph.select), Phase("oracle", ph.oracle),
                Phase("lift", ph.lift))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.dfgl.views import validate_plan_decisions

        return validate_plan_decisions(dict(plan.decisions))

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.dfgl.views import dfgl_tables

        return dfgl_tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        return ("time_to_target_s", "bytes_to_target", "total_time_s", "total_bytes", "surrogate_final_loss",
                "surrogate_mean_consensus")

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.dfgl.artifact import emit

        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.dfgl.artifact import run

        return run(artifact, values, progress)
