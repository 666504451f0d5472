"""Readable views of a plan for `planner inspect`: header, metrics, baselines side by side, bound,
and the family's per-layer / per-device tables. Returns rich renderables; the CLI prints them.
"""
from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from planner.schema import Plan
from planner.units import fmt_bytes


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def header(plan: Plan) -> Table:
    """Who, what, with which solver."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("family", plan.family)
    t.add_row("model", f"{plan.model.name} ({plan.model.num_params / 1e9:.2f} B params, {plan.model.dtype}) {plan.model.fingerprint}")
    t.add_row("hardware", f"{plan.hardware.name} ({fmt_bytes(plan.hardware.memory_bytes)}) {plan.hardware.fingerprint}")
    wall = f", {plan.solver.wall_time_s:.3f} s" if plan.solver.wall_time_s is not None else ""
    t.add_row("solver", f"{plan.solver.name}: {plan.solver.status}{wall}")
    t.add_row("objective", f"{plan.objective.metric} = {_f(plan.objective.value, 5)} ({plan.objective.sense})")
    reason = plan.inputs.get("scenario_reason")
    if reason:
        t.add_row("scenario", str(reason))
    return t


def baselines_table(plan: Plan, metrics: tuple[str, ...], show_params: bool = True) -> Table:
    """Plan, every baseline and the bound, predicted (and simulated where a simulator exists), with the ratio to the plan."""
    t = Table(title="plan vs baselines (same inputs)", title_justify="left")
    t.add_column("config")
    with_sim = bool(plan.simulated)
    for m in metrics:
        t.add_column(f"{m} (pred)" if with_sim else m, justify="right")
        if with_sim:
            t.add_column(f"{m} (sim)", justify="right")
    obj = plan.objective.metric
    t.add_column(f"{obj} vs plan", justify="right")
    if show_params:
        t.add_column("policy parameters")

    def row(name: str, pred: Any, sim: Any, params: Any, style: str = "") -> None:
        cells = [name]
        for m in metrics:
            for src in ((pred, sim) if with_sim else (pred,)):
                v = src.get(m)
                cells.append("-" if v is None else fmt_bytes(v) if "bytes" in m else _f(v))
        ratio = pred.get(obj) / plan.objective.value if pred.get(obj) else None
        cells.append(f"{ratio:.2f}x" if ratio else "-")
        if show_params:
            cells.append(", ".join(f"{k}={_f(v)}" for k, v in sorted(params.items())) if params else "")
        t.add_row(*cells, style=style)

    row("plan", plan.predicted, plan.simulated, {}, "bold green")
    for name in sorted(plan.baselines):
        b = plan.baselines[name]
        row(name, b.predicted, b.simulated, b.params)
    if plan.bound:
        row("bound", plan.bound.predicted, plan.bound.simulated, {}, "dim")
    return t


def moe_layers_table(plan: Plan) -> Table:
    """Per-layer budget, split ratio, cached tops, prefetch and the predicted vs simulated figures."""
    d = plan.decisions
    t = Table(title="per-layer plan", title_justify="left")
    for col, just in (("layer", "left"), ("budget", "right"), ("theta", "right"), ("f_top", "right"),
                      ("cached", "right"), ("prefetch", "center"), ("hit pred", "right"), ("hit sim", "right"),
                      ("recall", "right"), ("stall ms pred", "right"), ("stall ms sim", "right"),
                      ("MB/token pred", "right")):
        t.add_column(col, justify=just)
    for lay in d.get("layers", []):
        p, s = lay["predicted"], lay["simulated"]
        t.add_row(lay["layer"], fmt_bytes(lay["budget_bytes"]), f"{lay['split_ratio']:.3f}", str(lay["f_top"]),
                  f"{lay['cached_experts']}/{d['num_experts']}", "yes" if lay["prefetch"] else "no",
                  f"{p['hit_rate']:.1%}", f"{s['hit_rate']:.1%}", f"{p['recall']:.2f}", f"{p['stall_ms']:.2f}",
                  f"{s['stall_ms']:.2f}", f"{p['bytes_per_token'] / 1e6:.1f}")
    return t


def memory_table(plan: Plan) -> Table:
    """Where the device memory goes."""
    m = plan.decisions.get("memory", {})
    t = Table(title="device memory", title_justify="left")
    t.add_column("item")
    t.add_column("bytes", justify="right")
    for key in ("device_memory_bytes", "non_expert_bytes", "kv_cache_bytes", "staging_bytes", "workspace_bytes",
                "margin_bytes", "available_for_experts_bytes", "expert_cache_budget_bytes", "all_experts_bytes"):
        if key in m:
            t.add_row(key.replace("_bytes", "").replace("_", " "), fmt_bytes(m[key]))
    if "budget_source" in m:
        t.add_row("budget source", str(m["budget_source"]))
    return t


def split_tables(plan: Plan) -> list[Any]:
    """Stage times, the tensors crossing the link, and the bandwidth plan table."""
    d, p = plan.decisions, plan.predicted
    out: list[Any] = []
    st = Table(title=f"pipeline: {d['edge_device']} -> {fmt_rate_bits(d['link']['uplink_bits_per_s'])} "
                     f"(RTT {d['link']['rtt_ms']:g} ms) -> {d['cloud_device']}", title_justify="left")
    for col in ("edge ms", "link ms", "cloud ms", "period ms", "latency ms", "req/s", "bytes/request", "accuracy drop"):
        st.add_column(col, justify="right")
    st.add_row(_f(p["edge_ms"]), _f(p["link_ms"]), _f(p["cloud_ms"]), _f(p["period_ms"]), _f(p["latency_ms"]),
               _f(p["throughput_rps"]), fmt_bytes(p["bytes_per_request"]),
               f"{_f(p['accuracy_drop'])} ({p['accuracy_kind']})")
    out.append(st)
    ct = Table(title=f"tensors crossing the link ({len(d['edge_nodes'])} nodes on the edge, {d['cloud_nodes']} in the cloud)",
               title_justify="left")
    for col in ("tensor", "shape", "dtype", "bits", "native", "bytes", "single-tensor drop"):
        ct.add_column(col, justify="left" if col in ("tensor", "shape", "dtype") else "right")
    for r in d["cut_tensors"]:
        ct.add_row(r["name"], str(r["shape"]), r["dtype"], str(r["bits"]), str(r["native_bits"]), fmt_bytes(r["bytes"]),
                   _f(r["single_tensor_drop"]))
    if not d["cut_tensors"]:
        ct.add_row("(nothing: the whole model runs on the edge)", "", "", "", "", "", "")
    out.append(ct)
    if d.get("plan_table"):
        pt = Table(title="plan table by uplink bandwidth (the runtime switches between these rows)", title_justify="left")
        for col in ("uplink", "cut tensors", "bits", "edge nodes", "period ms", "latency ms", "J ms"):
            pt.add_column(col, justify="left" if col in ("cut tensors", "bits") else "right")
        for r in d["plan_table"]:
            names = ", ".join(r["cut_tensors"]) or "(all edge)"
            pt.add_row(fmt_rate_bits(r["uplink_bits_per_s"]), names[:60], ",".join(map(str, r["bits"])),
                       str(r["edge_nodes_count"]), _f(r["period_ms"]), _f(r["latency_ms"]), _f(r["objective_ms"]))
        out.append(pt)
    out.append(Text(f"accuracy: {d['accuracy']['description']}", style="dim"))
    return out


def fmt_rate_bits(bps: float) -> str:
    """Bits per second, human-readable."""
    from planner.units import fmt_rate

    return fmt_rate(bps)


def render(plan: Plan) -> Group:
    """The whole inspect view."""
    parts: list[Any] = [header(plan)]
    if plan.family == "moe-offload":
        parts.append(memory_table(plan))
        parts.append(moe_layers_table(plan))
        parts.append(baselines_table(plan, ("tpot_ms", "hit_rate", "bytes_per_token")))
    elif plan.family == "split-inference":
        parts.extend(split_tables(plan))
        parts.append(baselines_table(plan, ("objective_ms", "period_ms", "latency_ms", "throughput_rps",
                                            "bytes_per_request", "accuracy_drop"), show_params=False))
    else:
        parts.append(baselines_table(plan, tuple(k for k in plan.predicted if isinstance(plan.predicted[k], (int, float)))))
    if plan.bound:
        parts.append(Text(f"bound: {plan.bound.kind}: {plan.objective.metric} = {plan.bound.value:.4g}; "
                          f"plan gap to bound {plan.bound.gap:.1%}"))
    if plan.simulated.get("label"):
        parts.append(Text(f"(sim) = {plan.simulated['label']}", style="dim"))
    for note in plan.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)


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


def plot(plan: Plan, path: str) -> None:
    """Budget and theta per layer (moe-offload), or the stage timeline of the plan and Neurosurgeon
    (split-inference), as a PNG written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.atomic_io import write_bytes_atomic

    if plan.family == "split-inference":
        fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
        _timeline(axes[0], "plan (COACH)", plan.predicted)
        ns = plan.baselines.get("neurosurgeon")
        if ns is not None:
            _timeline(axes[1], "Neurosurgeon", ns.predicted)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        write_bytes_atomic(path, buf.getvalue())
        return
    layers = plan.decisions.get("layers", [])
    if not layers:
        raise ValueError("this plan has no per-layer decisions to plot")
    x = list(range(len(layers)))
    fig, ax1 = plt.subplots(figsize=(10, 4))
    ax1.bar(x, [l["budget_bytes"] / 2**30 for l in layers], color="tab:blue", alpha=0.6, label="budget (GiB)")
    ax1.set_xlabel("MoE layer")
    ax1.set_ylabel("VRAM budget (GiB)")
    ax2 = ax1.twinx()
    ax2.plot(x, [l["split_ratio"] for l in layers], color="tab:red", marker="o", label="split ratio theta")
    ax2.set_ylabel("split ratio theta")
    ax2.set_ylim(0, 1.05)
    ax1.set_title(f"{plan.model.name} on {plan.hardware.name}: budget and theta per layer")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
