"""moe-offload calibration: decode-step timings of the tiny model measured on this CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import PlannerError
from planner.calibration import read_calibration as read_file


def measure(spec: Any, tiny: bool) -> dict[str, Any]:
    """Time the tiny model's decode step through the split-expert path (profilers.timing)."""
    if not tiny:
        raise PlannerError("moe-offload calibration times the model on this CPU, and only tiny models run here",
                           "add --tiny (full-size plans use the hardware profile; `planner hardware measure` makes one)")
    from profilers.models import build_model
    from profilers.timing import calibrate_moe_decode

    t = calibrate_moe_decode(build_model(spec, tiny=True).module)
    return {"attention_s": [float(x) for x in t["attention_s"]], "expert_s": float(t["expert_s"]),
            "other_s": float(t["other_s"]), "step_s": float(t["step_s"]), "source": str(t["source"])}


def read_calibration(path: Path, spec: Any, tiny: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """(timing for the lowering, the plan's record of the file)."""
    measured, record = read_file(path, "moe-offload", spec, tiny)
    try:
        timing = {"attention_s": [float(x) for x in measured["attention_s"]], "expert_s": float(measured["expert_s"]),
                  "other_s": float(measured["other_s"]),
                  "source": f"{measured.get('source', 'measured')} (calibration {record['sha256']})"}
    except (KeyError, TypeError, ValueError) as exc:
        raise PlannerError(f"--calibration {path} lacks the moe-offload timings ({exc})",
                           "re-create it with `planner calibrate MODEL --tiny`") from exc
    if min(timing["attention_s"] + [timing["expert_s"], timing["other_s"]]) < 0:
        raise PlannerError(f"--calibration {path} holds negative times", "re-create it with `planner calibrate`")
    return timing, record
