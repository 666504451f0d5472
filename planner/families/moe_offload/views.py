"""moe-offload views for `planner inspect`: the memory breakdown, the per-layer table and the budget plot.

Tables fit 80 columns by default (short layer names, the decisions and predicted figures); `--wide`
adds the simulated figures and the predictor recall.
"""
from __future__ import annotations

import re
from typing import Any

from rich.table import Table

from planner.schema import Plan
from planner.units import fmt_bytes
from planner.tables import table


def short_layer(name: str) -> str:
    """'model.layers.12' -> '12' (the decoder layer index); other names are kept."""
    m = re.search(r"(\d+)$", name)
    return m.group(1) if m else name


def memory_table(plan: Plan) -> Table:
    """Where the device memory goes."""
    m = plan.decisions.get("memory", {})
    t = table("device memory")
    t.add_column("item")
    t.add_column("size", justify="right")
    for key in ("device_memory_bytes", "non_expert_bytes", "kv_cache_bytes", "staging_bytes", "workspace_bytes",
                "margin_bytes", "available_for_experts_bytes", "expert_cache_budget_bytes", "all_experts_bytes"):
        if key in m:
            t.add_row(key.replace("_bytes", "").replace("_", " "), fmt_bytes(m[key]))
    if "budget_source" in m:
        t.add_row("budget source", str(m["budget_source"]))
    return t


def moe_layers_table(plan: Plan, wide: bool = False) -> Table:
    """Per-layer decisions (budget, theta, cached tops, prefetch, where misses are served) and predicted figures."""
    d = plan.decisions
    n = d["num_experts"]
    t = table("per MoE layer; theta = cached share of each expert's rows (whole: host/split layers cache whole "
              "experts); misses: host = computed on the host CPU, link = copied to the device, splitN% = top N% of "
              "each miss's rows copied and computed on the device, the rest on the host")
    cols = [("layer", "left"), ("budget", "right"), ("theta", "right"), ("cached", "right"), ("pf", "center"),
            ("misses", "left"), ("hit", "right")]
    if wide:
        cols += [("hit sim", "right"), ("recall", "right")]
    cols += [("stall ms", "right")]
    if wide:
        cols += [("stall sim", "right")]
    cols += [("MB/tok", "right")]
    for col, just in cols:
        t.add_column(col, justify=just)
    for lay in d.get("layers", []):
        p, s = lay["predicted"], lay["simulated"]
        theta = "whole" if lay.get("misses_on") in ("split", "host_cpu") else f"{lay['split_ratio']:.3f}"
        row = [short_layer(lay["layer"]), short_bytes(lay["budget_bytes"]), theta,
               f"{lay['cached_experts']}/{n}", "yes" if lay["prefetch"] else "no",
               misses_label(lay), f"{p['hit_rate']:.1%}"]
        if wide:
            row += [f"{s['hit_rate']:.1%}", f"{p['recall']:.2f}"]
        row += [f"{p['stall_ms']:.2f}"]
        if wide:
            row += [f"{s['stall_ms']:.2f}"]
        row += [f"{p['bytes_per_token'] / 1e6:.1f}"]
        t.add_row(*row)
    return t


def short_bytes(n: float) -> str:
    """Bytes in at most 6 characters: '672M', '1.50G', '0'."""
    if n <= 0:
        return "0"
    for unit, scale in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= scale:
            v = n / scale
            return f"{v:.2f}{unit}" if v < 10 else f"{v:.0f}{unit}"
    return f"{n:.0f}"


def misses_label(lay: dict[str, Any]) -> str:
    """How one layer serves its misses, in a few characters."""
    on = lay.get("misses_on")
    if on == "split":
        return f"split{float(lay.get('split_fraction', 0.0)):.0%}"
    return "host" if on == "host_cpu" else "link"


def floor_table(plan: Plan, wide: bool = False) -> Table | None:
    """The physical floor: its value, the term that binds it, and the terms of its schedule."""
    b = plan.bound
    if b is None or "binding" not in b.predicted:
        return None
    p = b.predicted
    floor_ms = float(p.get("tpot_ms_bound", p.get("tpot_ms", b.value)))
    plan_ms = float(plan.simulated.get("tpot_ms") or plan.predicted["tpot_ms"])
    t = table(f"decode floor {floor_ms:.1f} ms/token on the held-out sequences (plan, simulated held out: "
              f"{plan_ms / floor_ms:.2f}x): binding term {p['binding']}")
    t.add_column("term")
    t.add_column("ms/token", justify="right")
    t.add_column("weight", justify="right")
    mult = p.get("multipliers", {})
    path_w = sum(v for k, v in mult.items() if k.startswith("critical path"))
    rows = (("host DRAM at peak (non-resident bytes / P)", p.get("dram_ms"), mult.get("dram", 0.0)),
            ("link (copied bytes / BW)", p.get("link_ms"), mult.get("link", 0.0)),
            ("layer chain: sum of max(host, device)", p.get("critical_path_ms"), path_w),
            ("  of which the device alone", p.get("critical_path_device_ms"), None))
    for label, v, w in rows:
        t.add_row(label, f"{v:.1f}" if v is not None else "-", f"{w:.2f}" if w is not None else "")
    if wide:
        t.add_row("clairvoyant admissions per token", f"{p.get('admissions_per_token', 0.0):.2f}", "")
        t.add_row("dual evaluations / cut-model ceiling ms", f"{p.get('oracles', 0)}", f"{p.get('upper_model_ms', 0.0):.1f}")
    return t


def inspect_tables(plan: Plan, wide: bool = False) -> list[Any]:
    """Everything the family shows in `planner inspect`: memory, per-layer decisions, the floor."""
    out: list[Any] = [memory_table(plan), moe_layers_table(plan, wide)]
    pt = prefill_table(plan, wide)
    if pt is not None:
        out.append(pt)
    ft = floor_table(plan, wide)
    if ft is not None:
        out.append(ft)
    st = sensitivity_table(plan)
    if st is not None:
        out.append(st)
    if wide and plan.decisions.get("constants"):
        out.append(constants_table(plan))
    return out


def sensitivity_table(plan: Plan) -> Table | None:
    """The plan's lead over each replayed baseline across the uncertain constants (predicted)."""
    sens = plan.decisions.get("sensitivity")
    if not sens:
        return None
    t = table(f"lead over each baseline across {sens['points']} settings of host efficiency, link rate and DRAM "
              f"contention (predicted; nominal: {sens['nominal']})")
    for col, just in (("baseline", "left"), ("nominal", "right"), ("worst", "right"), ("best", "right"),
                      ("worst at", "left")):
        t.add_column(col, justify=just)
    for name, lead in sorted(sens["lead_vs"].items()):
        t.add_row(name, f"{lead['nominal']:.1%}", f"{lead['worst']:.1%}", f"{lead['best']:.1%}", lead["worst_at"])
    return t


def constants_table(plan: Plan) -> Table:
    """Every hardware constant the plan rests on, with its source."""
    t = table("constants and their sources (uncertain ones span the range shown)")
    for col in ("constant", "value", "range", "source"):
        t.add_column(col)
    for c in plan.decisions["constants"]:
        v = c["value"]
        t.add_row(c["name"], f"{v:.4g}" if isinstance(v, float) else str(v), c.get("range", ""), c["source"])
    return t


def prefill_table(plan: Plan, wide: bool = False) -> Table | None:
    """Per layer: where the prompt's experts compute, and the break-even prompt length (stream beats host)."""
    req = plan.decisions.get("request")
    if not req:
        return None
    t = table(f"prefill of {req['prefill_tokens']} tokens per layer (expected experts): used = non-resident experts "
              f"the prompt routes to; streamed = copied whole and computed on the device; host = computed on the host "
              f"(a split layer does both to every used expert, by rows); all-stream from = prompt tokens from which "
              f"streaming every miss beats computing every miss on the host (the rule chosen may be a split or a "
              f"threshold, faster than both)")
    for col, just in (("layer", "left"), ("resident", "right"), ("used", "right"), ("streamed", "right"),
                      ("host", "right"), ("rule", "left"), ("all-stream from", "right"), ("ms", "right")):
        t.add_column(col, justify=just)
    for lay in plan.decisions.get("layers", []):
        pf = lay.get("prefill")
        if pf is None:
            continue
        thr = pf.get("stream_if_tokens_at_least")
        rule = (f"split {pf['split_fraction']:.0%}" if pf.get("split_fraction") is not None
                else "all host" if thr is None else "all stream" if thr <= 0 else f">= {thr:.0f} tok")
        be = pf.get("break_even_prompt_tokens")
        if pf.get("split_fraction") is not None:
            used = max(pf["streamed"], pf["on_host"])
            streamed, host = f"rows {pf['split_fraction']:.0%}", f"rows {1 - pf['split_fraction']:.0%}"
        else:
            used = pf["streamed"] + pf["on_host"]
            streamed, host = f"{pf['streamed']:.1f}", f"{pf['on_host']:.1f}"
        t.add_row(short_layer(lay["layer"]), str(pf["resident"]), f"{used:.1f}", streamed, host,
                  rule, "never" if be is None else str(be), f"{pf['time_ms']:.1f}")
    return t


def budget_plot(plan: Plan) -> Any:
    """Budget and theta per layer (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = plan.decisions.get("layers", [])
    x = list(range(len(layers)))
    fig, ax1 = plt.subplots(figsize=(10, 4))
    ax1.bar(x, [l["budget_bytes"] / 2**30 for l in layers], color="tab:blue", alpha=0.6, label="budget (GiB)")
    host = [i for i, l in enumerate(layers) if l.get("misses_on") == "host_cpu"]
    if host:
        ax1.scatter(host, [0] * len(host), marker="^", color="black", label="misses on host CPU")
        ax1.legend(loc="upper left")
    ax1.set_xlabel("MoE layer")
    ax1.set_ylabel("VRAM budget (GiB)")
    ax2 = ax1.twinx()
    ax2.plot(x, [l["split_ratio"] for l in layers], color="tab:red", marker="o", label="split ratio theta")
    ax2.set_ylabel("split ratio theta")
    ax2.set_ylim(0, 1.05)
    ax1.set_title(f"{plan.model.name} on {plan.hardware.name}: budget and theta per layer")
    fig.tight_layout()
    return fig
