"""fed-lora inspect views: a per-device table (aggregated by hardware kind and configuration for large
populations) that fits 80 columns, the round-time spread, and a plot of per-device round times."""
from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from planner.tables import table
from planner.units import fmt_bytes

PER_DEVICE_ROWS = 40


def _gib(x: float | None) -> str:
    """Compact bytes: 512K, 12.4M, 1.25G (binary units)."""
    if x is None:
        return "-"
    for div, unit in ((2**30, "G"), (2**20, "M"), (2**10, "K")):
        if x >= div:
            v = x / div
            return f"{v:.3g}{unit}"
    return f"{x:.0f}B"


def device_table(plan: Any, wide: bool = False) -> Table:
    """One row per device (populations up to 40 devices, or `wide`), else one row per (kind, depth, q)."""
    dec = plan.decisions["clients"]
    pred = plan.predicted.get("clients", {})
    devs = plan.inputs.get("population", {}).get("devices", {})
    if len(dec) <= PER_DEVICE_ROWS or wide:
        # Generated ids already start with the kind: then the kind column would only repeat them.
        with_kind = not all(cid.startswith(str(devs.get(cid, {}).get("kind", "\0"))) for cid in dec)
        t = table("per device (memory: budget and predicted peak; times in s)")
        cols = [("device", "left")] + ([("kind", "left")] if with_kind else []) + [
            ("mem", "right"), ("d", "right"), ("q", "right"), ("peak", "right"), ("round", "right"), ("wait", "right")]
        for c, j in cols:
            if c == "device":   # ids are never cut: rows of one kind differ only in their last characters
                t.add_column(c, justify=j, overflow="fold")
            else:
                t.add_column(c, justify=j, no_wrap=True, overflow="ellipsis", max_width=14 if c == "kind" else None)
        for cid in dec:
            c, e, dv = dec[cid], pred.get(cid, {}), devs.get(cid, {})
            row = [cid] + ([str(dv.get("kind", ""))] if with_kind else []) + [
                _gib(e.get("memory_budget_bytes")), str(c["lora_depth"]) if c["lora_depth"] else "out",
                str(len(c["act_quant_layers"])), _gib(e.get("peak_memory_bytes")),
                f"{e['round_time_s']:.3g}" if "round_time_s" in e else "-",
                f"{e['wait_s']:.3g}" if "wait_s" in e else "-"]
            t.add_row(*row)
        return t
    groups: dict[tuple[str, int, int], list[str]] = {}
    for cid, c in dec.items():
        kind = str(devs.get(cid, {}).get("kind", "?"))
        groups.setdefault((kind, int(c["lora_depth"]), len(c["act_quant_layers"])), []).append(cid)
    t = table(f"{len(dec)} devices by kind and configuration (times in s)")
    for c, j in (("kind", "left"), ("n", "right"), ("d", "right"), ("q", "right"), ("mem", "right"),
                 ("round", "right"), ("wait", "right")):
        t.add_column(c, justify=j, no_wrap=True, overflow="ellipsis", max_width=20 if c == "kind" else None)
    for (kind, d, q), ids in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        mems = [pred[i]["memory_budget_bytes"] for i in ids if i in pred]
        rounds = [pred[i]["round_time_s"] for i in ids if "round_time_s" in pred.get(i, {})]
        waits = [pred[i]["wait_s"] for i in ids if "wait_s" in pred.get(i, {})]

        def rng(v: list[float], f: Any) -> str:
            return "-" if not v else (f(min(v)) if min(v) == max(v) else f"{f(min(v))}-{f(max(v))}")

        t.add_row(kind, str(len(ids)), str(d) if d else "out", str(q), rng(mems, _gib),
                  rng(rounds, lambda x: f"{x:.3g}"), f"{sum(waits) / len(waits):.3g}" if waits else "-")
    return t


def summary_lines(plan: Any) -> list[Text]:
    """Round time and its spread, participants, memory, depth mix, coverage."""
    p = plan.predicted
    out = [Text(f"round time {p['round_time_s']:.4g} s, spread (max-min)/max {p['round_time_spread']:.1%}; "
                f"{p['participants']} training, {p['sitting_out']} sitting out; "
                f"progress {p['progress_rate_per_s']:.4g} per s")]
    out.append(Text(f"largest peak memory {fmt_bytes(p['max_peak_memory_bytes'])}; mean depth {p['mean_depth']:.2f} "
                    f"of {plan.decisions['num_blocks']} blocks; {p['quantised_blocks_total']} quantised blocks "
                    f"at {plan.decisions['act_bits']} bit"))
    hist = plan.decisions.get("depth_histogram", {})
    if hist:
        out.append(Text("configurations: " + ", ".join(f"{k} x{v}" for k, v in hist.items())))
    if plan.constraints.get("coverage_kappa"):
        out.append(Text(f"coverage of the top {plan.constraints['coverage_blocks']} blocks: "
                        + ", ".join(f"{c:.2f}" for c in p["coverage"][-int(plan.constraints['coverage_blocks']):])))
    return out


def fed_lora_tables(plan: Any, wide: bool = False) -> list[Any]:
    """The family's inspect renderables."""
    return [device_table(plan, wide), *summary_lines(plan)]


def round_time_plot(plan: Any) -> Any:
    """Per-device predicted round time (sorted), coloured by LoRA depth, with the round time line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = plan.predicted.get("clients", {})
    dec = plan.decisions["clients"]
    rows = sorted((pred[c]["round_time_s"], dec[c]["lora_depth"]) for c in dec if "round_time_s" in pred.get(c, {}))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if rows:
        sc = ax.scatter(range(len(rows)), [r[0] for r in rows], c=[r[1] for r in rows], cmap="viridis", s=12)
        fig.colorbar(sc, ax=ax, label="LoRA depth")
        ax.axhline(plan.predicted["round_time_s"], color="red", lw=1, label="round time")
        ax.legend(loc="upper left")
    ax.set_xlabel("device (sorted by round time)")
    ax.set_ylabel("predicted round time (s)")
    ax.set_title(f"{plan.model.name}: {len(dec)} clients, FedQuad plan")
    fig.tight_layout()
    return fig
