"""geo-train emit and run entry points.

Artifact layout:
    plan.json               the plan
    jobs/<config>.json      one runtime job per configuration (plan and every baseline)
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from core.artifacts import read_job
from core.atomic_io import write_text_atomic
from core.errors import ArtifactError, PlannerError, reason_of
from planner.families.base import Progress, RunReport
from planner.flags import FlagValues
from planner.schema import Plan

LINK = "emulated WAN (labelled): real gloo all-reduce on loopback, completion delayed to rate + RTT"


def emit(plan: Plan, values: FlagValues, staging: Path, progress: Progress) -> str:
    """One job per configuration."""
    from codegen.geo_train import job_for
    from planner.serde import dumps

    d = plan.decisions
    configs = {"plan": d, **{name: b.decisions for name, b in sorted(plan.baselines.items())}}
    for name, cfg in configs.items():
        write_text_atomic(staging / "jobs" / f"{name}.json",
                          json.dumps(job_for(d, cfg, name), sort_keys=True, indent=1) + "\n")
    write_text_atomic(staging / "plan.json", dumps(plan))
    return f"jobs/ ({len(configs)} configurations: {', '.join(configs)}), plan.json"


def _repredict(plan: Plan, job: dict[str, Any], compute_s: float, jitter_s: float = 0.0) -> Any:
    """The plan's cost model re-evaluated at the measured compute step and its jitter (every other input
    unchanged)."""
    import numpy as np

    from solvers.geo_train.cost import schedule_metrics
    from solvers.geo_train.problem import GeoTrainProblem

    d = plan.decisions
    m = len(d["regions"])
    prob = GeoTrainProblem(tuple(r["name"] for r in d["regions"]), np.full(m, compute_s), d["wan"]["rate_bps"],
                           d["wan"]["rtt_s"], (1,), 0, 0, inner_steps=job["H"],
                           score_bytes_per_fragment=8 if job["algorithm"] == "cocodc" and job["adaptive"] else 0,
                           step_jitter_s=jitter_s)
    sizes = [sum(f["bytes"] for f in d["fragments"])] if job["algorithm"] == "diloco" else None
    cfg = d if job["name"] == "plan" else plan.baselines[job["name"]].decisions
    sizes = sizes or [f["bytes"] for f in cfg["fragments"]]
    return schedule_metrics(prob, sizes, job["N"] if job["algorithm"] == "cocodc" else len(sizes), job["tau"])


def exposure_replay(step_s: list[float], sync_s: float, tau: int, h: int) -> dict[str, float]:
    """Exposed seconds per step replayed from one region's measured step times (independent of the cost
    model's normal approximation): in slot k the send leaves after step k*h + h - tau and is waited for after
    step k*h + h; the tau steps between hide max(0, sync_s - their time). The waiting step's own time holds
    the wait, so its compute is taken as the median step of the run. Also the mean and std of those windows."""
    med = statistics.median(step_s)
    windows, exposed = [], []
    for end in range(h, len(step_s) + 1, h):         # 1-based step numbers of slot ends
        w = sum(step_s[end - tau:end - 1]) + med        # steps end-tau+1 .. end-1 (0-based end-tau .. end-2) + the last
        windows.append(w)
        exposed.append(max(0.0, sync_s - w))
    n = len(step_s)
    return {"exposed_s_per_step": sum(exposed) / n if n else 0.0,
            "window_mean_s": statistics.fmean(windows) if windows else 0.0,
            "window_std_s": statistics.pstdev(windows) if len(windows) > 1 else 0.0,
            "slots_exposed": sum(e > 0 for e in exposed), "slots": len(windows)}


WARMUP_STEPS = 2      # first steps of a run left out of the pace (imports, quorum set-up, allocator warm-up)


def pace_from_steps(step_s: list[float], job: dict[str, Any]) -> tuple[float, float]:
    """(mean step, window jitter) in seconds from one region's measured step times: the steps that fill a
    hiding window, i.e. every step except the warm-up and the slot ends (where the merge waits), and the
    jitter over windows of tau steps (`window_jitter_s`; at tau 0, DiLoCo, one step)."""
    from solvers.geo_train.cost import window_jitter_s

    H = int(job["H"])
    if job["algorithm"] == "diloco":
        slot = H
    else:
        slot = H // (int(job["N"]) if job["algorithm"] == "cocodc" else len(job["groups"]))
    pace = [x for k, x in enumerate(step_s) if k >= WARMUP_STEPS and (k + 1) % slot != 0]
    if not pace:
        return (statistics.fmean(step_s) if step_s else 0.0), 0.0
    return statistics.fmean(pace), window_jitter_s(pace, max(1, int(job["tau"])))


def first_quorum_excess_s(log: dict[str, Any]) -> float:
    """Seconds the run's first torchft quorum took beyond a later one (the median of the others; all of it
    when there is no other): the once-per-run start-up latency, 0 when the log has no quorum times."""
    q = log.get("quorum_s") or []
    if not q:
        return 0.0
    return max(0.0, q[0] - (statistics.median(q[1:]) if len(q) > 1 else 0.0))


def summarise(plan: Plan, job: dict[str, Any], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """Receipt totals from every region's log (medians over regions)."""
    steps = len(logs[0]["step_s"])
    step = statistics.median(sum(l["step_s"]) / steps for l in logs)
    # torchft's first quorum of a run pays a once-per-run set-up (not per step); the later ones are the per-slot
    # overhead. The cost model predicts the steady step, so it is also compared without the first quorum's
    # excess over a later one (`setup_s`).
    setup = statistics.median(first_quorum_excess_s(l) for l in logs)
    slot_overhead = statistics.median(statistics.median(l["quorum_s"][1:]) if len(l.get("quorum_s", [])) > 1
                                      else 0.0 for l in logs)
    steady = statistics.median((sum(l["step_s"]) - first_quorum_excess_s(l)) / steps for l in logs)
    compute = statistics.median(statistics.median(l["step_s"]) for l in logs)
    # jitter of one compute step: 1.4826 * median absolute deviation (robust to the slots' blocked steps)
    jitter = statistics.median(1.4826 * statistics.median(abs(x - statistics.median(l["compute_s"]))
                                                          for x in l["compute_s"]) for l in logs)
    exposed = statistics.median(l["blocked_s"] / steps for l in logs)
    payload = statistics.median(l["payload_bytes"] / steps for l in logs)
    cfg_pred = plan.predicted if job["name"] == "plan" else plan.baselines[job["name"]].predicted
    re = _repredict(plan, job, compute)
    rj = _repredict(plan, job, compute, jitter)
    # the cost model at this run's own pace: mean of the window-filling steps and their window jitter
    paces = [pace_from_steps(l["step_s"], job) for l in logs]
    pace_t = statistics.median(t for t, _ in paces)
    pace_sig = statistics.median(s for _, s in paces)
    rw = _repredict(plan, job, pace_t, pace_sig)
    replayed = 0.0
    if job["algorithm"] != "diloco" and job["tau"] > 0:
        frags = (plan.decisions if job["name"] == "plan" else plan.baselines[job["name"]].decisions)["fragments"]
        sync = statistics.fmean(f["sync_s"] for f in frags)
        h = int(job["H"]) // (int(job["N"]) if job["algorithm"] == "cocodc" else len(job["groups"]))
        replayed = statistics.median(exposure_replay(l["step_s"], sync, int(job["tau"]), h)["exposed_s_per_step"]
                                     for l in logs)
    choices = [l["choices"] for l in logs]
    agree = all(c == choices[0] for c in choices)
    P = len(job["groups"]) if job["algorithm"] != "diloco" else 1
    per_window = True
    if job["algorithm"] == "cocodc" and choices[0]:
        for p in range(P):
            ks = [k for k, c in enumerate(choices[0]) if c == p]
            per_window &= bool(ks) and max(b - a for a, b in zip([-1] + ks, ks)) <= job["N"]
    return {
        "steps": steps, "step_time_s": step, "compute_step_s": compute, "exposed_comm_s_per_step": exposed,
        "setup_s": setup, "slot_overhead_s_measured": slot_overhead, "step_time_s_without_setup": steady,
        "payload_bytes_per_step": payload, "final_ppl": logs[0]["eval"][-1]["ppl"] if logs[0]["eval"] else float("nan"),
        "predicted_step_time_s": cfg_pred["step_time_s"], "predicted_compute_step_s": cfg_pred["compute_step_s"],
        "predicted_exposed_comm_s_per_step": cfg_pred["exposed_comm_s_per_step"],
        "predicted_payload_bytes_per_step": cfg_pred["payload_bytes_per_step"],
        "repredicted_step_time_s": re.step_time_s, "repredicted_exposed_comm_s_per_step": re.exposed_comm_s_per_step,
        "step_time_error_vs_repredicted": (step - re.step_time_s) / re.step_time_s,
        "compute_jitter_s": jitter, "repredicted_with_jitter_step_time_s": rj.step_time_s,
        "exposed_comm_s_per_step_replayed": replayed,
        "repredicted_with_jitter_exposed_comm_s_per_step": rj.exposed_comm_s_per_step,
        "pace_step_s": pace_t, "pace_window_jitter_s": pace_sig,
        "repredicted_at_pace_step_time_s": rw.step_time_s,
        "repredicted_at_pace_exposed_comm_s_per_step": rw.exposed_comm_s_per_step,
        "choices_agree": agree, "every_fragment_per_window": per_window, "commits": logs[0]["manager_step"],
        "lambda_mean": statistics.fmean(logs[0]["lambdas"]) if logs[0]["lambdas"] else 0.0,
    }


def run(artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
    """Run one configuration, one process per region, and show the receipt."""
    from planner.families.geo_train.views import receipt_views
    from planner.serde import loads
    from runtime.geo_train.launch import RegionFailure, run_regions
    from runtime.receipt import Receipt

    name = values["baseline"] or "plan"
    job = read_job(artifact, values["baseline"])
    try:
        plan = loads((artifact / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{artifact / 'plan.json'} is not a readable plan ({reason_of(exc)})",
                            "re-emit the plan") from exc
    if values["steps"]:
        job["steps"] = int(values["steps"])
    progress(f"{job['regions']} region processes, {job['algorithm']}, {job['steps']} steps over the emulated WAN")
    try:
        logs = run_regions(job, time_limit_s=float(values["time_limit"]))[0]
    except RegionFailure as exc:
        raise PlannerError(str(exc), "check the region's stderr; rerun with --debug") from exc
    tot = summarise(plan, job, logs)
    rec = Receipt(family="geo-train", config=name, link=LINK, totals=tot)
    if abs(tot["step_time_error_vs_repredicted"]) > 0.15:
        rec.flags.append(f"step time {tot['step_time_s']:.4g} s vs {tot['repredicted_step_time_s']:.4g} s predicted at "
                         f"the measured compute step: off by more than 15 %")
    if not tot["choices_agree"]:
        rec.flags.append("regions chose different fragments")
    data = json.loads(rec.to_json())
    return RunReport(rec.to_json(), receipt_views(data))
