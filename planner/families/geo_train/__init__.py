"""The geo-train family (CoCoDC): language-model training across regions joined by a WAN. The plan picks
the fragments (layer groups), the sends per window, the slot and the in-flight delay so every fragment
sync hides behind compute where the WAN allows; the run is CoCoDC on torchft's DiLoCo, one process per
region. Design notes: docs/geo-train.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.errors import PlannerError
from planner.families.base import Family, Phase, PlanContext, Progress, RunReport
from planner.flags import Flag, FlagValues


@dataclass(frozen=True)
class GeoTrainOptions:
    """Typed plan options."""

    regions: str
    data: str
    inner_steps: int
    fragments: int | None
    sends: int | None
    max_fragments: int
    max_exposed: float
    lam0: float
    kappa: float | None
    merge: str
    slot_overhead_s: float
    steps: int
    batch: int
    seq_len: int
    seed: int


class GeoTrainFamily(Family):
    """Cross-region training with delay-compensated, adaptively scheduled fragment sync."""

    name = "geo-train"
    method = "CoCoDC"
    description = "fragments, sends per window and in-flight delay for cross-region LM training over a WAN"
    objective_metric = "step_time_s"
    objective_sense = "min"
    claim_hint = "--regions FILE --scenario geo-train for cross-region training"
    metric_labels = {"step_time_s": "step s", "exposed_comm_s_per_step": "exposed s/step",
                     "hidden_comm_s_per_step": "hidden s/step", "payload_bytes_per_step": "B/step"}
    plan_flags = (
        Flag("--regions", "path", "regions.yaml: regions with hardware and the WAN between them (rate, RTT)"),
        Flag("--data", "str", "training data: corpus:by-source (stdlib docstrings, one source per region, byte tokens) "
             "or synthetic:by-source[:SOURCES]", default="corpus:by-source"),
        Flag("--inner-steps", "int", "H: inner steps per window (every fragment is synced at least once per window)",
             default=32, minimum=2),
        Flag("--fragments", "int", "P: fix the number of fragments (layer groups); default: the planner's choice",
             minimum=1),
        Flag("--sends", "int", "N: fix the sends per window (H must be a multiple); default: the planner's choice",
             minimum=1),
        Flag("--max-fragments", "int", "largest P the planner tries", default=8, minimum=1),
        Flag("--max-exposed", "percent", "exposed communication allowed, as a share of the compute step", default=0.05,
             minimum=0.0, maximum=10.0),
        Flag("--lambda0", "float", "CoCoDC's compensation strength lambda0 (mean share of the global change the "
             "Taylor term takes back)", default=1.0, minimum=0.0),
        Flag("--kappa", "float", "CoCoDC's curvature scale kappa (default: auto, the fragment's mean of g1*g1)",
             minimum=0.0, minimum_exclusive=True),
        Flag("--merge", "choice", "auto: CoCoDC's Taylor merge only where measured to beat Streaming DiLoCo, else "
             "torchft's Streaming DiLoCo; taylor / alpha-blend force one", default="auto",
             choices=("auto", "taylor", "alpha-blend")),
        Flag("--slot-overhead", "duration", "fixed cost per slot outside the data plane (torchft quorum + commit RPCs)",
             default=0.0, minimum=0.0),
        Flag("--steps", "int", "inner steps the emitted run trains", default=192, minimum=1),
        Flag("--train-batch", "int", "sequences per inner step and region", default=8, minimum=1),
        Flag("--seq-len", "int", "sequence length in tokens (default: 64)", minimum=1),
        Flag("--seed", "int", "seed of the model init and the data", default=0, minimum=0),
    )
    run_flags = (
        Flag("--baseline", "str", "run a baseline's configuration from the plan (e.g. streaming_diloco)"),
        Flag("--steps", "int", "inner steps (default: the artifact's)", minimum=1),
        Flag("--time-limit", "duration", "stop every region after this long", default=900.0, minimum=1.0),
    )

    def claim(self, ctx: PlanContext) -> str | None:
        if "--regions" in ctx.request.flags.given:
            return "--regions: training across regions over a WAN"
        return None

    def options(self, ctx: PlanContext) -> Any:
        v = ctx.request.flags
        if not v["regions"]:
            raise PlannerError("geo-train plans need the regions and their WAN", "pass --regions regions.yaml")
        if ctx.hardware is not None:
            raise PlannerError("--hardware does not apply to geo-train plans: each region names its hardware",
                               "drop --hardware and set 'hardware:' per region in the --regions file")
        from planner.families.geo_train.data_spec import parse_data

        parse_data(v["data"])
        if v["sends"] is not None and v["inner_steps"] % v["sends"]:
            raise PlannerError(f"--inner-steps {v['inner_steps']} is not a multiple of --sends {v['sends']}",
                               "choose N that divides H (e.g. --sends "
                               f"{max(d for d in range(1, v['inner_steps'] + 1) if v['inner_steps'] % d == 0 and d <= v['sends'])})")
        return GeoTrainOptions(regions=v["regions"], data=v["data"], inner_steps=v["inner_steps"],
                               fragments=v["fragments"], sends=v["sends"], max_fragments=v["max_fragments"],
                               max_exposed=v["max_exposed"], lam0=v["lambda0"], kappa=v["kappa"], merge=v["merge"],
                               slot_overhead_s=v["slot_overhead"], steps=v["steps"], batch=v["train_batch"],
                               seq_len=v["seq_len"] or 64, seed=v["seed"])

    def phases(self) -> Sequence[Phase]:
        from planner.families.geo_train import phases as ph

        return (Phase("regions", ph.regions), Phase("lower", ph.lower), Phase("solve", ph.solve),
                Phase("baselines", ph.baselines), Phase("merge", ph.merge), Phase("lift", ph.lift))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.geo_train.views import validate_plan_json

        return validate_plan_json(plan)

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.geo_train.views import tables

        return tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        return ("step_time_s", "exposed_comm_s_per_step", "hidden_comm_s_per_step", "payload_bytes_per_step")

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.geo_train.artifact import emit

        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.geo_train.artifact import run

        return run(artifact, values, progress)
