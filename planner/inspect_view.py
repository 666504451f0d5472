"""Readable views of a plan for `planner inspect`: the header, the family's own tables, the plan against
every baseline and the bound, and the notes. Returns rich renderables; the CLI prints them.

Default views fit an 80-column terminal; `wide=True` shows every column.
"""
from __future__ import annotations

from typing import Any, Mapping

from rich.console import Group
from rich.table import Table
from rich.text import Text

from planner.families.base import Family
from planner.schema import Plan
from planner.units import fmt_bytes, fmt_count
from planner.tables import table


def _f(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e3 else f"{x:,.0f}"
    return str(x)


def header(plan: Plan) -> Table:
    """Who, what, with which solver."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("family", plan.family)
    t.add_row("model", f"{plan.model.name} ({fmt_count(plan.model.num_params)} params, {plan.model.dtype}"
                       f"{', tiny' if plan.model.tiny else ''})")
    hw = plan.hardware
    what = (f"{hw.source}; up to {fmt_bytes(hw.memory_bytes)} per device" if hw.role == "clients"
            else fmt_bytes(hw.memory_bytes))   # a population's memory is never summed over its devices
    t.add_row("hardware", f"{hw.name} ({what})" + "".join(f"; {h.role} {h.name}" for h in plan.extra_hardware))
    wall = f", {plan.solver.wall_time_s:.3f} s" if plan.solver.wall_time_s is not None else ""
    t.add_row("solver", f"{plan.solver.name}: {plan.solver.status}{wall}")
    t.add_row("objective", f"{plan.objective.metric} = {_f(plan.objective.value, 5)} ({plan.objective.sense})")
    reason = plan.inputs.get("scenario_reason")
    if reason:
        t.add_row("scenario", str(reason))
    return t




VS_PLAN_HEADER = "vs plan (>1 worse)"


def worse_ratio(value: Any, plan_value: float, sense: str) -> float | None:
    """How many times worse `value` is than the plan's objective (>1 worse, <1 better), whichever way the
    objective points: value/plan for "min", plan/value for "max"; None where a figure is missing or zero."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value or not plan_value:
        return None
    return value / plan_value if sense == "min" else plan_value / value


def baselines_table(plan: Plan, metrics: tuple[str, ...], wide: bool = False,
                    labels: Mapping[str, str] | None = None) -> Table:
    """Plan, every baseline and the bound: predicted (and simulated, labelled, where a simulator exists) figures
    and "vs plan", how many times worse than the plan each row is on the objective, one convention for every
    family: value/plan where the objective is minimised, plan/value where it is maximised, so >1 is worse;
    `wide` adds each baseline's policy parameters."""
    names = ["plan", *plan.baselines] + (["bound"] if plan.bound else [])
    obj = plan.objective.metric
    # simulated figures beside every metric with --wide; at 80 columns beside the objective only
    sim_of = {m: bool(plan.simulated) and (wide or m == obj) for m in metrics}
    headers = [h for m in metrics for h in (((labels or {}).get(m, m), "(sim)") if sim_of[m] else
                                            ((labels or {}).get(m, m),))]

    def cell(v: Any, m: str) -> str:
        if v is None:
            return "-"
        if "bytes" in m:
            return fmt_bytes(v)
        if m == "hit_rate":
            return f"{v:.1%}"
        return _f(v, 3)

    def row(pred: Any, sim: Any, params: Any) -> list[str]:
        cells = [cell(src.get(m), m) for m in metrics for src in ((pred, sim) if sim_of[m] else (pred,))]
        ratio = worse_ratio(pred.get(obj), plan.objective.value, plan.objective.sense)
        cells.append(f"{ratio:.2f}x" if ratio is not None else "-")
        if wide:
            cells.append(", ".join(f"{k}={_f(v)}" for k, v in sorted(params.items())) if params else "")
        return cells

    rows = [("plan", row(plan.predicted, plan.simulated, {}), "bold green")]
    rows += [(n, row(plan.baselines[n].predicted, plan.baselines[n].simulated, plan.baselines[n].params), "")
             for n in sorted(plan.baselines)]
    if plan.bound:
        rows.append(("bound", row(plan.bound.predicted, plan.bound.simulated, {}), "dim"))
    t = table("plan vs baselines (same inputs)" + ("; (sim) = simulated" if plan.simulated else ""))
    t.add_column("config", no_wrap=True, min_width=max(len(n) for n in names))   # names are never cut
    for i, h in enumerate(headers):                                               # nor are figures: headers wrap
        t.add_column(h, justify="right", min_width=max(len(r[1][i]) for r in rows))
    t.add_column(VS_PLAN_HEADER, justify="right", min_width=max(len(r[1][len(headers)]) for r in rows))
    if wide:
        t.add_column("policy parameters")
    for name, cells, style in rows:
        t.add_row(name, *cells, style=style)
    return t


def render(plan: Plan, fam: Family | None, wide: bool = False) -> Group:
    """The whole inspect view."""
    parts: list[Any] = [header(plan)]
    if fam is not None:
        parts.extend(fam.inspect(plan, wide))
        metrics = fam.baseline_metrics(plan, wide)
    else:
        metrics = tuple(k for k in plan.predicted if isinstance(plan.predicted[k], (int, float)))[:4]
    parts.append(baselines_table(plan, metrics, wide, fam.metric_labels if fam is not None else None))
    if plan.bound:
        parts.append(Text(f"bound ({plan.bound.kind}): {plan.objective.metric} = {plan.bound.value:.4g}; "
                          f"plan gap to bound {plan.bound.gap:.1%}"))
    if plan.simulated.get("label"):
        parts.append(Text(f"(sim) = {plan.simulated['label']}", style="dim"))
    for note in plan.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)


PLOT_FORMATS = ("png", "pdf", "svg")
# The mark `inspect --plot` puts in a figure's metadata (PNG Software text chunk, PDF and SVG Creator), followed by
# the sha256 of the plan drawn; `--plot` replaces only a file that carries it (a user's figure never does).
FIGURE_MARK = "written by planner inspect --plot; plan sha256:"
_MARK_KEY = {"png": "Software", "pdf": "Creator", "svg": "Creator"}


def figure_mark(plan: Plan) -> str:
    """The metadata text naming the command and the plan (sha256 of its canonical JSON)."""
    import hashlib

    from planner.serde import dumps

    return FIGURE_MARK + hashlib.sha256(dumps(plan).encode("utf-8")).hexdigest()


def save_figure(fig: Any, fmt: str, plan: Plan) -> bytes:
    """The figure's bytes in `fmt` (png, pdf or svg), marked as written by `planner inspect --plot` for `plan`."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=100, metadata={_MARK_KEY[fmt]: figure_mark(plan)})
    plt.close(fig)
    return buf.getvalue()
