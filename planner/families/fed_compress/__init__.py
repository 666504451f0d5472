"""The fed-compress family (Caesar): per device and round of a federation, the download and upload
compression ratios (fractions of values kept) and the batch size, re-planned every round from the
devices' staleness and data importance; run on Flower. Design notes: docs/fed-compress.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.errors import PlannerError
from planner.families.base import Family, Phase, PlanContext, Progress, RunReport, require_population
from planner.flags import Flag, FlagValues


@dataclass(frozen=True)
class FedCompressFamilyOptions:
    """The population spec, the lowering options and the calibration file's record (if any)."""

    clients: str
    lowering: Any
    calibration_record: dict[str, str] | None = None
    convergence: dict[str, Any] | None = None      # rounds to target per configuration (convergence_record.py)


def _ratio(name: str, default: float, what: str) -> Flag:
    return Flag(name, "float", f"{what}: fraction of values kept, in (0, 1] (1 = uncompressed)", default=default,
                minimum=0.0, minimum_exclusive=True, maximum=1.0)


class FedCompressFamily(Family):
    """Federated training with per-device compression both ways over a heterogeneous client population."""

    name = "fed-compress"
    method = "Caesar"
    description = "per-device download/upload compression ratios and batch sizes for federated training"
    objective_metric = "traffic_bytes_per_round"
    objective_sense = "min"
    claim_hint = "--clients FILE|gen:N --scenario fed-compress for compressed federated training"
    metric_labels = {"traffic_to_target_bytes": "B to target", "traffic_bytes_per_round": "B/round", "round_time_s": "round s", "samples_per_s": "samples/s",
                     "mean_download_ratio": "down", "mean_upload_ratio": "up"}
    plan_flags = (
        Flag("--clients", "str", "client population: a YAML file or gen:N[:SEED]"),
        Flag("--rounds", "int", "federated rounds the emitted run performs", default=20, minimum=1),
        Flag("--participation", "percent", "share of clients selected every round (e.g. 20%)", default=0.2,
             minimum=0.0, minimum_exclusive=True, maximum=1.0),
        Flag("--alpha", "float", "Dirichlet concentration of the label split (smaller = more skewed)", default=0.3,
             minimum=0.0, minimum_exclusive=True),
        Flag("--seed", "int", "seed of the data split, the participation draw and the initial model", default=0,
             minimum=0),
        Flag("--local-steps", "int", "local steps per round", default=20, minimum=1),
        Flag("--client-lr", "float", "clients' SGD learning rate", default=0.1, minimum=0.0, minimum_exclusive=True),
        Flag("--batch-min", "int", "smallest batch a device may get", default=8, minimum=1),
        Flag("--batch-max", "int", "largest batch a device may get", default=64, minimum=1),
        Flag("--batch-method", "choice", "batch sizes: convex program, the T* rule, exact sweep, or fixed",
             default="convex", choices=("convex", "rule", "sweep", "fixed")),
        _ratio("--min-download-ratio", 0.5, "least a download keeps exactly (Caesar's 1 - theta_d_max)"),
        _ratio("--min-upload-ratio", 0.5, "least an upload keeps (for the least important device)"),
        _ratio("--max-upload-ratio", 0.9, "most an upload keeps (for the most important device)"),
        Flag("--ratio-step", "float", "grid step of the download ratio", default=0.05, minimum=0.0,
             minimum_exclusive=True, maximum=1.0),
        Flag("--down-budget", "bytes", "downlink budget per round (budgeted download mode; default: rule mode)"),
        Flag("--round-overhead", "duration", "fixed per-round overhead of every client (e.g. 20ms)", default=0.02,
             minimum=0.0),
        Flag("--calibration", "path", "step times measured by `planner calibrate digits-cnn --scenario fed-compress`"),
        Flag("--convergence", "path", "rounds to target per configuration, measured on other seeds "
             "(build/bench/fed_compress_convergence.json from `python -m benchmarks.fed_compress`); the plan recommends the least traffic to target"),
    )
    run_flags = (
        Flag("--deploy", "switch", "run through Flower's deployment engine: SuperLink + one SuperNode per client "
             "on loopback, started and stopped by this command"),
        Flag("--rounds", "int", "federated rounds (default: the artifact's)", minimum=1),
        Flag("--baseline", "str", "run this configuration instead of the recommended one (a baseline's name, "
             "or 'plan' for Caesar's rule)"),
        Flag("--dropout", "percent", "chance that a scheduled client fails mid-round (emulated, seeded)",
             minimum=0.0, maximum=1.0),
        Flag("--target-accuracy", "percent", "report the traffic until the held-out accuracy first reaches this",
             minimum=0.0, maximum=1.0),
        Flag("--emulate-wall-clock", "switch", "clients sleep so rounds last their emulated device time"),
    )

    def claim(self, ctx: PlanContext) -> str | None:
        given = ctx.request.flags.given
        if "--clients" not in given:
            return None
        own = {f.name for f in self.plan_flags} - {"--clients", "--rounds", "--seed", "--local-steps",
                                                    "--round-overhead", "--calibration", "--convergence"}
        if given & own:
            return "--clients with compression options: compressed federated training"
        if ctx.spec.kind == "digits-cnn":
            return "--clients with the CNN digits-cnn: compressed federated training"
        return None

    def options(self, ctx: PlanContext) -> Any:
        from planner.families.fed_compress.calibration import read_calibration
        from planner.families.fed_compress.lowering import FedCompressOptions

        v = ctx.request.flags
        require_population(ctx, "fed-compress")
        if ctx.spec.kind != "digits-cnn":
            raise PlannerError(f"fed-compress trains on scikit-learn digits, which {ctx.spec.name} does not take",
                               "plan digits-cnn with --scenario fed-compress")
        calibration, record = None, None
        if v["calibration"] is not None:
            calibration, record = read_calibration(Path(v["calibration"]), ctx.spec, ctx.request.tiny)
        low = FedCompressOptions(
            rounds=v["rounds"], participation=v["participation"], alpha=v["alpha"], seed=v["seed"],
            local_iters=v["local_steps"], lr=v["client_lr"], batch_min=v["batch_min"], batch_max=v["batch_max"],
            round_overhead_s=v["round_overhead"], min_download_ratio=v["min_download_ratio"],
            min_upload_ratio=v["min_upload_ratio"], max_upload_ratio=v["max_upload_ratio"],
            ratio_step=v["ratio_step"], batch_method=v["batch_method"], down_budget_bytes=v["down_budget"],
            calibration=calibration)
        low.check()
        convergence = None
        if v["convergence"] is not None:
            from planner.families.fed_compress.convergence_record import read_convergence

            convergence = read_convergence(Path(v["convergence"]), low)
        return FedCompressFamilyOptions(clients=v["clients"], lowering=low, calibration_record=record,
                                        convergence=convergence)

    def calibrate(self, spec: Any, tiny: bool) -> dict[str, Any]:
        """One SGD step at three batch sizes on this CPU (one thread), and this CPU's FLOP/s."""
        from planner.families.fed_compress.calibration import measure

        return measure(spec, tiny)

    def phases(self) -> Sequence[Phase]:
        from planner.families.fed_compress import phases as ph

        return (Phase("population", ph.population), Phase("profile", ph.profile), Phase("lower", ph.lower),
                Phase("solve", ph.solve), Phase("baselines", ph.baselines), Phase("bound", ph.bound),
                Phase("lift", ph.lift))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.fed_compress.lowering import validate_plan_decisions

        return validate_plan_decisions(dict(plan.decisions), dict(plan.predicted), dict(plan.constraints),
                                       {k: {"decisions": dict(b.decisions), "predicted": dict(b.predicted)}
                                        for k, b in plan.baselines.items()})

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.fed_compress.views import fed_compress_tables

        return fed_compress_tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        if wide:
            return ("traffic_to_target_bytes", "rounds_to_target", "traffic_bytes_per_round", "round_time_s",
                    "samples_per_s", "mean_download_ratio", "mean_upload_ratio", "feasible")
        # at 80 columns: what each row moves to the target and per round, and what it keeps for it (times: --wide)
        return ("traffic_to_target_bytes", "traffic_bytes_per_round", "mean_download_ratio", "mean_upload_ratio")

    def plot(self, plan: Any) -> Any:
        from planner.families.fed_compress.views import traffic_plot

        return traffic_plot(plan)

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.fed_compress.artifact import emit

        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.fed_compress.artifact import run

        return run(artifact, values, progress)
