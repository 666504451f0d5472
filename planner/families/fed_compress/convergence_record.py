"""fed-compress convergence records: rounds to a target accuracy per configuration, measured on a decision
sample of seeds (`benchmarks/fed_compress.py`, its decision seeds), read by `planner plan --convergence FILE`.

The record must come from the same test bed as the plan (population size, participation, data split
concentration, local training, ratio ranges); the seeds differ on purpose: a plan decided from seeds A
is scored on held-out seeds B (docs/fed-compress.md, "Choosing a configuration").

Record (JSON):
    {"kind": "fed-compress convergence record", "target_accuracy": 0.8, "seeds": [...],
     "test_bed": {"clients": 100, "participation": 0.05, ...},
     "rounds_to_target": {"plan": 53.0, "uniform_mean": 52.0, ...},   # median over seeds; null = not reached
     "reached": {"plan": 3, ...}}
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from core.errors import PlannerError, reason_of

KIND = "fed-compress convergence record"
# test-bed fields the record and the plan must share (record key -> FedCompressOptions attribute)
MATCHED_FIELDS = {"participation": "participation", "alpha": "alpha", "local_iters": "local_iters", "lr": "lr",
                  "min_download_ratio": "min_download_ratio", "min_upload_ratio": "min_upload_ratio",
                  "max_upload_ratio": "max_upload_ratio", "ratio_step": "ratio_step"}


def read_convergence(path: Path, options: Any) -> dict[str, Any]:
    """The record's rounds to target per configuration (math.inf where the target was not reached), checked
    against the plan's options (the population size is checked once the population is read: `check_clients`);
    one-line errors name the mismatch and the fix."""
    fix = "re-measure it on this test bed with `python -m benchmarks.fed_compress` (build/bench/fed_compress_convergence.json)"
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlannerError(f"--convergence {path} is not readable ({reason_of(exc)})", fix) from exc
    if not isinstance(rec, dict) or rec.get("kind") != KIND or not isinstance(rec.get("rounds_to_target"), dict):
        raise PlannerError(f"--convergence {path} is not a fed-compress convergence record", fix)
    bed = rec.get("test_bed") or {}
    if not isinstance(bed.get("clients"), int):
        raise PlannerError(f"--convergence {path} does not say how many clients it was measured with", fix)
    for key, attr in MATCHED_FIELDS.items():
        want = getattr(options, attr)
        got = bed.get(key)
        if not isinstance(got, (int, float)) or not math.isclose(float(got), float(want), rel_tol=1e-9):
            raise PlannerError(f"--convergence {path} was measured at {key} {got}, the plan has {want:g}", fix)
    rounds = {}
    for name, r in rec["rounds_to_target"].items():
        if r is not None and (not isinstance(r, (int, float)) or r <= 0):
            raise PlannerError(f"--convergence {path}: rounds to target of {name} is {r!r}", fix)
        rounds[str(name)] = math.inf if r is None else float(r)
    if "plan" not in rounds:
        raise PlannerError(f"--convergence {path} has no rounds to target for Caesar's plan", fix)
    return {"rounds_to_target": rounds, "target_accuracy": rec.get("target_accuracy"), "clients": bed["clients"],
            "seeds": list(rec.get("seeds", [])), "source": str(path)}


def check_clients(record: dict[str, Any], num_clients: int) -> None:
    """The record must come from a population of the plan's size."""
    if int(record["clients"]) != num_clients:
        raise PlannerError(f"--convergence {record['source']} was measured with {record['clients']} clients, the "
                           f"plan has {num_clients}",
                           "re-measure it on this test bed with `python -m benchmarks.fed_compress` (build/bench/fed_compress_convergence.json)")
