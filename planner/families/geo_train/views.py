"""geo-train views: `planner inspect` tables, the plan validator on JSON, the run receipt's table."""
from __future__ import annotations

from typing import Any

from rich.text import Text

from planner.schema import Plan
from planner.tables import table
from planner.units import fmt_bytes


def validate_plan_json(plan: Plan) -> list[str]:
    """Constraint violations of a geo-train plan from its JSON alone."""
    d = plan.decisions
    bad = []
    try:
        H, N, h, tau = d["inner_steps_H"], d["sends_per_window_N"], d["slot_steps_h"], d["delay_steps_tau"]
        frags = d["fragments"]
    except KeyError as exc:
        return [f"missing decision {exc}"]
    if h * N != H:
        bad.append(f"h * N = {h} * {N} != H = {H}")
    if not 0 <= tau < h:
        bad.append(f"tau = {tau} not in [0, h = {h})")
    if len(frags) > N:
        bad.append(f"{len(frags)} fragments cannot each go once in {N} sends")
    layers = [i for f in frags for i in f["layers"]]
    if layers != list(range(len(layers))):
        bad.append("fragments must cover every layer once, in order")
    return bad


def tables(plan: Plan, wide: bool = False) -> list[Any]:
    """Fragments, the schedule, and communication vs DiLoCo / Streaming DiLoCo."""
    d, p = plan.decisions, plan.predicted
    out: list[Any] = []
    ft = table(f"fragments (layer groups): P = {len(d['fragments'])}")
    for c in ("fragment", "layers", "bytes", "sync s", "hidden"):
        ft.add_column(c, justify="left" if c == "layers" else "right")
    for f in d["fragments"]:
        ls = f["layers"]
        ft.add_row(str(f["fragment"]), f"{ls[0]}-{ls[-1]}" if len(ls) > 1 else str(ls[0]), fmt_bytes(f["bytes"]),
                   f"{f['sync_s']:.4g}", "yes" if f["hidden"] else "NO")
    out.append(ft)
    st = table("schedule")
    st.add_column("decision")
    st.add_column("value", justify="right")
    rows = [("inner steps per window H", d["inner_steps_H"]), ("sends per window N", d["sends_per_window_N"]),
            ("slot h = H / N (steps)", d["slot_steps_h"]), ("in-flight delay tau (steps)", d["delay_steps_tau"]),
            ("fragment choice", d["choice"]), ("merge", d["merge"]), ("lambda0", d["lam0"]), ("kappa", d["kappa"]),
            ("compensation guard", d["guard"]), ("why this merge", d.get("merge_reason", "-")),
            ("WAN", f"{d['wan']['rate_bps'] / 1e6:.4g} Mbit/s, RTT {d['wan']['rtt_s'] * 1e3:.4g} ms")]
    for k, v in rows:
        st.add_row(k, str(v))
    out.append(st)
    ct = table("predicted per inner step")
    for c in ("config", "step s", "exposed s", "hidden s", "payload/step", "unhidden"):
        ct.add_column(c, justify="left" if c == "config" else "right")
    label = "CoCoDC" if d["merge"] == "taylor" else "torchft Streaming DiLoCo"
    cfgs = [(f"plan ({label})", p)] + [(k, b.predicted) for k, b in sorted(plan.baselines.items())]
    for name, m in cfgs:
        ct.add_row(name, f"{m['step_time_s']:.4g}", f"{m['exposed_comm_s_per_step']:.3g}",
                   f"{m['hidden_comm_s_per_step']:.3g}", fmt_bytes(m["payload_bytes_per_step"]),
                   ",".join(map(str, m["unhidden_fragments"])) or "-")
    out.append(ct)
    out.append(Text(f"speed-up vs DiLoCo (blocking): {p['speedup_vs_diloco']:.3g}x; regions: "
                    + ", ".join(f"{r['name']} ({r['hardware']}, {r['step_time_s'] * 1e3:.4g} ms/step)"
                                for r in d["regions"])))
    return out


def receipt_views(rec: dict[str, Any]) -> list[Any]:
    """The run receipt as a table."""
    t = table(f"geo-train run: {rec['config']} ({rec['link']})")
    t.add_column("figure")
    t.add_column("measured", justify="right")
    t.add_column("predicted (plan)", justify="right")
    t.add_column("predicted at measured compute", justify="right")
    tot = rec["totals"]
    t.add_row("step time s", f"{tot['step_time_s']:.4g}", f"{tot['predicted_step_time_s']:.4g}",
              f"{tot['repredicted_step_time_s']:.4g}")
    t.add_row("exposed comm s/step", f"{tot['exposed_comm_s_per_step']:.3g}",
              f"{tot['predicted_exposed_comm_s_per_step']:.3g}", f"{tot['repredicted_exposed_comm_s_per_step']:.3g}")
    if "exposed_comm_s_per_step_replayed" in tot:
        t.add_row("exposed comm s/step, replayed from the measured step times", "",
                  "", f"{tot['exposed_comm_s_per_step_replayed']:.3g}")
        t.add_row("exposed comm s/step, model with the measured jitter "
                  f"({tot['compute_jitter_s'] * 1e3:.3g} ms/step)", "", "",
                  f"{tot['repredicted_with_jitter_exposed_comm_s_per_step']:.3g}")
    t.add_row("payload bytes/step", fmt_bytes(tot["payload_bytes_per_step"]),
              fmt_bytes(tot["predicted_payload_bytes_per_step"]), "")
    t.add_row("compute s/step", f"{tot['compute_step_s']:.4g}", f"{tot['predicted_compute_step_s']:.4g}", "")
    t.add_row("held-out perplexity", f"{tot['final_ppl']:.4g}", "", "")
    out: list[Any] = [t]
    out.append(Text(f"regions agree on every fragment choice: {tot['choices_agree']}; every fragment sent once per "
                    f"window: {tot['every_fragment_per_window']}; syncs committed: {tot['commits']}"))
    for f in rec["flags"]:
        out.append(Text(f"flag: {f}"))
    return out
