"""fed-expand inspect views (added blocks and positions; per client: blocks, time, memory; round time and
bytes vs baselines) and the plan validator that reads the plan JSON alone."""
from __future__ import annotations

from typing import Any

from rich.text import Text

from planner.tables import table

PER_CLIENT_ROWS = 40


def _mib(x: Any) -> str:
    return "-" if x is None else f"{float(x) / 2**20:.1f}"


def tables(plan: Any, wide: bool = False) -> list[Any]:
    """Layout, per-client allocation, baselines' round time and bytes."""
    d, p = plan.decisions, plan.predicted
    out: list[Any] = [Text(
        f"{d['added_blocks']} added blocks after base blocks {d['added_after']} -> expanded layers {d['added_layers']} "
        f"of {d['expanded_blocks']} (interleaved over the top {d['span']} of {d['num_base_blocks']} base blocks); "
        f"home subsets by data cluster: " + "; ".join(f"cluster {k}: blocks {v}" for k, v in d["home_blocks"].items()))]
    tried = ", ".join(f"span {t['span']} {'ok' if t['feasible'] else 'no'}" for t in d.get("layouts_tried", []))
    out.append(Text(f"layouts tried (widest first): {tried}; {d['round_schedule']}, {d['rounds']} rounds", style="dim"))
    t = table("per client and round: added blocks trained, lowest layer reached by backward, predicted round time "
              "(s) and memory (MiB) against the budget")
    for c in ("client", "cluster", "samples", "blocks", "lowest", "round s", "mem", "budget", "ok"):
        t.add_column(c, justify="left" if c in ("client", "blocks") else "right", no_wrap=c != "client")
    rows = list(d["clients"].items())
    for cid, c in rows if wide or len(rows) <= PER_CLIENT_ROWS else rows[:PER_CLIENT_ROWS]:
        e = p["clients"][cid]
        t.add_row(cid, str(c["cluster"]), str(e["samples"]), ",".join(map(str, c["blocks"])) or "out",
                  str(c["lowest_layer"]) if c["lowest_layer"] >= 0 else "-", f"{e['round_time_s']:.3g}",
                  _mib(e["memory_bytes"]), _mib(e["memory_budget_bytes"]), "yes" if e["within_budgets"] else "NO")
    out.append(t)
    b = table("predicted per round, plan vs baselines (same population, data and measured constants)")
    for c in ("config", "round s", "MiB moved", "max mem MiB", "over budget"):
        b.add_column(c, justify="left" if c == "config" else "right", no_wrap=True)
    b.add_row("plan (FedBE)", f"{p['round_time_s']:.3g}", _mib(p["bytes_per_round"]), _mib(p["max_memory_bytes"]),
              str(p["clients_over_budget"]))
    for name, r in sorted(plan.baselines.items()):
        q = r.predicted
        b.add_row(name, f"{q['round_time_s']:.3g}", _mib(q["bytes_per_round"]), _mib(q.get("max_memory_bytes")),
                  str(q.get("clients_over_budget", "-")))
    out.append(b)
    if plan.bound is not None:
        out.append(Text(f"greedy utility {plan.bound.predicted['greedy_utility']:.4g}, CP-SAT "
                        f"{plan.bound.predicted['cp_sat_utility']:.4g} ({plan.bound.kind}); gap {plan.bound.gap:.2%}"))
    return out


def validate_plan(plan: Any) -> list[str]:
    """Every constraint the plan states, from its JSON alone: budgets, deadline, coverage, layout."""
    d, p, k = plan.decisions, plan.predicted, plan.constraints
    out: list[str] = []
    P, L = int(d["added_blocks"]), int(d["num_base_blocks"])
    after = list(d["added_after"])
    if len(after) != P or sorted(set(after)) != after or any(not 0 <= a < L for a in after):
        out.append(f"added_after {after} is not {P} distinct increasing base indices in 0..{L - 1}")
    if [a + 1 + j for j, a in enumerate(after)] != list(d["added_layers"]):
        out.append("added_layers do not follow from added_after")
    covered: set[int] = set()
    deadline = k.get("deadline_s")
    for cid, c in d["clients"].items():
        e = p["clients"].get(cid)
        if e is None:
            out.append(f"client {cid} has no prediction")
            continue
        if not c["blocks"] and not k.get("allow_sit_out"):
            out.append(f"client {cid} trains no added block")
        covered |= set(int(j) for j in c["blocks"])
        if c["blocks"] and e["memory_bytes"] > e["memory_budget_bytes"] * (1 + 1e-9):
            out.append(f"client {cid} predicts {e['memory_bytes']} B, over its {e['memory_budget_bytes']} B budget")
        if c["blocks"] and deadline is not None and e["round_time_s"] > float(deadline) * (1 + 1e-6):
            out.append(f"client {cid} predicts a {e['round_time_s']} s round, over the {deadline} s deadline")
        if c["blocks"] and c["lowest_layer"] != d["added_layers"][min(c["blocks"])]:
            out.append(f"client {cid}: lowest_layer does not match its blocks")
    missing = sorted(set(range(P)) - covered)
    if missing:
        out.append(f"added blocks {missing} have no trainer")
    return out
