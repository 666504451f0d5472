"""kv-budget emit and run entry points.

Artifact layout:
    plan.json       the plan
    runtime.yaml    the plan's GVote knobs and every baseline's press as runtime records (codegen/kv_budget.py),
                    the per-task kept fractions the receipt predicts bytes from
`run` draws held-out prompts (the plan's workload or --workload, seeded differently from the calibration
sample), runs one configuration (--baseline NAME, default the plan) and returns the receipt.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from core.atomic_io import write_text_atomic
from core.errors import ArtifactError, InputMismatchError, PlannerError, reason_of
from planner.families.base import Progress, RunReport
from planner.flags import FlagValues
from planner.schema import Plan

HELD_OUT_SEED_OFFSET = 1_000_003   # held-out prompts never share the calibration sample's seed


def _weights_of(recorded: str | None) -> str | None:
    """The --weights directory a plan was made with, or None for the catalog or tiny model."""
    return recorded if recorded not in (None, "catalog", "tiny random") else None


def _check_weights(weights: str, fingerprint: str) -> None:
    """The checkpoint directory still holds the files the plan was measured on (one-line error otherwise)."""
    from planner.families.kv_budget.workload import weights_fingerprint

    now = weights_fingerprint(weights)
    if now != fingerprint:
        raise InputMismatchError(f"the checkpoint in {weights} has changed since the plan ({now}, the plan measured "
                                 f"{fingerprint})", "re-plan with --weights on the current checkpoint")


def emit(plan: Plan, values: FlagValues, staging: Path, progress: Progress) -> str:
    """Write runtime.yaml and plan.json."""
    from codegen.kv_budget import runtime_config
    from planner.registry import plan_model
    from planner.serde import dumps

    weights = _weights_of(plan.inputs.get("weights"))
    if weights is None:
        plan_model(plan)
    else:
        _check_weights(weights, plan.model.fingerprint)
        weights = str(Path(weights).resolve())     # the artifact runs from any directory on this machine
    cfg = runtime_config(plan)
    cfg["weights"] = weights if weights is not None else plan.inputs.get("weights")
    cfg["weights_fingerprint"] = plan.model.fingerprint
    write_text_atomic(staging / "runtime.yaml", yaml.safe_dump(cfg, sort_keys=True))
    write_text_atomic(staging / "plan.json", dumps(plan))
    return f"runtime.yaml ({len(cfg['configs'])} configurations), plan.json"


def run(artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
    """One configuration on held-out prompts through the real model; the receipt compares with the plan."""
    import json

    from planner.families.kv_budget.views import receipt_views
    from planner.families.kv_budget.workload import load_lm, make_requests
    from planner.registry import resolve_model
    from runtime.kv_budget.run import run_config

    try:
        cfg = yaml.safe_load((artifact / "runtime.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ArtifactError(f"{artifact}/runtime.yaml is not readable ({reason_of(exc)})",
                            "re-emit the plan") from exc
    name = values["baseline"] or "plan"
    if name not in cfg["configs"]:
        raise PlannerError(f"{artifact} has no configuration '{name}'",
                           f"use --baseline with one of: {', '.join(k for k in cfg['configs'] if k != 'plan')}")
    spec = resolve_model(cfg["model"])
    weights = _weights_of(cfg.get("weights"))
    if weights is not None:
        _check_weights(weights, str(cfg.get("weights_fingerprint")))
    seed = int(cfg["calibration_seed"]) + HELD_OUT_SEED_OFFSET
    wl = values["workload"].text if values["workload"] is not None else cfg["workload"]
    progress("loading the model")
    lm = load_lm(spec, bool(cfg["tiny"]), weights, int(cfg["calibration_seed"]))
    reqs = make_requests(wl, lm, seed, spec, bool(cfg["tiny"]))
    receipt = run_config(lm.model, reqs, name, cfg["configs"][name], cfg["predicted"][name], float(cfg["token_bytes"]),
                         lm.decode, lm.score, lm.eos_ids, wl, progress)
    return RunReport(receipt.to_json(), receipt_views(json.loads(receipt.to_json())))
