"""spec-serve views: `planner inspect` tables and the run receipt's tables (80 columns)."""
from __future__ import annotations

from typing import Any

from rich.text import Text

from planner.schema import Plan
from planner.tables import table


def plan_tables(plan: Plan, wide: bool = False) -> list[Any]:
    """Placement, routing table with γ per domain, acceptance per drafter set and domain, batch cap."""
    d, p = plan.decisions, plan.predicted
    out: list[Any] = []
    out.append(Text(f"configuration: {d['configuration']}; decoding {d['decoding']}; batch cap {d['group']} requests"
                    f" per verification ({'pipelined, two groups' if d['pipelined'] else 'not pipelined'}); "
                    f"γ bounds {d['gamma_bounds'][0]}..{d['gamma_bounds'][1]}"
                    f"{' (adaptive)' if d['adaptive'] else ' (fixed)'}; workload {d['workload']}, "
                    f"arrival {d['arrival_rps'] or 'offline'}"))
    rec = d.get("recommendation")
    if rec:
        out.append(Text(f"recommended: {rec['why']}; `planner run` serves {rec['configuration']}"))
    pt = table("drafter placement (emulated node speed: seconds per CPU second here)")
    for c in ("node", "drafter", "scale", "delay", "rate"):
        pt.add_column(c, justify="left" if c in ("node", "drafter") else "right")
    pt.add_row(d["verifier"]["name"] + " (verifier)", "target" + (f" + {d['colocated']} (co-located)"
                                                                  if d.get("colocated") else ""),
               f"{d['verifier']['scale']:.3g}", "-", "-")
    for n, dr in sorted(d["placement"].items()):
        lk = d["links"][n]
        pt.add_row(n, dr or "-", f"{d['node_scale'][n]:.3g}", f"{1e3 * lk['delay_s']:.3g} ms",
                   f"{lk['rate_bps'] / 1e6:.4g} Mbit/s")
    out.append(pt)
    if d.get("replicas"):
        out.append(Text("replicated (equal node count): the target" + (f" + {d['colocated']}" if d.get("colocated") else "")
                        + " on " + ", ".join(f"{r['node']} (scale {r['scale']:.3g})" for r in d["replicas"])
                        + f"; requests split by the {d['router']} router"))
    rt = table("routing table (domain -> drafters, γ; measured acceptance and tokens per verification)")
    for c in ("domain", "drafters", "γ", "α", "E[n]", "fallback"):
        rt.add_column(c, justify="left" if c in ("domain", "drafters", "fallback") else "right")
    for dom in d["domains"]:
        entries = d["routing"].get(dom) or []
        if not entries:
            rt.add_row(dom, "target-only", "0", "-", "1.00", "-")
            continue
        e = entries[0]
        g = d["gamma_by_domain"][dom]
        rt.add_row(dom, "+".join(e["drafters"]), str(g), f"{e['alpha']:.3f}",
                   f"{d['expected_tokens'][dom][str(g)]:.2f}", " > ".join("+".join(x["drafters"]) for x in entries[1:3]))
    out.append(rt)
    at = table("acceptance α per drafter set and domain (calibration, greedy match rate)")
    at.add_column("set")
    for dom in d["domains"]:
        at.add_column(dom, justify="right")
    for s, row in sorted(d["acceptance"].items()):
        at.add_row(s, *[f"{row[dom]:.3f}" for dom in d["domains"]])
    out.append(at)
    out.append(Text(f"predicted: goodput {p['goodput_tps']:.2f} tokens/s, {p['tokens_per_verify']:.2f} tokens per "
                    f"verification, latency p50 {p['latency_p50_s']:.2f} s / p95 {p['latency_p95_s']:.2f} s, verifier idle "
                    f"{100 * p['verifier_idle']:.0f}%, drafters idle {100 * p['drafter_idle']:.0f}% (EMULATED node "
                    f"speeds and links); routing accuracy on calibration prompts "
                    f"{100 * d['routing_accuracy_calibration']:.0f}%"))
    if wide:
        ct = table("per-token CPU seconds on this machine (one thread)")
        ct.add_column("side")
        ct.add_column("s/token", justify="right")
        for k, v in sorted(d["draft_cpu_s"].items()):
            ct.add_row(f"draft {k}", f"{v:.4g}")
        a, b = d["verify_cpu_s"]
        ct.add_row("verify a + b·T", f"{a:.4g} + {b:.4g}·T")
        out.append(ct)
    return out


def receipt_views(rec: dict[str, Any]) -> list[Any]:
    """The run receipt: totals measured vs predicted, per-domain rows, events."""
    tot = rec["totals"]
    t = table(f"receipt: {rec['config']} on {tot['requests']} requests ({tot['workload']}, transport {tot['transport']})")
    for c in ("figure", "measured", "predicted", "err"):
        t.add_column(c, justify="left" if c == "figure" else "right")
    for k in ("goodput_tps", "tokens_per_verify", "latency_p50_s", "latency_p95_s", "verifier_idle", "drafter_idle"):
        m, pr = tot.get(k), tot.get(f"{k}_predicted")
        err = f"{100 * (m / pr - 1):+.1f}%" if isinstance(pr, (int, float)) and pr else "-"
        t.add_row(k, f"{m:.3f}" if isinstance(m, (int, float)) else "-",
                  f"{pr:.3f}" if isinstance(pr, (int, float)) else "-", err)
    views: list[Any] = [t]
    dt = table("per domain (measured)")
    for c in ("domain", "n", "drafters", "tok/verify", "latency p50"):
        dt.add_column(c, justify="left" if c in ("domain", "drafters") else "right")
    for dom, r in sorted(tot["by_domain"].items()):
        dt.add_row(dom, str(r["n"]), r["drafters"], f"{r['tokens_per_verify']:.2f}", f"{r['latency_p50_s']:.3f}")
    views.append(dt)
    views.append(Text(f"EMULATED clock (CPU seconds x node scale, link delay + bytes/rate); routing accuracy "
                      f"{100 * tot['routing_accuracy']:.0f}%; {tot['cycles']} cycles"))
    for e in tot["events"]:
        views.append(Text(f"{'recovery' if ('died' in e or 'unreachable' in e) else 'note'}: {e}"))
    return views
