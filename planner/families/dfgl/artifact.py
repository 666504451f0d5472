"""dfgl emit and run entry points.

Artifact layout:
    plan.json            the plan
    graph.npz            the graph split (features, labels, edges, worker of every node, masks)
    jobs/<config>.json   one runtime job per configuration (plan and every baseline)
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from core.artifacts import read_job
from core.atomic_io import write_text_atomic
from core.errors import PlannerError
from planner.families.base import Progress, RunReport
from planner.flags import FlagValues
from planner.schema import Plan


def emit(plan: Plan, values: FlagValues, staging: Path, progress: Progress) -> str:
    """Rebuild the graph split from the plan's spec and seed, write it and one job per configuration."""
    from codegen.dfgl import job_for, save_graph
    from planner.families.dfgl.graph_input import load_graph
    from planner.serde import dumps

    d = plan.decisions
    seed = int(d["graph"]["seed"])
    progress("building the graph split")
    g = load_graph(d["graph"]["spec"], len(d["workers"]), seed)
    save_graph(staging / "graph.npz", g.x, g.y, g.edge_index, g.part, g.train_mask, g.test_mask)
    configs = {"plan": d["schedule"], **{n: b.decisions["schedule"] for n, b in sorted(plan.baselines.items())}}
    for name, sched in configs.items():
        write_text_atomic(staging / "jobs" / f"{name}.json",
                          json.dumps(job_for(d, sched, name, seed), sort_keys=True) + "\n")
    write_text_atomic(staging / "plan.json", dumps(plan))
    return f"graph.npz, jobs/ ({len(configs)} configurations), plan.json"


def _parse_kill(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        rank, rnd = (int(v) for v in text.split(":"))
    except ValueError:
        raise PlannerError(f"--kill-worker {text} is not RANK:ROUND", "write e.g. --kill-worker 2:1") from None
    return [rank, rnd]


def run(artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
    """Run one configuration with one process per worker and show the receipt."""
    from planner.families.dfgl.views import receipt_table
    from runtime.dfgl.launch import run_job

    job = read_job(artifact, values["baseline"])
    kill = _parse_kill(values["kill_worker"])
    if kill and not 0 <= kill[0] < len(job["workers"]):
        raise PlannerError(f"--kill-worker {values['kill_worker']}: there is no rank {kill[0]}",
                           f"ranks are 0..{len(job['workers']) - 1}")
    if values["rounds"]:
        job["rounds"] = job["rounds"][: int(values["rounds"])]
    controller = values["controller"] or ("schedule" if values["baseline"] else "online")
    if controller == "online" and values["baseline"]:
        raise PlannerError(f"--controller online runs the plan's controller, not baseline {values['baseline']}'s "
                           "schedule", "drop --controller online (a baseline follows its schedule) or --baseline")
    if controller == "online" and not {"actor", "round_cost"} <= set(job):
        raise PlannerError(f"{artifact} was emitted before the runtime ran the controller online (its job has no "
                           "actor weights or round cost)", "re-emit the plan with planner emit, or pass "
                           "--controller schedule")
    job.update(controller=controller, timeout_s=float(values["timeout"] or 30.0),
               kill=kill, log_models=True, graph_file=str(artifact / "graph.npz"))
    progress(f"{len(job['workers'])} worker processes (gloo), {len(job['rounds'])} rounds")
    with tempfile.TemporaryDirectory(prefix="dfgl-run-") as work:
        rec = run_job(job, Path(work))
    if rec["lost"]:
        raise PlannerError(f"the run stopped after {rec['completed_rounds']} complete rounds: {rec['lost']}",
                           "re-run once every worker can stay up (or without --kill-worker)")
    return RunReport(json.dumps(rec, sort_keys=True, indent=1), receipt_table(rec))
