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


def baselines_table(plan: Plan, metrics: tuple[str, ...]) -> Table:
    """Plan, every baseline and the bound, predicted and simulated, with the ratio to the plan."""
    t = Table(title="plan vs baselines (same inputs)", title_justify="left")
    t.add_column("config")
    for m in metrics:
        t.add_column(f"{m} (pred)", justify="right")
        t.add_column(f"{m} (sim)", justify="right")
    obj = plan.objective.metric
    t.add_column(f"{obj} vs plan", justify="right")
    t.add_column("policy parameters")

    def row(name: str, pred: Any, sim: Any, params: Any, style: str = "") -> None:
        cells = [name]
        for m in metrics:
            if "bytes" in m:
                cells += [fmt_bytes(pred[m]) if pred.get(m) is not None else "-",
                          fmt_bytes(sim[m]) if sim.get(m) is not None else "-"]
            else:
                cells += [_f(pred.get(m)), _f(sim.get(m))]
        ratio = pred.get(obj) / plan.objective.value if pred.get(obj) else None
        cells.append(f"{ratio:.2f}x" if ratio else "-")
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


def render(plan: Plan) -> Group:
    """The whole inspect view."""
    parts: list[Any] = [header(plan)]
    if plan.family == "moe-offload":
        parts.append(memory_table(plan))
        parts.append(moe_layers_table(plan))
        parts.append(baselines_table(plan, ("tpot_ms", "hit_rate", "bytes_per_token")))
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


def plot(plan: Plan, path: str) -> None:
    """Budget and theta per layer (moe-offload) as a PNG, written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from planner.atomic_io import write_bytes_atomic

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
