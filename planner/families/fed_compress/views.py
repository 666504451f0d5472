"""fed-compress views: `planner inspect` tables (80 columns), the plot, and the run receipt's tables."""
from __future__ import annotations

from typing import Any

from rich.text import Text

from planner.schema import Plan
from planner.tables import table
from planner.units import fmt_bytes

MAX_ROWS = 24   # rows of a narrow table before "... N more" (--wide shows every row)


def _id(text: str, width: int = 24) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _more(t: Any, shown: int, total: int, cols: int) -> None:
    if total > shown:
        t.add_row(f"… {total - shown} more (--wide)", *[""] * (cols - 1))


def fed_compress_tables(plan: Plan, wide: bool = False) -> list[Any]:
    """Per-client decisions (each client's last planned round), the per-round schedule, the codec."""
    d, p = plan.decisions, plan.predicted
    out: list[Any] = []
    clients = d["clients"]
    ct = table(f"clients at their last planned round ({len(clients)} of {len(d['population'])}); kept fractions, "
               "1 = full")
    cols = ["client", "round", "stale", "down", "up", "batch"]
    for c in cols:
        ct.add_column(c, justify="left" if c == "client" else "right")
    items = list(clients.items())
    shown = items if wide else items[:MAX_ROWS]
    for cid, c in shown:
        ct.add_row(_id(cid, 60 if wide else 24), str(c["round"]), str(c["staleness"]), f"{c['download_ratio']:.2f}",
                   f"{c['upload_ratio']:.2f}", str(c["batch_size"]))
    _more(ct, len(shown), len(items), len(cols))
    out.append(ct)
    rt = table(f"schedule: {len(d['rounds'])} rounds, re-planned every round (means over the round's clients)")
    cols = ["round", "clients", "down", "up", "batch", "traffic", "round s", "max wait s"]
    for c in cols:
        rt.add_column(c, justify="right")
    rounds = d["rounds"]
    shown_r = rounds if wide else rounds[:MAX_ROWS]
    for r in shown_r:
        cs = list(r["clients"].values())
        n = max(len(cs), 1)
        rt.add_row(str(r["round"]), str(len(cs)), f"{sum(c['download_ratio'] for c in cs) / n:.2f}",
                   f"{sum(c['upload_ratio'] for c in cs) / n:.2f}", f"{sum(c['batch_size'] for c in cs) / n:.1f}",
                   fmt_bytes(r["traffic_bytes"]), f"{r['round_time_s']:.3g}",
                   f"{max((c['predicted']['waiting_s'] for c in cs), default=0.0):.3g}")
    _more(rt, len(shown_r), len(rounds), len(cols))
    out.append(rt)
    codec = d["codec"]
    out.append(Text(f"download: {codec['download']} (top-K exact + 1-bit signs + mean/max, rebuilt from the device's "
                    f"previous model); upload: {codec['upload']}; full model {fmt_bytes(p['full_model_bytes'])}; "
                    f"mean kept down {p['mean_download_ratio']:.3f}, up {p['mean_upload_ratio']:.3f}"))
    gaps = []
    if "batch_gap_to_exact" in p:
        gaps.append(f"batches within {p['batch_gap_to_exact']:.2%} of the exact sweep (samples/s, worst round)")
    if "budget_gap_to_cpsat" in p:
        gaps.append(f"budgeted download within {p['budget_gap_to_cpsat']:.2%} of CP-SAT")
    if gaps:
        out.append(Text("exact references: " + "; ".join(gaps), style="dim"))
    best = d.get("recommended")
    if best:
        what = "Caesar's rule (the plan's schedule)" if best == "plan" else f"baseline {best}"
        ttt = p.get("traffic_to_target_bytes") if best == "plan" else plan.baselines[best].predicted.get(
            "traffic_to_target_bytes")
        mine = p.get("traffic_to_target_bytes")
        lead = f" ({ttt / mine:.3f}x the rule's)" if best != "plan" and ttt and mine else ""
        out.append(Text(f"recommended: {what}, least predicted traffic to target: "
                        f"{fmt_bytes(ttt) if ttt else '-'}{lead}; rounds to target "
                        f"{p.get('rounds_to_target_source', '')}", style="bold"))
    return out


def traffic_plot(plan: Plan) -> Any:
    """Predicted traffic per round for the plan and every baseline, and the plan's mean kept fractions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    rounds = [r["round"] for r in plan.decisions["rounds"]]
    ax1.plot(rounds, [r["traffic_bytes"] / 1e6 for r in plan.decisions["rounds"]], "k-", lw=2, label="plan (Caesar)")
    for name, b in sorted(plan.baselines.items()):
        ax1.plot(rounds, [r["traffic_bytes"] / 1e6 for r in b.decisions["rounds"]], lw=1, label=name)
    ax1.set_ylabel("predicted traffic (MB)")
    ax1.legend(fontsize=7, ncol=2)
    for key, label in (("download_ratio", "download kept"), ("upload_ratio", "upload kept")):
        ax2.plot(rounds, [sum(c[key] for c in r["clients"].values()) / max(len(r["clients"]), 1)
                          for r in plan.decisions["rounds"]], label=label)
    ax2.set_xlabel("round")
    ax2.set_ylabel("mean kept fraction")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _keeps(r: dict[str, Any], direction: str, wide: bool) -> str:
    """A round's kept fraction over its devices: the mean ('mean min-max' with --wide), or '-' (older receipts)."""
    mean = r.get(f"keep_{direction}_mean")
    if mean is None:
        return "-"
    lo, hi = r[f"keep_{direction}_min"], r[f"keep_{direction}_max"]
    return f"{mean:.2f} {lo:.2f}-{hi:.2f}" if wide and lo != hi else f"{mean:.2f}"


def receipt_views(receipt: dict[str, Any], wide: bool = False) -> list[Any]:
    """Per round: accuracy, measured vs predicted traffic, emulated vs predicted round time, dropouts."""
    tot = receipt["totals"]
    out: list[Any] = [Text.from_markup(f"[bold]receipt[/bold]: fed-compress, {receipt['config']}, {tot['mode']}"),
                      Text(receipt["link"], style="dim")]
    t = table("per round: bytes measured (payload) vs predicted; kept fractions (mean over devices, ↓ download, "
              "↑ upload); times EMULATED vs predicted")
    cols = ["round", "acc", "traffic", "pred", "kept↓", "kept↑", "round s", "pred s", "ok", "drop"]
    for c in cols:
        t.add_column(c, justify="right")
    rounds = [r for r in tot["rounds"] if r["round"] > 0]
    shown = rounds if wide else rounds[-MAX_ROWS:]
    if len(shown) < len(rounds):
        t.add_row(f"… {len(rounds) - len(shown)} earlier", *[""] * (len(cols) - 1))
    for r in shown:
        t.add_row(str(r["round"]), f"{r['accuracy']:.3f}", fmt_bytes(r["traffic_payload_bytes"]),
                  fmt_bytes(r["predicted_traffic_bytes"]), _keeps(r, "down", wide), _keeps(r, "up", wide),
                  f"{r['round_time_s_emulated']:.3g}",
                  f"{r['predicted_round_time_s']:.3g}", str(r["answered"]), str(r["dropped"]))
    out.append(t)
    line = (f"final accuracy {tot['final_accuracy']:.3f}; traffic {fmt_bytes(tot['total_payload_bytes'])} payload "
            f"({fmt_bytes(tot['total_serialised_bytes'])} serialised, predicted {fmt_bytes(tot['total_predicted_bytes'])}); "
            f"{tot['dropped_client_rounds']} client-rounds dropped")
    if tot.get("target_accuracy") is not None:
        reach = (f"reached in round {tot['round_to_target']} after {fmt_bytes(tot['bytes_to_target'])}"
                 if tot.get("round_to_target") else "not reached")
        line += f"; target {tot['target_accuracy']:.2f} {reach}"
    out.append(Text(line))
    if tot.get("accounting"):
        out.append(Text(f"accounting: {tot['accounting']}", style="dim"))
    byte_flags = [f for f in receipt["flags"] if "B vs predicted" in f]
    out.append(Text(f"bytes: {'every payload equals its prediction' if not byte_flags else str(len(byte_flags)) + ' differ'}"
                    f"; {len(receipt['flags']) - len(byte_flags)} client-rounds with emulated time off by more than 20 %",
                    style="dim"))
    return out
