"""The planner as functions, with the command line's own arguments and checks (for examples,
benchmarks and tests): what `planner plan|emit|run` does, minus the printing.

    ctx = plan_from_argv(["mixtral-8x7b", "--hardware", "a100_24gb", "--sim-tokens", "256"])
    art = emit_artifact(ctx.plan, Path("build/tiny"))
    report = run_artifact(art, ["--max-new-tokens", "16"])
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from core.errors import PlannerError
from planner.families.base import PlanContext, PlanRequest, Progress, RunReport
from planner.schema import Plan


def _parse(command: str, argv: Sequence[str]) -> object:
    from planner.cli import build_parser

    return build_parser().parse_args([command, *argv])


def request_from_argv(argv: Sequence[str]) -> PlanRequest:
    """The PlanRequest `planner plan ARGV` would make."""
    from planner.cli import _read_family_flags

    args = _parse("plan", argv)
    return PlanRequest(args.model, args.hardware, args.scenario, args.tiny, args.record_timing,
                       _read_family_flags(args, "plan"))


def plan_from_argv(argv: Sequence[str], progress: Progress | None = None) -> PlanContext:
    """Plan as `planner plan ARGV` does (ctx.plan is the result)."""
    from planner.cli import _owners
    from planner.pipeline import plan

    return plan(request_from_argv(argv), on_phase=progress, family_flags=_owners("plan"))


def emit_artifact(plan_obj: Plan, out_dir: Path, argv: Sequence[str] = (), force: bool = False,
                  progress: Progress = lambda text: None) -> Path:
    """Write the plan's artifact directory (the output-path rule applies: only a previous artifact is replaced)."""
    from core.artifacts import sha256_file, write_manifest
    from core.atomic_io import make_staging_dir
    from core.output_paths import OutputDir
    from planner.cli import _check_foreign, family_values
    from planner.pipeline import require_valid
    from planner.registry import family

    require_valid(plan_obj, "the plan")
    fam = family(plan_obj.family)
    if not fam.can_emit:
        raise PlannerError(f"`planner emit` is not available for {fam.name} plans yet", "inspect the plan instead")
    values = family_values("emit", argv)
    _check_foreign(values.given, fam, "emit")
    target = OutputDir(Path(out_dir), "-o", sha256_file, force)
    target.check()
    staging = make_staging_dir(target.path)
    try:
        progress(f"{fam.name} emit: writing {target.path}")
        summary = fam.emit(plan_obj, values, staging, progress)
        progress(f"{fam.name} emit: checksumming the files")
        write_manifest(staging, fam.name, {"model": plan_obj.model.name, "model_fingerprint": plan_obj.model.fingerprint,
                                           "tiny": plan_obj.model.tiny, "summary": summary,
                                           "objective": {plan_obj.objective.metric: plan_obj.objective.value}})
        return target.install(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def run_artifact(path: Path, argv: Sequence[str] = (), progress: Progress = lambda text: None,
                 wide: bool = False) -> RunReport:
    """Execute an artifact as `planner run PATH ARGV` does and return its receipt and views."""
    from core.artifacts import read_manifest
    from planner.cli import _check_foreign, family_values
    from planner.registry import family

    manifest = read_manifest(Path(path))
    fam = family(str(manifest.get("family")))
    if not fam.can_run:
        raise PlannerError(f"`planner run` is not available for {fam.name} artifacts yet", "inspect the plan instead")
    values = family_values("run", argv)
    _check_foreign(values.given, fam, "run")
    values.values["wide"] = wide
    progress(f"{fam.name} run: starting {path}")
    return fam.run(Path(path), values, progress)
