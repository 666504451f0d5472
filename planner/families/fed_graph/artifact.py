"""fed-graph emit and run entry points.

Artifact layout:
    plan.json            the plan
    graph.npz            the graph and its split (features, labels, edges, owner and split of every node)
    jobs/<config>.json   one Flower job per configuration (the plan's recommendation and every other)
"""
from __future__ import annotations

import json
from pathlib import Path

from core.artifacts import read_job
from core.atomic_io import write_text_atomic
from core.errors import PlannerError
from planner.families.base import Progress, RunReport
from planner.flags import FlagValues
from planner.schema import Plan


def emit(plan: Plan, values: FlagValues, staging: Path, progress: Progress) -> str:
    """Rebuild the test bed from the plan's spec and seed; write it and one job per configuration."""
    from codegen.fed_graph import job_for, save_graph
    from planner.families.fed_graph.lowering import load_clients
    from planner.serde import dumps

    d = plan.decisions
    progress("building the graph test bed")
    gc = load_clients(d["graph"]["spec"], int(d["graph"]["seed"]))
    if list(gc.ids) != list(d["clients"]):
        raise PlannerError("the graph rebuilt from the plan has other clients than the plan", "re-plan")
    save_graph(staging / "graph.npz", gc.x, gc.y, gc.edges, gc.client, gc.split)
    rec = d["recommended"]
    for name, cfg in sorted(d["configs"].items()):
        pred = dict(plan.predicted) if name == rec else dict(plan.baselines[name].predicted)
        job = job_for(d, cfg, pred, arm_eval=name == "fedgcf")
        write_text_atomic(staging / "jobs" / f"{'plan' if name == rec else name}.json",
                          json.dumps(job, sort_keys=True) + "\n")
    write_text_atomic(staging / "plan.json", dumps(plan))
    return f"graph.npz, jobs/ ({len(d['configs'])} configurations; plan = {rec}), plan.json"


def run(artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
    """Run one configuration on Flower (simulation, deployment or in-process) and show the receipt."""
    from planner.families.fed_graph.views import receipt_table
    from runtime.fed.federation import MAX_LOCAL_SUPERNODES
    from runtime.fed.graph_run import run_job

    job = read_job(artifact, values["baseline"])
    if values["rounds"]:
        job["rounds"] = int(values["rounds"])
        job["training"]["rounds"] = int(values["rounds"])
    deploy = bool(values["deploy"])
    if deploy and len(job["clients"]) > MAX_LOCAL_SUPERNODES:
        raise PlannerError(f"--deploy starts one SuperNode per client on this machine; {len(job['clients'])} clients "
                           f"exceed the launcher's limit of {MAX_LOCAL_SUPERNODES}",
                           "run without --deploy (Flower simulation), or plan fewer clients")
    in_process = bool(values["in_process"])
    mode = "deploy" if deploy else "simulation"
    progress(f"{len(job['clients'])} clients, {job['rounds']} rounds, configuration {job['config']} "
             f"({'in-process' if in_process else 'Flower ' + mode})")
    rec = run_job(job, artifact / "graph.npz", mode=mode, in_process=in_process and not deploy,
                  on_round=lambda r: progress(f"round {r.get('round')}: test accuracy {r.get('test_accuracy', float('nan')):.3f}")
                  if r.get("round", -1) >= 0 else None)
    return RunReport(json.dumps(rec, sort_keys=True, indent=1), receipt_table(rec))
