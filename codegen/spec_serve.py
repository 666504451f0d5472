"""spec-serve codegen: the plan's configurations as runtime records (decisions applied, none made).

`runtime_config(plan)` gives the serving engine (runtime/spec_serve/engine.py) one record per configuration
(the plan and every baseline that runs on the engine), plus the model, the drafters, the nodes with their
emulated speed and links, the routing centroids and the calibrated verify-time constants:

    cfg = runtime_config(plan)
    cfg["configs"]["plan"]["routing"]["code"][0]  -> {"drafters": ["ee4", "ngram"], "weights": [...], "gamma": 5}
"""
from __future__ import annotations

from typing import Any

from planner.schema import Plan

CONFIG_FORMAT = 1


def _engine_record(plan: Plan, d: dict[str, Any], greedy: bool) -> dict[str, Any]:
    """One configuration as the engine reads it."""
    pd = plan.decisions
    nodes = {n: {"scale": float(pd["node_scale"][n]), "delay_s": float(pd["links"][n]["delay_s"]),
                 "rate_bps": float(pd["links"][n]["rate_bps"]), "drafter": d["placement"].get(n)}
             for n in sorted(pd["node_scale"])}
    if d.get("colocated"):       # single-drafter speculation on the verifier itself: a node at its speed, no link
        nodes[f"{pd['verifier']['name']}-local"] = {"scale": float(pd["verifier"]["scale"]), "delay_s": 0.0,
                                                    "rate_bps": 1e18, "drafter": d["colocated"], "colocated": True}
    extra = {"replicas": [dict(r) for r in d["replicas"]], "router": d["router"]} if d.get("replicas") else {}
    return {**extra, "nodes": nodes, "verifier": dict(pd["verifier"]), "routing": d["routing"], "group": int(d["group"]),
            "pipelined": bool(d["pipelined"]), "adaptive": bool(d["adaptive"]),
            "gamma_bounds": list(pd["gamma_bounds"]), "expected_tokens": d.get("expected_tokens", {}),
            "verify_cpu_s": list(pd["verify_cpu_s"]), "greedy": greedy, "seed": int(pd["seed"]),
            "eos": list(pd["model"].get("eos", [])), "token_cap": 256, "tau_conf": 0.0}


def runtime_config(plan: Plan) -> dict[str, Any]:
    """The runtime's YAML record."""
    pd = plan.decisions
    greedy = pd["decoding"] == "greedy"
    configs = {"plan": _engine_record(plan, dict(pd), greedy)}
    predicted = {"plan": dict(plan.predicted)}
    for name, b in sorted(plan.baselines.items()):
        # assisted-*: single-drafter speculation co-located on the verifier, run by the engine (transformers' own
        # assisted generation and prompt lookup run in the benchmark beside it)
        configs[name] = _engine_record(plan, dict(b.decisions), greedy)
        predicted[name] = dict(b.predicted)
    return {"format": CONFIG_FORMAT, "model": dict(pd["model"]), "drafters": dict(pd["drafters"]),
            "domains": list(pd["domains"]), "centroids": [list(c) for c in pd["centroids"]],
            "workload": pd["workload"], "arrival_rps": float(pd["arrival_rps"]), "new_tokens": int(pd["new_tokens"]),
            "seed": int(pd["seed"]), "configs": configs, "predicted": predicted}
