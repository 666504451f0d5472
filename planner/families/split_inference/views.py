"""split-inference views for `planner inspect`: the stage times, the tensors crossing the link, the
bandwidth plan table, and the stage-timeline plot of the plan against Neurosurgeon."""
from __future__ import annotations

from typing import Any

from rich.text import Text

from planner.schema import Plan
from planner.units import fmt_bytes, fmt_rate
from planner.tables import table


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e3 else f"{x:,.0f}"
    return str(x)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def split_tables(plan: Plan, wide: bool = False) -> list[Any]:
    """Stage times, the tensors crossing the link, and the bandwidth plan table."""
    d, p = plan.decisions, plan.predicted
    out: list[Any] = []
    st = table(f"pipeline: {d['edge_device']} -> {fmt_rate(d['link']['uplink_bits_per_s'])} "
                     f"(RTT {d['link']['rtt_ms']:g} ms) -> {d['cloud_device']}")
    cols = ["edge ms", "link ms", "cloud ms", "period ms", "latency ms", "req/s", "bytes/req"]
    for col in cols:
        st.add_column(col, justify="right")
    st.add_row(_f(p["edge_ms"]), _f(p["link_ms"]), _f(p["cloud_ms"]), _f(p["period_ms"]), _f(p["latency_ms"]),
               _f(p["throughput_rps"]), fmt_bytes(p["bytes_per_request"]))
    out.append(st)
    out.append(Text(f"accuracy drop {_f(p['accuracy_drop'])} ({p['accuracy_kind']}), cap {d['epsilon']:g}"))
    ct = table(f"tensors crossing the link ({len(d['edge_nodes'])} nodes on the edge, {d['cloud_nodes']} in "
                     "the cloud)")
    cols = ["tensor", "shape", "bits", "bytes", "drop"]
    if wide:
        cols[2:2] = ["dtype", "native"]
    for col in cols:
        ct.add_column(col, justify="left" if col in ("tensor", "shape", "dtype") else "right")
    for r in d["cut_tensors"]:
        row = [_short(r["name"], 28 if not wide else 60), "x".join(map(str, r["shape"])), str(r["bits"]),
               fmt_bytes(r["bytes"]), _f(r["single_tensor_drop"])]
        if wide:
            row[2:2] = [r["dtype"], str(r["native_bits"])]
        ct.add_row(*row)
    if not d["cut_tensors"]:
        ct.add_row("(none: all on the edge)", *[""] * (len(cols) - 1))
    out.append(ct)
    if d.get("plan_table"):
        pt = table("plan table by uplink bandwidth (the runtime switches between rows)")
        for col in ("uplink", "cut tensors", "bits", "edge nodes", "period ms", "latency ms", "J ms"):
            pt.add_column(col, justify="left" if col in ("cut tensors", "bits") else "right")
        for r in d["plan_table"]:
            names = ", ".join(r["cut_tensors"]) or "(all edge)"
            pt.add_row(fmt_rate(r["uplink_bits_per_s"]), _short(names, 24 if not wide else 80),
                       ",".join(map(str, r["bits"])), str(r["edge_nodes_count"]), _f(r["period_ms"]),
                       _f(r["latency_ms"]), _f(r["objective_ms"]))
        out.append(pt)
    out.append(Text(f"accuracy: {d['accuracy']['description']}", style="dim"))
    return out


def _timeline(ax: Any, title: str, m: Any, samples: int = 4) -> None:
    """Pipelined stage occupancy of `samples` requests: each stage starts a request once it is free."""
    stages = (("edge", m["edge_ms"], "tab:blue"), ("link", m["link_ms"], "tab:orange"), ("cloud", m["cloud_ms"], "tab:green"))
    free = [0.0, 0.0, 0.0]
    for k in range(samples):
        t = 0.0
        for j, (_, dur, color) in enumerate(stages):
            start = max(t, free[j])
            if dur > 0:
                ax.barh(2 - j, dur, left=start, color=color, edgecolor="black", alpha=0.8)
                ax.text(start + dur / 2, 2 - j, str(k + 1), ha="center", va="center", fontsize=7)
            free[j] = start + dur
            t = start + dur
    ax.set_yticks([2, 1, 0], [s[0] for s in stages])
    ax.set_title(f"{title}: period {m['period_ms']:.3g} ms, latency {m['latency_ms']:.3g} ms")
    ax.set_xlabel("time (ms)")


def timeline_plot(plan: Plan) -> Any:
    """Stage timeline of the plan and of Neurosurgeon (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    _timeline(axes[0], "plan (COACH)", plan.predicted)
    ns = plan.baselines.get("neurosurgeon")
    if ns is not None:
        _timeline(axes[1], "Neurosurgeon", ns.predicted)
    fig.tight_layout()
    return fig
