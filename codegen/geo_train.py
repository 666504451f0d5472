"""geo-train codegen: the plan's decisions (and each baseline's) as runtime jobs for runtime/geo_train.

A job is what every region process reads: the algorithm (CoCoDC, torchft Streaming DiLoCo, DiLoCo), the
layer groups, H, N, tau, alpha, lambda0, kappa, the emulated WAN and the training settings. Codegen
applies decisions; it chooses nothing.
"""
from __future__ import annotations

from typing import Any, Mapping

# optimiser settings of every configuration alike (DiLoCo's: AdamW inner, Nesterov SGD outer)
INNER_LR = 3e-3
OUTER_LR = 0.7
OUTER_MOMENTUM = 0.9


def job_for(plan: Mapping[str, Any], config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The runtime job of one configuration: `plan` is the plan's decisions, `config` this configuration's."""
    tr = plan["training"]
    groups = [list(f["layers"]) for f in config["fragments"]]
    merge = config.get("merge", "taylor")
    if merge == "blocking":
        algo = {"algorithm": "diloco", "alpha": 0.0}
    elif merge == "alpha-blend":
        algo = {"algorithm": "streaming", "alpha": float(config.get("alpha", 0.5))}
    else:
        algo = {"algorithm": "cocodc", "alpha": 0.0, "adaptive": config["choice"] == "adaptive",
                "compensate": True, "lam0": float(config.get("lam0", plan["lam0"]))}
    mc = dict(plan["model_config"])
    data = tr["data"]
    regions = len(plan["regions"])
    return {
        "name": name, "regions": regions, "seed": int(tr["seed"]), "groups": groups,
        "H": int(config["inner_steps_H"]), "N": int(config["sends_per_window_N"]), "tau": int(config["delay_steps_tau"]),
        "lam0": float(plan["lam0"]), "kappa": 0.0 if plan["kappa"] == "auto" else float(plan["kappa"]),
        "adaptive": True, "compensate": True, "compensation": "bounded",
        **algo,
        "inner_lr": INNER_LR, "outer_lr": OUTER_LR, "outer_momentum": OUTER_MOMENTUM,
        "batch": int(tr["batch"]), "seq_len": int(tr["seq_len"]), "steps": int(tr["steps"]),
        "eval_every": max(1, int(config["inner_steps_H"]) // 2), "timeout_s": 60,
        "wan": {"rate_bps": float(plan["wan"]["rate_bps"]), "rtt_s": float(plan["wan"]["rtt_s"])},
        "data": {"kind": data["kind"], "vocab": int(mc["vocab_size"]), "sources": int(data.get("sources") or regions),
                 "eval_batch": 16},
        "model_config": mc,
    }
