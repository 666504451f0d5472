"""The split-inference family (COACH): the edge/cloud cut of the model graph and the transmission bits of
every tensor that crosses the link, plus a plan table over a bandwidth range. Design notes:
docs/split-inference.md.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from planner.families.base import Family, Phase, PlanContext, Progress, RunReport
from planner.flags import Flag, FlagValues


class SplitInferenceFamily(Family):
    """Edge device + cloud server joined by a link."""

    name = "split-inference"
    method = "COACH"
    description = "edge/cloud partition and transmission quantisation"
    objective_metric = "throughput_rps"          # the default objective's; a plan records its own (OBJECTIVES)
    objective_sense = "max"
    claim_hint = "--cloud HW --link RATE for edge/cloud split inference"
    metric_labels = {"objective_ms": "J ms", "period_ms": "period ms", "latency_ms": "lat ms",
                     "throughput_rps": "req/s", "bytes_per_request": "B/req", "accuracy_drop": "acc drop"}
    plan_flags = (
        Flag("--cloud", "str", "cloud hardware (catalog name, <base>_<N>gb or YAML path)", default="a100_80gb"),
        Flag("--link", "rate_range", "uplink rate, or a range for a plan table (e.g. 20mbps, 1mbps..100mbps)",
             default=(20e6, None), minimum=1e3),
        Flag("--rtt", "duration", "round-trip time of the link (e.g. 30ms)", default=0.02, minimum=0.0, maximum=60.0),
        Flag("--epsilon", "percent", "accuracy-loss cap (e.g. 0.5%)", default=0.005, minimum=0.0, maximum=1.0,
             maximum_exclusive=True),
        Flag("--objective", "choice", "what the plan optimises: throughput (requests/s, default), latency (per "
             "request), or coach (COACH's J: bubbles plus period, the paper's objective)",
             choices=("throughput", "latency", "coach"), default="throughput"),
        Flag("--max-latency", "duration", "latency bound per request (e.g. 200ms; default none)", minimum=0.0,
             minimum_exclusive=True),
        Flag("--min-throughput", "float", "throughput floor in requests/s (e.g. 20; default none)", minimum=0.0,
             minimum_exclusive=True),
        Flag("--table-levels", "int", "rows of the plan table over a --link range", default=16, minimum=2, maximum=64),
        Flag("--calibration", "path", "per-node CPU times measured by `planner calibrate MODEL --scenario split-inference`"),
        Flag("--speed-spread", "float", "how far each side's compute speed may drift from its profile or calibration, "
             "as a factor (e.g. 2: from 2x slower to 2x faster, on shared or throttled hosts); the plan takes the "
             "candidate cut with the least worst-case regret over that range (default: the calibration's own "
             "spread)", minimum=1.0),
    )
    emit_flags = (
        Flag("--seed", "int", "seed of the tiny model's weights", default=0, minimum=0),
        Flag("--requests", "int", "seeded requests recorded for models without real data", default=32, minimum=1),
        Flag("--semantic-cache", "choice", "fit the semantic cache of classifiers (default) or skip it: a faster emit "
             "whose artifact refuses `planner run --cache on`", default="fit", choices=("fit", "skip")),
    )
    run_flags = (
        Flag("--role", "choice", "one side only: cloud (serve) or edge (drive the requests); default both, as two "
             "local processes", choices=("cloud", "edge")),
        Flag("--listen", "str", "cloud: HOST:PORT to listen on", default="127.0.0.1:50551"),
        Flag("--connect", "str", "edge: the cloud's HOST:PORT"),
        Flag("--baseline", "str", "run a baseline's configuration from the plan (e.g. neurosurgeon)"),
        Flag("--requests", "int", "requests to drive (default: the artifact's stream)", minimum=1),
        Flag("--max-in-flight", "int", "requests between the edge and their answer (pipeline depth)", default=3, minimum=1),
        Flag("--cache", "choice", "semantic-cache early answers at the edge (default: runtime.yaml, off)", choices=("on", "off")),
        Flag("--adapt", "choice", "plan-table switching on the measured link (default: on with a table)",
             choices=("on", "off")),
        Flag("--no-emulate", "switch", "do not pad the edge stage to the edge profile's predicted time"),
        Flag("--emulate-cloud", "switch", "cloud: pad each request's cloud stage to the plan's predicted time"),
        Flag("--emulate-delay", "duration", "one-way propagation delay emulated in the transport, each direction "
             "(e.g. 15ms for a 30 ms RTT; labelled emulation for kernels without netem; both roles need it)",
             minimum=0.0, maximum=10.0),
        Flag("--timeout", "duration", "give up on a cloud that does not answer for this long (e.g. 30s)", default=30.0,
             minimum=0.0, minimum_exclusive=True),
        Flag("--link-label", "str", "what carries the bytes, for the receipt (e.g. 'Wi-Fi, 20 Mbit/s')"),
    )

    def claim(self, ctx: PlanContext) -> str | None:
        given = ctx.request.flags.given
        if "--cloud" in given or "--link" in given:
            return "--cloud/--link given: edge/cloud split inference"
        return None

    def options(self, ctx: PlanContext) -> Any:
        from planner.families.split_inference.lowering import SplitOptions
        from planner.registry import resolve_hardware

        v = ctx.request.flags
        ctx.require_hardware()
        rate, rng = v["link"]
        cloud = resolve_hardware(v["cloud"], flag="--cloud")
        calibration, record = None, None
        if v["calibration"] is not None:
            from planner.families.split_inference.calibration import read_calibration

            calibration, record = read_calibration(Path(v["calibration"]), ctx.spec, ctx.request.tiny)
        return SplitOptions(cloud=v["cloud"], link_bits_per_s=rate, link_range_bits_per_s=rng, rtt_s=v["rtt"],
                            epsilon=v["epsilon"], objective=v["objective"],
                            t_max_s=v["max_latency"] if v["max_latency"] is not None else math.inf,
                            period_max_s=1.0 / v["min_throughput"] if v["min_throughput"] is not None else math.inf,
                            table_levels=v["table_levels"], calibration=calibration, calibration_record=record,
                            cloud_profile=cloud, speed_spread=v["speed_spread"])

    calibration_clocks = ("wall", "cpu")

    def calibrate(self, spec: Any, tiny: bool, clock: str = "wall") -> dict[str, Any]:
        """Per-node times of the model's graph on this CPU, with this CPU's measured constants; `clock` "cpu" takes
        them in thread CPU time (a core of its own) instead of wall time."""
        from planner.families.split_inference.calibration import measure

        return measure(spec, tiny, clock)

    def rescale_calibration(self, spec: Any, tiny: bool, old: dict[str, Any], old_sha256: str) -> dict[str, Any]:
        """OLD's host-time figures x this host's speed now over OLD's (one whole forward re-timed), its spread widened
        by that drift (calibration.rescale)."""
        from planner.families.split_inference.calibration import rescale

        return rescale(spec, tiny, old, old_sha256)

    def phases(self) -> Sequence[Phase]:
        from planner.families.split_inference import phases as ph

        return (Phase("profile", ph.profile), Phase("lower", ph.lower), Phase("solve", ph.solve),
                Phase("baselines", ph.baselines), Phase("robust", ph.robust), Phase("bound", ph.bound),
                Phase("lift", ph.lift))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.split_inference.lowering import validate_plan_decisions

        return validate_plan_decisions(dict(plan.decisions), dict(plan.predicted))

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.split_inference.views import split_tables

        return split_tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        """The chosen objective's figure first, the other two beside it."""
        from planner.families.split_inference.views import objective_columns

        cols = objective_columns(plan)
        if wide:
            return (*cols, "period_ms", "bytes_per_request", "accuracy_drop")
        return (*cols, "accuracy_drop")

    def plot(self, plan: Any) -> Any:
        from planner.families.split_inference.views import timeline_plot

        return timeline_plot(plan)

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.split_inference.artifact import emit

        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.split_inference.artifact import run

        return run(artifact, values, progress)
