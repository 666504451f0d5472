"""kv-budget phases: workload -> model -> calibrate (real model) -> solve -> baselines -> lift."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.families.base import PlanContext
from planner.plan_refs import hardware_ref, solver_trace
from planner.schema import BaselineResult, ModelRef, Objective, Plan, SolverInfo

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
RUNTIME_DTYPE_BYTES = 4   # the runtime here keeps the KV cache in fp32 (what `run` measures)


@dataclass
class KvBudgetState:
    """What the phases pass along."""

    requests: list[Any] = field(default_factory=list)
    lm: Any = None
    configs: list[dict[str, Any]] = field(default_factory=list)
    table: Any = None
    problem: Any = None
    solution: Any = None
    baselines: dict[str, Any] = field(default_factory=dict)
    weight_bytes: float = 0.0


def configs_of(opts: Any) -> list[dict[str, Any]]:
    """The table's rows: the full cache, GVote's grid (budget reading x p_nuc x S), every press at every ratio (fixed order)."""
    rows: list[dict[str, Any]] = [{"method": "full"}]
    for budget in opts.budgets:
        for p in opts.p_nuc:
            for s in opts.samples:
                rows.append({"method": "gvote", "p_nuc": p, "n_samples": s, "n_sink": opts.sinks,
                             "window": opts.window, "seed": opts.seed, "cap_fraction": opts.kv_cap,
                             "budget": budget, "anchors": opts.anchors, "span": opts.span})
    for name in opts.presses:
        for r in opts.press_ratios:
            rows.append({"method": name, "ratio": r})
    return rows


def workload(ctx: PlanContext) -> None:
    """The calibration prompts (seeded by --seed)."""
    ctx.state = KvBudgetState()


def model(ctx: PlanContext) -> None:
    """The LM (real weights, a --weights directory, or the tiny random same-architecture model) and prompts."""
    from planner.families.kv_budget.workload import load_lm, make_requests

    st, o = ctx.state, ctx.options
    st.lm = load_lm(ctx.spec, ctx.request.tiny, o.weights, o.seed)
    st.requests = make_requests(o.workload, st.lm, o.seed, ctx.spec, ctx.request.tiny)
    st.weight_bytes = float(st.lm.num_params * DTYPE_BYTES.get(ctx.spec.dtype, 4))
    if ctx.request.tiny:
        ctx.notes.append("tiny random model: the mechanics are real, the accuracies are not meaningful")


def calibrate(ctx: PlanContext) -> None:
    """Every configuration on every calibration prompt through the real model (see measure.py)."""
    from planner.families.kv_budget.measure import measure
    from solvers.kv_budget.problem import KvBudgetProblem

    st, o = ctx.state, ctx.options
    st.configs = configs_of(o)
    lm = st.lm
    st.table = t = measure(lm.model, lm.decode, lm.score, st.requests, st.configs, lm.eos_ids, ctx.progress)
    hw = ctx.require_hardware()
    free = max(0.0, float(hw.memory_bytes) - st.weight_bytes)
    serve = DTYPE_BYTES.get(ctx.spec.dtype, 4)
    st.problem = KvBudgetProblem(
        tuple(st.configs), t.kv_bytes, t.score, t.select_s, t.prefill_s, t.lengths,
        tuple(r.task for r in st.requests), t.oracle_bytes, t.recall, t.token_bytes,
        free * RUNTIME_DTYPE_BYTES / serve, o.max_accuracy_drop,
        meta={"serving_dtype_bytes": serve})
    ctx.notes.append(f"KV bytes are counted at fp32 (the runtime here); concurrency assumes the KV cache at the "
                     f"model's serving dtype ({ctx.spec.dtype}) in {hw.name}'s memory minus the weights")


def solve(ctx: PlanContext) -> None:
    """GVote's knobs: least mean KV bytes meeting the accuracy target on the calibration sample. When no GVote
    setting meets it but a press does, the press becomes the plan (in `baselines`); when nothing does, the
    error names the drop that is reachable."""
    from core.errors import InfeasibleError
    from solvers.kv_budget.gvote import pick, reachable_drop, solve as gvote
    from solvers.kv_budget.validate import validate

    st = ctx.state
    p = st.problem
    try:
        st.solution = gvote(p)
    except InfeasibleError as exc:
        presses = [r for r, m in enumerate(p.methods) if m not in ("full", "gvote")]
        if not presses or not pick(p, presses, "press").feasible:
            rows = p.rows("gvote") + presses
            best = reachable_drop(p, rows)
            raise InfeasibleError(
                f"no GVote setting or press tried keeps accuracy within {100 * p.max_accuracy_drop:g} points of the "
                f"full cache on the calibration sample (the best loses {100 * best:.2f} points)",
                f"allow --max-accuracy-drop {100 * best + 0.005:.2f}% or more, or add higher --p-nuc values "
                "(--p-nuc 1 keeps the full cache)") from exc
        st.solution = pick(p, p.rows("gvote"), "gvote")        # INFEASIBLE: the press is adopted below
        ctx.notes.append(exc.problem)
        return
    bad = validate(p, st.solution)
    if bad:
        raise RuntimeError("GVote's choice is invalid (a bug): " + "; ".join(bad))


def baselines(ctx: PlanContext) -> None:
    """The full cache and every press at its least-memory ratio meeting the same target."""
    from solvers.kv_budget.baselines import baselines as all_baselines

    st = ctx.state
    for b in all_baselines(st.problem):
        st.baselines[b.name] = (b, b.solve(st.problem))
    # the plan never recommends what its own baselines beat: a press meeting the target with less mean memory
    # becomes the plan, and GVote's choice is kept as a baseline
    beat = [(s.objective, name) for name, (b, s) in st.baselines.items()
            if name != "full" and s.feasible and (not st.solution.feasible or s.objective < st.solution.objective)]
    if beat:
        _, name = min(beat)
        from solvers.common import Baseline

        gv = st.solution
        st.baselines["gvote"] = (Baseline("gvote", "GVote's least-memory knobs meeting the target", lambda p: gv), gv)
        st.solution = st.baselines.pop(name)[1]
        ctx.notes.append(f"on this calibration sample the fixed-ratio press {name} meets the accuracy target with "
                         f"less mean KV memory than any GVote setting tried (or where none does): the plan runs {name}")


def _predicted(problem: Any, row: int, timing: bool = False) -> dict[str, Any]:
    """A row's predicted figures; measured seconds only with --record-timing (plans stay byte-identical)."""
    from core.sampling_error import score_stderr
    from solvers.kv_budget.cost import metrics

    m = metrics(problem, row)
    full = metrics(problem, problem.full_index)
    return {"mean_kv_bytes": round(m.mean_kv_bytes, 1), "p95_kv_bytes": round(m.p95_kv_bytes, 1),
            "accuracy": round(m.accuracy, 6), "accuracy_drop_points": round(100 * m.accuracy_drop, 4),
            "accuracy_stderr": round(score_stderr([float(x) for x in problem.score[row]]), 6),
            "calibration_prompts": int(problem.score.shape[1]),
            "full_accuracy": round(full.accuracy, 6), "kept_fraction": round(m.kept_fraction, 6),
            "kept_fraction_by_task": {k: round(v, 6) for k, v in m.kept_fraction_by_task.items()},
            "mean_kv_bytes_by_task": {k: round(v, 1) for k, v in m.mean_kv_bytes_by_task.items()},
            "concurrency_p95": m.concurrency_p95, "concurrency_mean": m.concurrency_mean,
            "overhead_fraction_of_prefill": round(m.overhead_fraction_of_prefill, 4) if timing else None,
            "oracle_recall": round(m.oracle_recall, 6), "memory_vs_full": round(m.mean_kv_bytes / full.mean_kv_bytes, 6)}


def curve(problem: Any, timing: bool) -> list[dict[str, Any]]:
    """Every row's measured point (the accuracy-memory curve of every method)."""
    out = []
    for r, cfg in enumerate(problem.configs):
        p = _predicted(problem, r, timing)
        out.append({"knobs": dict(cfg), **{k: p[k] for k in ("mean_kv_bytes", "p95_kv_bytes", "accuracy",
                                                            "kept_fraction", "oracle_recall",
                                                            "overhead_fraction_of_prefill")}})
    return out


def at_matched_memory(p: Any, name: str, plan_mean_kv_bytes: float) -> dict[str, Any]:
    """A fixed-ratio press's accuracy and ratio at the plan's mean KV memory (its row with the most memory not
    above the plan's); nothing for the full cache or for GVote (a baseline only when a press won the plan)."""
    from solvers.kv_budget.baselines import press_at_memory
    from solvers.kv_budget.cost import metrics

    if name in ("full", "gvote"):
        return {}
    matched = press_at_memory(p, name, plan_mean_kv_bytes)
    return {"accuracy_at_matched_memory": round(metrics(p, matched).accuracy, 6) if matched is not None else None,
            "ratio_at_matched_memory": p.configs[matched]["ratio"] if matched is not None else None}


def lift(ctx: PlanContext) -> None:
    """Solution -> Plan: knobs, per-request budgets, the curve of every method, baselines, oracle bound."""
    from solvers.kv_budget.baselines import DESCRIPTIONS
    from solvers.kv_budget.exact import oracle_mean_bytes

    st, o, fam = ctx.state, ctx.options, ctx.family
    p, sol, t = st.problem, st.solution, st.table
    row = sol.row
    timing = ctx.request.record_timing
    pred = {**_predicted(p, row, timing), "feasible": True,
            "oracle_mean_kv_bytes": round(oracle_mean_bytes(p), 1)}
    plan_mem = pred["mean_kv_bytes"]
    base = {}
    for name, (b, s) in st.baselines.items():
        if s.feasible:
            bp = {**_predicted(p, s.row, timing), "feasible": True}
        else:
            bp = {"feasible": False}
        bp.update(at_matched_memory(p, name, plan_mem))
        base[name] = BaselineResult(DESCRIPTIONS.get(name, name), dict(b.params),
                                    bp, {}, {"knobs": dict(s.params)} if s.feasible else {})
    per_request = [{"task": r.task, "prompt_tokens": int(r.length), "kv_bytes": float(t.kv_bytes[row, j]),
                    "kept_fraction": round(float(t.kv_bytes[row, j] / (r.length * t.token_bytes)), 6),
                    "score": float(t.score[row, j]), "full_score": float(t.score[p.full_index, j]),
                    "oracle_recall": round(float(t.recall[row, j]), 6)}
                   for j, r in enumerate(st.requests)]
    layers = np.mean(np.array(t.kept_by_layer[row]), axis=0)
    decisions = {"knobs": dict(sol.params), "token_bytes": float(t.token_bytes),
                 "kv_dtype": "fp32", "workload": o.workload, "calibration_seed": o.seed,
                 "kept_fraction_by_layer": [round(float(x), 6) for x in layers],
                 "requests": per_request, "curve": curve(p, timing)}
    s = ctx.spec
    hw = ctx.require_hardware()
    ctx.plan = Plan(
        family=fam.name,
        model=ModelRef(s.name, st.lm.fingerprint or s.fingerprint(ctx.request.tiny),
                       f"the checkpoint in --weights {o.weights}" if o.weights else s.source,
                       num_params=int(st.lm.num_params), dtype="fp32", tiny=ctx.request.tiny),
        hardware=hardware_ref(hw, "device"),
        solver=SolverInfo(name="GVote knob search over measured calibration rows", status=sol.status.value,
                          config={"grid_rows": len(p.rows("gvote"))},
                          wall_time_s=sol.wall_time_s if ctx.request.record_timing else None,
                          iterations=len(sol.trace), trace=solver_trace(sol.trace, limit=20)),
        objective=Objective(fam.objective_metric, fam.objective_sense, float(plan_mem)),
        decisions=decisions,
        predicted=pred,
        baselines=base,
        bound=None,
        inputs={"scenario_reason": ctx.scenario_reason, "workload": o.workload, "seed": o.seed,
                "weights": o.weights or ("tiny random" if ctx.request.tiny else "catalog"),
                "grid": {"p_nuc": list(o.p_nuc), "samples": list(o.samples), "sinks": o.sinks, "window": o.window,
                         "kv_cap": o.kv_cap, "presses": list(o.presses), "press_ratios": list(o.press_ratios),
                         "budgets": list(o.budgets), "spans": [o.anchors, o.span]}},
        constraints={"max_accuracy_drop_points": round(100 * o.max_accuracy_drop, 4),
                     "free_memory_bytes": round(float(hw.memory_bytes) - st.weight_bytes, 1),
                     "serving_dtype_bytes": p.meta["serving_dtype_bytes"]},
        notes=tuple(dict.fromkeys(ctx.notes)),
    )


def validate_plan(plan: Plan) -> list[str]:
    """Constraints checkable from the plan alone."""
    bad = []
    p, c = plan.predicted, plan.constraints
    if p.get("accuracy_drop_points", 0.0) > c.get("max_accuracy_drop_points", 100.0) + 1e-6:
        bad.append(f"the plan loses {p['accuracy_drop_points']} points, above the allowed "
                   f"{c['max_accuracy_drop_points']}")
    knobs = plan.decisions.get("knobs", {})
    if not 0.0 < float(knobs.get("p_nuc", 1.0)) <= 1.0:
        bad.append("p_nuc outside (0, 1]")
    if int(knobs.get("n_samples", 1)) < 1:
        bad.append("n_samples below 1")
    return bad
