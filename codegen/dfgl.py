"""dfgl codegen: the graph split as arrays and one runtime job per configuration (plan and every baseline).

Codegen applies decisions: `job_for` turns a configuration's per-round schedule (links by worker id, ratios,
predicted time and bytes) and the plan's links into the job `runtime/dfgl/launch.py` runs.

    job = job_for(plan.decisions, plan.decisions["schedule"], "plan", seed=0)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

JOB_FORMAT = 1


def job_for(decisions: Mapping[str, Any], schedule: Sequence[Mapping[str, Any]], name: str, seed: int,
            controller: str = "schedule", timeout_s: float = 30.0) -> dict[str, Any]:
    """The runtime job of configuration `name` (worker indices in the plan's worker order)."""
    ids = [w["id"] for w in decisions["workers"]]
    index = {w: i for i, w in enumerate(ids)}
    rate = np.asarray(decisions["links"]["rate_bits_per_s"], float) / 8.0
    lat = np.asarray(decisions["links"]["latency_s"], float)
    rounds = []
    for r in schedule:
        k = int(r["round"])
        rounds.append({"round": k, "links": [[index[a], index[b]] for a, b in r["links"]],
                       "ratios": [float(r["ratios"][w]) for w in ids],
                       "rate_Bps": rate[k].tolist(), "latency_s": lat[k].tolist(),
                       "predicted": {"round_time_s": float(r["predicted"]["round_time_s"]),
                                     "bytes": float(r["predicted"]["bytes"])}})
    prob = decisions["problem"]
    return {"format": JOB_FORMAT, "config": name, "seed": int(seed), "workers": ids,
            "training": dict(decisions["training"]), "rounds": rounds, "controller": controller,
            "rule": dict(decisions["controller"]["rule"]), "actor": decisions["controller"]["actor"],
            "round_cost": prob["round_cost"], "halo": prob["halo"], "local_edges": prob["local_edges"],
            "timeout_s": float(timeout_s), "graph_file": "graph.npz"}


def save_graph(path: Any, x: np.ndarray, y: np.ndarray, edge_index: np.ndarray, part: np.ndarray,
               train_mask: np.ndarray, test_mask: np.ndarray) -> None:
    """The graph split as one .npz (written by the caller into the staging directory)."""
    np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64), edge_index=edge_index.astype(np.int64),
             part=part.astype(np.int64), train_mask=train_mask, test_mask=test_mask)
