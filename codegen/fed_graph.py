"""fed-graph codegen: the graph split as arrays and one Flower job per configuration (the plan's and every
baseline's). Codegen applies decisions: the cluster map, the common set U and the beta settings go into the job
by client index, as the plan chose them.

    job = job_for(plan.decisions, plan.decisions["configs"]["fedgcf"], predicted={...})
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

JOB_FORMAT = 1


def job_for(decisions: Mapping[str, Any], config: Mapping[str, Any], predicted: Mapping[str, Any] | None = None,
            arm_eval: bool = False) -> dict[str, Any]:
    """The runtime job of one configuration record (client ids -> indices in the plan's client order)."""
    ids = list(decisions["clients"])
    index = {c: i for i, c in enumerate(ids)}
    return {"format": JOB_FORMAT, "config": config["name"], "clients": ids,
            "clusters": [int(config["clusters"][c]) for c in ids], "common": [index[c] for c in config["common"]],
            "beta_mode": config["beta_mode"], "beta": float(config["beta"]), "arms": list(config["arms"]),
            "ucb_c": float(config["ucb_c"]), "prior_mean": config["prior_mean"], "prior_count": float(config["prior_count"]),
            "gcfl_warmup": int(config["gcfl_warmup"]), "gcfl_k": int(config["gcfl_k"]),
            "rounds": int(decisions["training"]["rounds"]), "training": dict(decisions["training"]),
            "signatures": dict(decisions.get("signatures", {})), "arm_eval": bool(arm_eval),
            "predicted": dict(predicted or {})}


def save_graph(path: Any, x: np.ndarray, y: np.ndarray, edges: np.ndarray, client: np.ndarray, split: np.ndarray) -> None:
    """The graph and its split as one .npz (edges once each, (2, E); split 0 train / 1 validation / 2 test)."""
    np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64), edges=edges.astype(np.int64),
             client=client.astype(np.int64), split=split.astype(np.int64))
