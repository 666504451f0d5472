"""fed-graph views: plan validation from JSON, `planner inspect` tables, the run receipt's table."""
from __future__ import annotations

from typing import Any

from rich.text import Text

from planner.schema import Plan
from planner.tables import table
from planner.units import fmt_bytes


def validate_plan_decisions(d: dict) -> list[str]:
    """Every client in exactly one cluster; U non-empty and made of known clients; arms in [0, 1]; every
    configuration names known clients and a known beta mode."""
    bad = []
    ids = list(d.get("clients", []))
    known = set(ids)
    if set(d.get("clusters", {})) != known:
        bad.append("the cluster map does not cover exactly the plan's clients")
    if not d.get("common"):
        bad.append("the common-feature set is empty")
    if any(c not in known for c in d.get("common", [])):
        bad.append("the common-feature set names unknown clients")
    arms = d.get("bandit", {}).get("arms", [])
    if not arms or any(not 0.0 <= float(a) <= 1.0 for a in arms):
        bad.append("beta arms must be non-empty and within [0, 1]")
    for name, c in d.get("configs", {}).items():
        if set(c["clusters"]) != known or any(x not in known for x in c["common"]):
            bad.append(f"configuration {name} names unknown clients")
        if c["beta_mode"] not in ("bandit", "bandit_global", "fixed", "oracle", "gcfl"):
            bad.append(f"configuration {name}: unknown beta mode {c['beta_mode']}")
        if not 0.0 <= float(c["beta"]) <= 1.0:
            bad.append(f"configuration {name}: beta outside [0, 1]")
    if d.get("recommended") not in d.get("configs", {}):
        bad.append("the recommended configuration is not among the plan's configurations")
    return bad


def fed_graph_tables(plan: Plan, wide: bool = False) -> list[Any]:
    """Clusters (with the test bed's groups where known), the common set, β arms and prior, bytes vs baselines."""
    d, p = plan.decisions, plan.predicted
    out: list[Any] = []
    groups = d.get("testbed_groups") or {}
    t = table(f"structural clusters ({p['clusters']}) and the common-feature set U ({p['common_clients']} clients)")
    for c in ("cluster", "clients", "in U", "test-bed groups", "pilot β (last round)"):
        t.add_column(c, justify="right" if c in ("cluster", "in U") else "left")
    # the bandit's β in the pilot's last round (FedGCF's row: the plan's own when it is the recommendation)
    fed_betas = (plan.baselines["fedgcf"].predicted.get("pilot_betas_last_round", []) if "fedgcf" in plan.baselines
                 else p.get("pilot_betas_last_round", []))
    common = set(d["common"])
    for g in sorted(set(d["clusters"].values())):
        members = [c for c, k in d["clusters"].items() if k == g]
        names = " ".join(members) if wide or len(members) <= 8 else " ".join(members[:8]) + f" … (+{len(members) - 8})"
        grp = ""
        if groups:
            counts: dict[int, int] = {}
            for c in members:
                counts[groups[c]] = counts.get(groups[c], 0) + 1
            grp = " ".join(f"g{k}:{v}" for k, v in sorted(counts.items()))
        t.add_row(str(g), names, str(sum(c in common for c in members)), grp,
                  f"{fed_betas[g]:.1f}" if g < len(fed_betas) else "")
    out.append(t)
    b = d["bandit"]
    prior = b.get("prior_mean")
    out.append(Text(
        f"β arms {', '.join(f'{a:g}' for a in b['arms'])}; UCB1 c = {b['ucb_c']:g}, reward: {b['reward']}; "
        + (f"prior per cluster: the pilot's mean gain per arm, counted {b['prior_count']:g}× "
           f"(cluster 0 best prior arm β = {b['arms'][max(range(len(prior[0])), key=lambda i: prior[0][i])]:g})"
           if prior else "no prior (plain UCB1: every arm tried once first)")
        + f". Feature graph: link at cosine ≥ {d['feature_graph']['delta']:.3f}, U = top "
          f"{d['feature_graph']['share']:.0%} by degree."))
    t2 = table(f"bytes per round and to the target (pilot validation accuracy {p['target_val_accuracy']:.3f}); "
               f"recommended: {d['recommended']}")
    for c in ("configuration", "B/round", "rounds*", "B to target", "val acc*", "regret*"):
        t2.add_column(c, justify="left" if c == "configuration" else "right")
    rows = [(d["recommended"], p)] + [(n, r.predicted) for n, r in sorted(plan.baselines.items())]
    for n, q in rows:
        t2.add_row(n, fmt_bytes(q["bytes_per_round"]), str(q["pilot_rounds_to_target"] if q["pilot_rounds_to_target"] is not None else "never"),
                   fmt_bytes(q["bytes_to_target"]) if q["bytes_to_target"] is not None else "never",
                   f"{q['pilot_final_val_accuracy']:.3f}", f"{q['pilot_cumulative_regret']:.3f}")
    out.append(t2)
    out.append(Text("* surrogate pilot (linear two-hop graph convolution, numpy, validation nodes): ranks the "
                    "configurations; `planner run` measures the GCN on Flower."))
    return out


def receipt_table(rec: dict) -> list[Any]:
    """The run receipt: accuracy, betas and bytes per round."""
    t = table(f"receipt: {rec['config']} ({rec['clients']} clients, {rec['engine']})")
    for c in ("round", "test acc", "val acc", "β per cluster", "regret", "bytes so far"):
        t.add_column(c, justify="right")
    for r in rec["rounds"]:
        betas = r.get("betas") or {}
        t.add_row(str(r["round"]), f"{r['test_accuracy']:.3f}", f"{r['val_accuracy']:.3f}",
                  " ".join(f"{v:g}" for _, v in sorted(betas.items(), key=lambda kv: int(kv[0]))),
                  "" if r.get("regret") is None else f"{r['regret']:.3f}", fmt_bytes(r["bytes_to_here"]))
    out: list[Any] = [t]
    diff = rec.get("signature_max_abs_diff_vs_plan")
    out.append(Text(f"signatures uploaded once: {fmt_bytes(rec['signature_bytes'])}"
                    + (f", max |Δ| vs the plan's {diff:.2g}" if diff is not None else "")
                    + f"; measured {fmt_bytes(rec['measured_bytes_per_round'])}/round vs predicted "
                    + (fmt_bytes(rec['predicted_bytes_per_round']) if rec.get('predicted_bytes_per_round') else "n/a")))
    return out
