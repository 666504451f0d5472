"""The fed-graph family (FedGCF): structural client clusters, the common-feature client set U and the fusion
ratio beta chosen per cluster by a UCB1 bandit; run on Flower with a PyG GCN. Design notes: docs/fed-graph.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.errors import PlannerError
from solvers.fed_graph.problem import DEFAULT_ARMS, DEFAULT_UCB_C
from planner.families.base import Family, Phase, PlanContext, Progress, RunReport
from planner.flags import Flag, FlagValues


@dataclass(frozen=True)
class FedGraphFamilyOptions:
    """The population spec and the lowering options."""

    clients: str
    lowering: Any


def parse_arms(text: str) -> tuple[float, ...]:
    """`0,0.25,0.5,1` or `0..1:0.1` (start..stop:step) -> sorted distinct arms in [0, 1]; one-line errors."""
    text = text.strip()
    try:
        if ".." in text:
            span, _, step = text.partition(":")
            lo, hi = (float(v) for v in span.split(".."))
            st = float(step or 0.1)
            if st <= 0:
                raise ValueError
            n = int(round((hi - lo) / st))
            arms = [round(lo + i * st, 6) for i in range(n + 1)]
        else:
            arms = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PlannerError(f"--beta-grid '{text}' is not a list of numbers", "write e.g. 0,0.5,1 or 0..1:0.1") from None
    if not arms:
        raise PlannerError("--beta-grid is empty", "write e.g. 0,0.5,1 or 0..1:0.1")
    bad = [a for a in arms if not 0.0 <= a <= 1.0]
    if bad:
        raise PlannerError(f"--beta-grid '{text}' has arms outside [0, 1] ({', '.join(f'{b:g}' for b in bad[:3])})",
                           "beta is a fusion ratio: keep every arm between 0 and 1")
    return tuple(sorted(set(arms)))


class FedGraphFamily(Family):
    """Federated graph learning with structural clusters, a common node-feature model and their fusion ratio."""

    name = "fed-graph"
    method = "FedGCF"
    description = "structural client clusters, common-feature client set and the fusion ratio beta (UCB1 bandit)"
    objective_metric = "bytes_to_target"
    objective_sense = "min"
    claim_hint = "--clients FILE --graph csbm-clients:... --scenario fed-graph for federated graph learning"
    metric_labels = {"bytes_to_target": "B to target", "bytes_per_round": "B/round",
                     "pilot_rounds_to_target": "rounds*", "pilot_final_val_accuracy": "val acc*"}
    plan_flags = (
        Flag("--clients", "str", "client population: a YAML file or gen:N[:SEED]"),
        Flag("--graph", "str", "graph test bed and its split, e.g. csbm:nodes=8000,workers=8"),
        Flag("--rounds", "int", "training rounds the plan schedules", default=20, minimum=1),
        Flag("--clusters", "int", "structural clusters k (default: cut the agglomeration at --similarity)", minimum=1),
        Flag("--similarity", "float", "structural clustering threshold: merge while the average cosine similarity "
             "is at least this", default=0.9, minimum=-1.0, maximum=1.0),
        Flag("--delta", "float", "feature-graph link threshold (cosine similarity; default: the median pair)",
             minimum=-1.0, maximum=1.0),
        Flag("--beta-grid", "str", "the bandit's beta arms, e.g. 0..1:0.1 or 0,0.5,1 (each in [0, 1]; default 0,0.5,1)"),
        Flag("--ucb-c", "float", "UCB1 exploration constant (rewards are validation-accuracy gains, ~0.01-0.05)", default=DEFAULT_UCB_C,
             minimum=0.0),
        Flag("--prior-count", "float", "pseudo-observations of the pilot's prior per arm (0: plain UCB1)", default=1.0,
             minimum=0.0),
        Flag("--local-epochs", "int", "local full-batch GNN steps per round", default=5, minimum=1),
        Flag("--fed-lr", "float", "clients' Adam learning rate", default=0.01, minimum=0.0, minimum_exclusive=True),
        Flag("--accuracy-target", "percent", "validation accuracy the bytes-to-target objective counts to "
             "(default: 98 % of FedAvg's best pilot accuracy)", minimum=0.0, maximum=1.0),
        Flag("--seed", "int", "seed of the graph, the agent and the models", default=0, minimum=0),
    )
    run_flags = (
        Flag("--deploy", "switch", "run through Flower's deployment engine: SuperLink + one SuperNode per client "
             "on loopback, started and stopped by this command"),
        Flag("--baseline", "str", "run a baseline's configuration from the plan (e.g. fedavg, beta_1, gcfl)"),
        Flag("--rounds", "int", "federated rounds (default: the artifact's)", minimum=1),
        Flag("--in-process", "switch", "drive the Flower apps in this process (no Ray, no gRPC; fast)"),
    )

    def claim(self, ctx: PlanContext) -> str | None:
        given = ctx.request.flags.given
        if "--clients" in given and "--graph" in given:
            return "--clients with --graph: federated graph learning"
        return None

    def options(self, ctx: PlanContext) -> Any:
        from planner.families.fed_graph.lowering import FedGraphOptions

        v = ctx.request.flags
        if not v["clients"] or not v["graph"]:
            raise PlannerError("fed-graph plans need a client population and a graph",
                               "pass --clients FILE|gen:N and --graph csbm-clients:groups=3,clients=N")
        if ctx.hardware is not None:
            raise PlannerError("--hardware does not apply to fed-graph plans: every client's hardware comes from "
                               "--clients", "drop --hardware")
        if ctx.spec.name != "gcn":
            raise PlannerError(f"fed-graph trains a GCN, which {ctx.spec.name} is not", "plan gcn with --scenario fed-graph")
        arms = parse_arms(v["beta_grid"]) if v["beta_grid"] else DEFAULT_ARMS
        return FedGraphFamilyOptions(v["clients"], FedGraphOptions(
            graph=v["graph"], rounds=v["rounds"], k=v["clusters"], threshold=v["similarity"], delta=v["delta"],
            arms=arms, ucb_c=v["ucb_c"], prior_count=v["prior_count"], local_steps=v["local_epochs"], lr=v["fed_lr"],
            target_accuracy=v["accuracy_target"], seed=v["seed"]))

    def phases(self) -> Sequence[Phase]:
        from planner.families.fed_graph import phases as ph

        return (Phase("inputs", ph.inputs), Phase("lower", ph.lower), Phase("solve", ph.solve), Phase("lift", ph.lift))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.fed_graph.views import validate_plan_decisions

        return validate_plan_decisions(dict(plan.decisions))

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.fed_graph.views import fed_graph_tables

        return fed_graph_tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        return ("bytes_to_target", "bytes_per_round", "pilot_rounds_to_target", "pilot_final_val_accuracy")

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.fed_graph.artifact import emit

        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.fed_graph.artifact import run

        return run(artifact, values, progress)
