"""kv-budget views: `planner inspect` tables and the run receipt's tables (80 columns)."""
from __future__ import annotations

from typing import Any

from rich.text import Text

from planner.schema import Plan
from planner.tables import table
from planner.units import fmt_bytes


def _knobs(k: dict[str, Any]) -> str:
    if k.get("method") == "gvote":
        cap = f" cap {k['cap_fraction']:g}" if k.get("cap_fraction") else ""
        spans = f" spans {k['anchors']}:{k['span']}" if k.get("anchors") and k.get("span") else ""
        return f"gvote {k.get('budget', 'top')} p={k['p_nuc']:g} S={k['n_samples']}{cap}{spans}"
    if k.get("method") == "full":
        return "full cache"
    return f"{k.get('method')} r={k.get('ratio', 0):g}"


def kv_budget_tables(plan: Plan, wide: bool = False) -> list[Any]:
    """Per-task budgets, accuracy vs memory of every method, concurrency, GVote's overhead."""
    d, p = plan.decisions, plan.predicted
    out: list[Any] = []
    k = d["knobs"]
    if k["method"] == "gvote":
        head = (f"GVote knobs: p_nuc {k['p_nuc']:g}, S {k['n_samples']}, sinks {k['n_sink']}, window {k['window']}"
                + (f", cap {k['cap_fraction']:g}" if k.get("cap_fraction") else "")
                + f", budget {k.get('budget', 'top')}, spans {k.get('anchors', 0)}:{k.get('span', 0)}; seed {k['seed']}")
    else:
        head = f"plan: {_knobs(k)} (a fixed-ratio press beat every GVote setting tried)"
    out.append(Text(f"{head}; calibration {d['workload']} (seed {d['calibration_seed']})"))
    tt = table("budget per task (calibration prompts, the plan's configuration; kept range over its requests)")
    for c in ("task", "n", "tokens", "KV mean", "KV max", "kept", "kept range", "acc", "full"):
        tt.add_column(c, justify="left" if c == "task" else "right")
    tasks = sorted({r["task"] for r in d["requests"]})
    for t in tasks:
        rs = [r for r in d["requests"] if r["task"] == t]
        n = len(rs)
        kv = [r["kv_bytes"] for r in rs]
        kept = [r["kept_fraction"] for r in rs]
        tt.add_row(t, str(n), f"{sum(r['prompt_tokens'] for r in rs) / n:.0f}", fmt_bytes(sum(kv) / n),
                   fmt_bytes(max(kv)), f"{sum(kept) / n:.3f}", f"{min(kept):.2f}-{max(kept):.2f}",
                   f"{sum(r['score'] for r in rs) / n:.3f}", f"{sum(r['full_score'] for r in rs) / n:.3f}")
    out.append(tt)
    ct = table("accuracy vs memory, every method and setting (calibration prompts, measured)")
    for c in ("setting", "KV mean", "KV p95", "kept", "acc", "recall"):
        ct.add_column(c, justify="left" if c == "setting" else "right")
    rows = sorted(d["curve"], key=lambda r: (r["knobs"]["method"], r["mean_kv_bytes"]))
    for r in rows:
        ct.add_row(_knobs(r["knobs"]), fmt_bytes(r["mean_kv_bytes"]), fmt_bytes(r["p95_kv_bytes"]),
                   f"{r['kept_fraction']:.3f}", f"{r['accuracy']:.3f}", f"{r['oracle_recall']:.3f}")
    out.append(ct)
    out.append(Text(f"concurrency at {plan.hardware.name}'s free memory ({fmt_bytes(plan.constraints['free_memory_bytes'])}"
                    f", KV at {plan.constraints['serving_dtype_bytes']} B/element): {p['concurrency_p95']} requests "
                    f"sized by the p95 budget, {p['concurrency_mean']} by the mean; full cache: "
                    f"{plan.baselines['full'].predicted.get('concurrency_p95', '-')} (p95)"))
    over = p.get("overhead_fraction_of_prefill")
    over_text = (f"{100 * over:.2f}% of prefill time (median, measured)" if over is not None
                 else "not recorded (plan with --record-timing)")
    out.append(Text(f"GVote overhead: {over_text}; oracle recall {p['oracle_recall']:.3f}; memory {p['memory_vs_full']:.3f} of the full "
                    f"cache; oracle keep sets (reference, nucleus 0.95 of the actual decoding queries) "
                    f"{fmt_bytes(p['oracle_mean_kv_bytes'])}"))
    if wide:
        lt = table("kept share per layer (mean over calibration prompts)")
        lt.add_column("layer", justify="right")
        lt.add_column("kept", justify="right")
        for i, x in enumerate(d["kept_fraction_by_layer"]):
            lt.add_row(str(i), f"{x:.3f}")
        out.append(lt)
    return out


def receipt_views(rec: dict[str, Any]) -> list[Any]:
    """The run receipt: per prompt measured vs predicted bytes, accuracy, totals."""
    t = table(f"receipt: {rec['config']} on {rec['totals']['prompts']} held-out prompts ({rec['totals']['workload']})")
    for c in ("task", "tokens", "KV held", "predicted", "err", "score"):
        t.add_column(c, justify="left" if c == "task" else "right")
    for r in rec["rows"]:
        t.add_row(r["task"], str(r["prompt_tokens"]), fmt_bytes(r["kv_bytes_measured"]),
                  fmt_bytes(r["kv_bytes_predicted"]), f"{100 * r['kv_bytes_rel_error']:+.1f}%", f"{r['score']:.2f}")
    tot = rec["totals"]
    return [t, Text(f"mean KV measured {fmt_bytes(tot['mean_kv_bytes_measured'])} vs predicted "
                    f"{fmt_bytes(tot['mean_kv_bytes_predicted'])} ({100 * tot['mean_kv_bytes_rel_error']:+.1f}%); "
                    f"accuracy measured {tot['accuracy_measured']:.3f} vs predicted {tot['accuracy_predicted']:.3f} "
                    f"({tot['accuracy_error_points']:+.1f} points{_sampling(tot)}); full-cache accuracy on these "
                    f"prompts {tot['full_accuracy_measured']:.3f}")]


def _sampling(tot: dict[str, Any]) -> str:
    """Whether the accuracy error is within the sampling error of the two prompt samples (older receipts: '')."""
    if "accuracy_within_sampling_error" not in tot:
        return ""
    n_cal, n_run = tot.get("calibration_prompts", 0), tot["prompts"]
    verdict = "within" if tot["accuracy_within_sampling_error"] else "beyond"
    return (f", {verdict} the 95 % sampling error of {n_cal} calibration and {n_run} held-out prompts: "
            f"±{100 * 1.96 * (tot['accuracy_stderr_measured'] ** 2 + tot['accuracy_stderr_predicted'] ** 2) ** 0.5:.0f} points")
