"""kv-budget codegen: the plan's configurations as runtime press records (decisions applied, none made).

`runtime_config(plan)` lists the plan's GVote knobs and every baseline's press and ratio, plus the per-task kept
fractions the receipt predicts bytes from, as plain data for `runtime/kv_budget/run.py`:

    cfg = runtime_config(plan)
    cfg["configs"]["plan"]  -> {"kind": "gvote", "p_nuc": 0.95, "n_samples": 16, "n_sink": 4, "window": 32, ...}
"""
from __future__ import annotations

from typing import Any

from planner.schema import Plan

CONFIG_FORMAT = 1


def method_record(knobs: dict[str, Any]) -> dict[str, Any]:
    """A plan's knobs -> the runtime's method record (same keys the runtime's `keep_masks` reads)."""
    m = knobs["method"]
    if m == "full":
        return {"kind": "full"}
    if m == "gvote":
        return {"kind": "gvote", "p_nuc": float(knobs["p_nuc"]), "n_samples": int(knobs["n_samples"]),
                "n_sink": int(knobs["n_sink"]), "window": int(knobs["window"]), "seed": int(knobs["seed"]),
                "cap_fraction": None if knobs.get("cap_fraction") is None else float(knobs["cap_fraction"]),
                "budget": str(knobs.get("budget", "top")), "anchors": int(knobs.get("anchors", 0)),
                "span": int(knobs.get("span", 0))}
    return {"kind": "press", "press": str(m), "ratio": float(knobs["ratio"])}


def runtime_config(plan: Plan) -> dict[str, Any]:
    """The runtime's YAML record: configurations by name and what the plan predicts for each."""
    configs = {"plan": method_record(plan.decisions["knobs"])}
    predicted = {"plan": dict(plan.predicted)}
    for name, b in sorted(plan.baselines.items()):
        if b.decisions.get("knobs"):
            configs[name] = method_record(dict(b.decisions["knobs"]))
            predicted[name] = dict(b.predicted)
    return {"format": CONFIG_FORMAT, "model": plan.model.name, "tiny": bool(plan.model.tiny),
            "workload": plan.decisions["workload"], "calibration_seed": int(plan.decisions["calibration_seed"]),
            "token_bytes": float(plan.decisions["token_bytes"]), "configs": configs,
            "predicted": {k: {"kept_fraction": float(v["kept_fraction"]),
                              "kept_fraction_by_task": dict(v["kept_fraction_by_task"]),
                              "accuracy": float(v["accuracy"]), "mean_kv_bytes": float(v["mean_kv_bytes"]),
                              "accuracy_stderr": float(v.get("accuracy_stderr", 0.0)),
                              "calibration_prompts": int(v.get("calibration_prompts", 0))}
                          for k, v in predicted.items()}}
