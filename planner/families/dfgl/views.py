"""dfgl views: plan validation from JSON, `planner inspect` tables, the run receipt's table."""
from __future__ import annotations

from typing import Any

import numpy as np
from rich.text import Text

from core.p2p_topology import is_connected
from planner.schema import Plan
from planner.tables import table
from planner.units import fmt_bytes

FIRST_ROUNDS = 6


def validate_plan_decisions(d: dict) -> list[str]:
    """Every round's topology symmetric (links as pairs), connected over the workers, ratios in [r_min, 1]."""
    ids = [w["id"] for w in d["workers"]]
    index = {w: i for i, w in enumerate(ids)}
    r_min = float(d["problem"]["r_min"])
    bad = []
    for r in d["schedule"]:
        adj = np.zeros((len(ids), len(ids)), dtype=np.int8)
        for a, b in r["links"]:
            if a not in index or b not in index or a == b:
                bad.append(f"round {r['round']}: bad link {a}-{b}")
                continue
            adj[index[a], index[b]] = adj[index[b], index[a]] = 1
        if not is_connected(adj):
            bad.append(f"round {r['round']}: topology is not connected")
        for w, v in r["ratios"].items():
            if not r_min - 1e-9 <= float(v) <= 1 + 1e-9:
                bad.append(f"round {r['round']}: ratio of {w} is outside [{r_min}, 1]")
    return bad


def dfgl_tables(plan: Plan, wide: bool = False) -> list[Any]:
    """First rounds of the schedule, the controller's provenance."""
    d, p = plan.decisions, plan.predicted
    out: list[Any] = []
    sched = d["schedule"]
    rows = sched if wide else sched[:FIRST_ROUNDS]
    t = table(f"schedule: first {len(rows)} of {len(sched)} rounds (links kept, sampling ratios)")
    for c in ("round", "links", "mean r", "min r", "round s", "bytes", "consensus*"):
        t.add_column(c, justify="left" if c == "links" else "right")
    for r in rows:
        rs = list(r["ratios"].values())
        links = " ".join(f"{a}-{b}" for a, b in r["links"])
        t.add_row(str(r["round"]), links if wide or len(links) <= 40 else links[:39] + "…", f"{np.mean(rs):.2f}",
                  f"{min(rs):.2f}", f"{r['predicted']['round_time_s']:.3g}", fmt_bytes(r["predicted"]["bytes"]),
                  f"{r['predicted']['consensus']:.3f}")
    out.append(t)
    c = d["controller"]
    rec = c["training_record"]
    first, last = (rec[0], rec[-1]) if rec else ({}, {})
    sel = d.get("selection")
    if sel:
        ctl = sel["controller"]
        how = ("the highest predicted accuracy at its time budget, among the schedules predicted >= 20 % sooner "
               "than every baseline, to reach" if sel.get("rule") == "accuracy_at_budget" else "the first to reach")
        out.append(Text(
            f"plan schedule: {sel['chosen']}, {how} {sel['metric']} accuracy {sel['target_accuracy']:.3f} "
            f"({sel['target_source']}) plus a margin of {sel.get('margin', 0.0):.3f} (the surrogate's fit RMSE) among the controller's, the simple rate-ranked and the baselines' schedules "
            f"under the surrogate (constants: {sel['surrogate']}); the controller's schedule ranks {ctl['rank']}."))
    out.append(Text(
        f"controller: DDPG actor ({len(c['actor']['b1'])} hidden) trained {len(rec)} episodes in the planner's "
        f"simulator; objective vs the rule controller {first.get('objective_vs_rule', float('nan')):.2f} -> "
        f"{last.get('objective_vs_rule', float('nan')):.2f} (first -> last episode); plan-time refinement: "
        f"exhaustive over connected topologies up to 5 workers, else link local searches from the actor's and "
        f"rate-ranked topologies. Rule-based fallback: degree {c['rule']['degree']}, base ratio "
        f"{c['rule']['base_ratio']}. * consensus and error are the planner's surrogate."
        + (f" Gap to the one-round oracle (first rounds): {p['oracle_gap_max'] * 100:.1f} %."
           if "oracle_gap_max" in p else "")))
    return out


def receipt_table(rec: dict) -> list[Any]:
    """The run receipt: per round who chose the action that ran and how it compares with the planned one (links
    and mean ratio: ran/planned), measured vs predicted time and bytes (predicted for the action that ran)."""
    t = table(f"receipt: {rec['config']} ({rec['workers']} worker processes, gloo; links emulated in the transport)")
    for c in ("round", "by", "links", "mean r", "meas s", "pred s", "meas B", "pred B", "C-hat", "bound", "acc"):
        t.add_column(c, justify="right")
    for r in rec["rounds"]:
        ch, pl = r.get("chosen"), r.get("planned")
        links = f"{len(ch['links'])}/{len(pl['links'])}" if ch and pl else ""
        ratio = (f"{sum(ch['ratios'].values()) / len(ch['ratios']):.2f}/"
                 f"{sum(pl['ratios'].values()) / len(pl['ratios']):.2f}") if ch and pl else ""
        by = {"schedule": "plan"}.get(r.get("controller", ""), r.get("controller", ""))
        t.add_row(str(r["round"]), by + ("" if r.get("same_as_planned", True) else "*"), links, ratio,
                  f"{r['measured_s']:.3g}", f"{r['predicted_s']:.2g}", fmt_bytes(r["measured_bytes"]),
                  fmt_bytes(r["predicted_bytes"]), f"{r['consensus_estimate']:.2g}", "yes" if r["bound_holds"] else "NO",
                  f"{r['accuracy']:.3f}")
    out: list[Any] = [t]
    out.append(Text("links, mean r: the action that ran / the planned one; * it differs from the planned one "
                    "(per-round links and ratios of both are in --json: chosen, planned)"))
    if rec.get("lost"):
        out.append(Text(rec["lost"]))
    return out
