"""fed-compress emit and run entry points.

Artifact layout:
    plan.json                 the plan
    model/digits-cnn.pt2      the untrained model every client starts from (torch.export program, seeded)
    jobs/<config>.json        one runtime job per configuration (plan and every baseline): population with
                              links and FLOP/s, per-round schedule of kept fractions and batches with the
                              plan's predicted bytes and times, codec, training settings, data split
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.artifacts import read_job
from core.atomic_io import write_text_atomic
from planner.families.base import Progress, RunReport
from planner.flags import FlagValues
from planner.schema import Plan

MODEL_FILE = "model/digits-cnn.pt2"


def emit(plan: Plan, values: FlagValues, staging: Path, progress: Progress) -> str:
    """Export the seeded initial model and write one job per configuration."""
    from codegen.fed_compress import export_model, job_for
    from planner.families.fed_compress.calibration import initial_model
    from planner.registry import plan_model
    from planner.serde import dumps

    spec = plan_model(plan)
    seed = int(plan.inputs.get("seed", 0))
    progress("exporting the initial model")
    model, example = initial_model(spec, seed)
    export_model(model, staging / MODEL_FILE, example)
    progress("writing the runtime jobs")
    d = plan.decisions
    configs = {"plan": d, **{name: b.decisions for name, b in sorted(plan.baselines.items())}}
    for name, cfg in configs.items():
        write_text_atomic(staging / "jobs" / f"{name}.json",
                          json.dumps(job_for(d, cfg, name, seed), sort_keys=True, indent=1) + "\n")
    write_text_atomic(staging / "plan.json", dumps(plan))
    return f"{MODEL_FILE}, jobs/ ({len(configs)} configurations), plan.json"


def recommended_config(artifact: Path) -> str:
    """The configuration the plan recommends (its `decisions.recommended`: Caesar's rule, "plan", or the baseline
    predicted to reach the target with less traffic); "plan" for artifacts emitted before the recommendation."""
    try:
        plan = json.loads((artifact / "plan.json").read_text(encoding="utf-8"))
        name = plan["decisions"].get("recommended", "plan")
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return "plan"
    return name if isinstance(name, str) else "plan"


def run(artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
    """Run one configuration on Flower (simulation, or --deploy on loopback) and show the receipt."""
    from profilers.training_timing import cpu_flops_per_s
    from runtime.fed.compress_run import run_fed_compress, truncated, with_dropouts, with_emulation

    job = read_job(artifact, values["baseline"] or recommended_config(artifact))
    if values["deploy"]:
        from runtime.fed.federation import check_local_deployment

        check_local_deployment(len(job["clients"]))
    progress("measuring this CPU for the device emulation")
    job = with_emulation(job, cpu_flops_per_s())
    if values["rounds"]:
        job = truncated(job, int(values["rounds"]))
    if values["dropout"]:
        job = with_dropouts(job, float(values["dropout"]), int(job["seed"]))
    job["emulate_wall_clock"] = bool(values["emulate_wall_clock"])
    mode = "deploy" if values["deploy"] else "simulation"
    progress(f"federated training ({mode}, {len(job['rounds'])} rounds, {len(job['clients'])} clients)")

    def on_round(rec: dict[str, Any]) -> None:
        progress(f"round {rec['round']}: accuracy {rec.get('accuracy', 0.0):.3f}")

    import shutil

    from runtime.fed.federation import kept_run_directory

    work = kept_run_directory("planner-fed-compress-")   # logs and rounds: nothing in the artifact; kept on failure
    receipt = run_fed_compress(job, artifact / MODEL_FILE, work, mode=mode, on_round=on_round,
                               target_accuracy=values["target_accuracy"])
    shutil.rmtree(work, ignore_errors=True)
    rec = json.loads(receipt.to_json())
    from planner.families.fed_compress.views import receipt_views

    return RunReport(receipt.to_json(), receipt_views(rec, bool(values.get("wide", False))))
