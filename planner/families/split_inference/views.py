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


OBJECTIVE_COLUMNS = {"throughput_rps": ("throughput_rps", "latency_ms", "objective_ms"),
                     "latency_ms": ("latency_ms", "throughput_rps", "objective_ms"),
                     "objective_ms": ("objective_ms", "throughput_rps", "latency_ms")}
LABELS = {"throughput_rps": "req/s", "latency_ms": "lat ms", "objective_ms": "J ms"}
OBJECTIVE_NAMES = {"throughput_rps": "throughput", "latency_ms": "latency", "objective_ms": "COACH's J"}


def objective_columns(plan: Plan) -> tuple[str, str, str]:
    """The plan's objective metric first, the other two beside it (older plans: J first)."""
    return OBJECTIVE_COLUMNS.get(plan.objective.metric, OBJECTIVE_COLUMNS["objective_ms"])


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
    cols = objective_columns(plan)
    out.append(Text(f"objective: {OBJECTIVE_NAMES[cols[0]]} ({LABELS[cols[0]]} {_f(p[cols[0]])}); beside it "
                    + ", ".join(f"{LABELS[c]} {_f(p[c])}" for c in cols[1:])))
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
        cols = objective_columns(plan)
        pt = table(f"plan table by uplink bandwidth, each row optimising {OBJECTIVE_NAMES[cols[0]]} "
                   "(the runtime switches between rows)")
        for col in ("uplink", "cut tensors", "bits", "edge nodes", *(LABELS[c] for c in cols)):
            pt.add_column(col, justify="left" if col in ("cut tensors", "bits") else "right")
        for r in d["plan_table"]:
            names = ", ".join(r["cut_tensors"]) or "(all edge)"
            got = {"throughput_rps": 1e3 / r["period_ms"] if r["period_ms"] > 0 else float("inf"),
                   "latency_ms": r["latency_ms"], "objective_ms": r["objective_ms"]}
            pt.add_row(fmt_rate(r["uplink_bits_per_s"]), _short(names, 24 if not wide else 80),
                       ",".join(map(str, r["bits"])), str(r["edge_nodes_count"]), *(_f(got[c]) for c in cols))
        out.append(pt)
    out.append(Text(f"accuracy: {d['accuracy']['description']}", style="dim"))
    return out


def _timeline(ax: Any, title: str, m: Any, samples: int = 4) -> None:
    """Pipelined stage occupancy of `samples` requests: each stage starts a request once it is free."""
    busy = m.get("link_busy_ms", m["link_ms"])        # the link is occupied for the bytes; propagation follows
    stages = (("edge", m["edge_ms"], "tab:blue", 0.0), ("link", busy, "tab:orange", m["link_ms"] - busy),
              ("cloud", m["cloud_ms"], "tab:green", 0.0))
    free = [0.0, 0.0, 0.0]
    for k in range(samples):
        t = 0.0
        for j, (_, dur, color, after) in enumerate(stages):
            start = max(t, free[j])
            if dur > 0:
                ax.barh(2 - j, dur, left=start, color=color, edgecolor="black", alpha=0.8)
                ax.text(start + dur / 2, 2 - j, str(k + 1), ha="center", va="center", fontsize=7)
            free[j] = start + dur
            t = start + dur + after
    ax.set_yticks([2, 1, 0], [s[0] for s in stages])
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("time (ms)")


def best_baseline(plan: Plan) -> str | None:
    """The baseline best at the plan's objective (feasible ones first), or None without baselines."""
    metric, sense = plan.objective.metric, plan.objective.sense
    scored = [((not (b.decisions or {}).get("feasible", True)),
               -b.predicted[metric] if sense == "max" else b.predicted[metric], name)
              for name, b in plan.baselines.items() if b.predicted.get(metric) is not None]
    return min(scored)[2] if scored else None


def timeline_plot(plan: Plan) -> Any:
    """Stage timeline of the plan and of the baseline best at the plan's objective (a matplotlib Figure);
    each title gives the objective's figure and the other two beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = objective_columns(plan)

    def title(name: str, m: Any) -> str:
        return f"{name}: " + ", ".join(f"{LABELS[c]} {_f(m.get(c))}" for c in cols)

    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    _timeline(axes[0], title(f"plan ({OBJECTIVE_NAMES[cols[0]]})", plan.predicted), plan.predicted)
    best = best_baseline(plan)
    if best is not None:
        m = plan.baselines[best].predicted
        _timeline(axes[1], title(f"best baseline at {OBJECTIVE_NAMES[cols[0]]}: {best}", m), m)
    fig.tight_layout()
    return fig
