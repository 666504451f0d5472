"""dfgl benchmark: Duplex's plan (DDPG controller + link local search) vs every baseline, trained for real.

For each seed: the contextual-SBM test bed split over 8 workers (testbeds.graphs; `--graph`), workers
`gen:8:SEED` (log-normal link rates 5..50 mbps, one link degrading to 0.5 mbps mid-run), the plan and the six
baselines scheduled by the planner; then every configuration's schedule is TRAINED with real PyG GCN layers:
each round every worker samples its neighbours (runtime.dfgl.sampling), fetches the sampled halo features from
its current neighbours, takes local Adam steps, and gossips with Metropolis weights, exactly as the runtime's
workers do, but in one process (the runtime's gloo processes are exercised by the tests and `planner run`).

What is measured and what is emulated: accuracy (held-out nodes, mean over workers) and bytes (the tensors each
worker receives: halo features + neighbour models) are measured; round TIME is EMULATED the way the runtime's
transport emulates it: max over workers of (compute from the workers' catalog rooflines, the planner's t_cp) +
(slowest neighbour's measured bytes / link rate + latency). Same graph, split, workers, initial model and
rounds for every configuration within a seed.

Summary: time and bytes to the target accuracy (target = 95 % of the full-topology/full-neighbour baseline's
final accuracy in that seed) relative to the best baseline that reaches it; accuracy at an equal time budget
(the plan's total time) minus the best baseline's; median and spread over seeds. Two accuracy metrics, each
with its own plan (the surrogate is fitted per metric): the headline keys use GLOBAL accuracy (every worker's
model on all held-out nodes of the graph, mean over workers: the usual decentralised-learning figure) and the
plan made with `--metric global`; the `local_*` keys use each worker's model on its own held-out nodes (what
the runtime's receipt reports; it rewards personalised models on a Louvain split) and `--metric local`.

    nice .venv/bin/python -m benchmarks.dfgl --quick     # 3 seeds, 1000 nodes, 12 rounds
    nice .venv/bin/python -m benchmarks.dfgl             # 5 seeds, 8000 nodes, 30 rounds
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic_io import write_text_atomic

OUT = Path("build/bench")
TARGET_SHARE = 0.95


def schedules(graph_spec: str, seed: int, rounds: int, episodes: int, graph: Any = None,
              selection: str = "accuracy_at_budget", constants: str | None = None) -> tuple[Any, Any, dict, dict]:
    """(graph split, problem, {config: Schedule}, {plan config: selection record}) for one seed: the plan made
    for each accuracy metric (`plan`: global, `plan_local`: local) and every baseline. Each plan is what
    `planner plan` makes: the DDPG controller's schedule ranked against the simple and baseline schedules by the
    surrogate's predicted time to target, with the surrogate constants fitted on the calibration seed
    (planner/families/dfgl/surrogate_csbm.json; never one of the seeds scored here)."""
    from dataclasses import replace

    from planner.families.dfgl.graph_input import load_graph
    from planner.families.dfgl.lowering import DfglOptions, lower, surrogate_constants
    from planner.families.dfgl.workers import parse_workers
    from planner.registry import resolve_hardware
    from solvers.dfgl.baselines import baselines
    from solvers.dfgl.ddpg import DdpgConfig, ratio_grid
    from solvers.dfgl.duplex import solve
    from solvers.dfgl.selection import choose_schedule

    w = parse_workers(f"gen:8:{seed}", rounds, lambda n: resolve_hardware(n, flag="--workers"))
    g = graph if graph is not None else load_graph(graph_spec, len(w.ids), seed)
    opts = DfglOptions(rounds=rounds, seed=seed, episodes=episodes)
    p = lower(g, w, opts)
    out, sel = {}, {}
    for metric, name in (("global", "plan"), ("local", "plan_local")):
        q = replace(p, surrogate=surrogate_constants(metric) if constants is None
                    else surrogate_constants(metric, Path(constants)))
        base = {b.name: b.solve(q) for b in baselines(seed=seed)}
        ctl = solve(q, DdpgConfig(episodes=episodes, seed=seed)).schedule
        ranking, target, margin, rule = choose_schedule(q, ctl, {n: (s.schedule, s.feasible) for n, s in base.items()},
                                                  ratio_grid(q, 10), selection=selection)
        out[name] = ranking[0].schedule
        inf = float("inf")
        sel[name] = {"chosen": ranking[0].name, "target_accuracy_predicted": target, "margin": margin, "rule": rule,
                     "controller_rank": [r.name for r in ranking].index("controller") + 1,
                     "predicted": {r.name.split(":", 1)[-1]: {"time_to_target_s": None if r.time_to_target_s == inf
                                                               else r.time_to_target_s,
                                                               "final_accuracy": 1.0 - r.final_error}
                                   for r in ranking if r.name.startswith("baseline:") or r is ranking[0]}}
        sel[name]["predicted_curves"] = {     # the surrogate's curves under this metric's constants
            n: {"round_time_s": m.round_time_s.tolist(), "accuracy": (1.0 - m.loss).tolist()}
            for n, m in [(name, ranking[0].metrics)] + [(b, s.metrics) for b, s in base.items()]}
        if metric == "global":
            out.update({n: s.schedule for n, s in base.items()})
    return g, p, out, sel


def train_schedule(g: Any, p: Any, sched: Any, seed: int, hidden: int = 32, local_steps: int = 5,
                   lr: float = 0.01) -> list[dict]:
    """Train one schedule in process (the runtime workers' algorithm); per round: accuracy, bytes, emulated time."""
    import torch

    from core.p2p_topology import metropolis_weights
    from runtime.dfgl.model import TwoLayerGnn, flat, load_flat
    from runtime.dfgl.sampling import halo_requests, local_subgraph, sample_edges
    from solvers.dfgl.cost import compute_s

    torch.set_num_threads(1)
    m = p.num_workers
    x, y = torch.from_numpy(g.x), torch.from_numpy(g.y)
    ei, part = torch.from_numpy(g.edge_index), torch.from_numpy(g.part)
    trm, tem = torch.from_numpy(g.train_mask), torch.from_numpy(g.test_mask)
    torch.manual_seed(seed)
    init = TwoLayerGnn(x.shape[1], hidden, g.num_classes)
    models = [TwoLayerGnn(x.shape[1], hidden, g.num_classes) for _ in range(m)]
    for mod in models:
        mod.load_state_dict(init.state_dict())
    opts = [torch.optim.Adam(mod.parameters(), lr=lr) for mod in models]
    gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(m)]
    local = [(part == i).nonzero().view(-1) for i in range(m)]
    model_b = sum(q.numel() for q in init.parameters()) * 4
    out = []
    elapsed, total_bytes = 0.0, 0.0
    for k in range(p.rounds):
        adj, ratios = sched.adjacency[k], sched.ratios[k]
        rate, lat = p.bandwidth_Bps[k], p.latency_s[k]
        correct = tested = 0
        link_in = np.zeros((m, m))
        graphs = []
        for i in range(m):
            peers = set(int(j) for j in np.flatnonzero(adj[i]))
            edges = sample_edges(ei, part, i, float(ratios[i]), peers, gens[i])
            req = halo_requests(edges, part, i)
            halo = torch.cat([req[j] for j in sorted(req)]) if req else torch.empty(0, dtype=torch.int64)
            for j, ids in req.items():
                link_in[i, j] += ids.numel() * x.shape[1] * 4
            nodes = torch.cat([local[i], halo])
            sub_e = local_subgraph(edges, nodes, x.shape[0])
            full_e = local_subgraph(ei[:, part[ei[1]] == i], nodes, x.shape[0])
            graphs.append((x[nodes], sub_e, full_e, local[i].numel()))
            mod, opt = models[i], opts[i]
            tmask = trm[local[i]]
            mod.train()
            for _ in range(local_steps):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(mod(x[nodes], sub_e)[:local[i].numel()][tmask],
                                                         y[local[i]][tmask])
                loss.backward()
                opt.step()
        link_in += adj.astype(float) * model_b
        wm = metropolis_weights(adj)
        flats = torch.stack([flat(mod) for mod in models])
        mixed = torch.from_numpy(wm).float() @ flats
        # measured consensus distance after gossip, relative to the mean model norm (the surrogate's C)
        norms = mixed.norm(dim=1)
        consensus = float((mixed - mixed.mean(0)).norm(dim=1).mean() / norms.mean().clamp_min(1e-12))
        glob = 0.0
        for i in range(m):
            load_flat(models[i], mixed[i])
            sx, _, full_e, n_loc = graphs[i]
            with torch.no_grad():
                pred = models[i](sx, full_e)[:n_loc].argmax(1)
                # global view: this worker's model on every held-out node of the whole graph
                glob += float((models[i](x, ei).argmax(1)[tem] == y[tem]).float().mean()) / m
            te = tem[local[i]]
            correct += int((pred[te] == y[local[i]][te]).sum())
            tested += int(te.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            comm = np.where(adj > 0, link_in / np.where(rate > 0, rate, 1.0) + lat, 0.0).max(axis=1)
        t_round = float((compute_s(p, ratios) + comm).max())
        elapsed += t_round
        total_bytes += float(link_in.sum())
        out.append({"round": k, "accuracy": correct / max(tested, 1), "global_accuracy": glob, "time_s": elapsed,
                    "bytes": total_bytes, "consensus": consensus})
    return out


def central_accuracy(g: Any, seed: int, steps: int, hidden: int = 32, lr: float = 0.01) -> float:
    """Held-out accuracy of one GCN trained centrally on every training node of the whole graph for `steps`
    Adam steps (the rounds x local steps each worker takes): the ceiling a decentralised run approaches on the
    global metric (same model, init seed and learning rate as `train_schedule`)."""
    import torch

    from runtime.dfgl.model import TwoLayerGnn

    torch.set_num_threads(1)
    x, y, ei = torch.from_numpy(g.x), torch.from_numpy(g.y), torch.from_numpy(g.edge_index)
    trm, tem = torch.from_numpy(g.train_mask), torch.from_numpy(g.test_mask)
    torch.manual_seed(seed)
    mod = TwoLayerGnn(x.shape[1], hidden, g.num_classes)
    opt = torch.optim.Adam(mod.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(mod(x, ei)[trm], y[trm]).backward()
        opt.step()
    with torch.no_grad():
        return float((mod(x, ei).argmax(1)[tem] == y[tem]).float().mean())


def to_target(curve: list[dict], target: float, key: str = "accuracy") -> tuple[float | None, float | None]:
    """(time, bytes) at the first round whose accuracy (`key`) reaches `target`, or (None, None)."""
    for r in curve:
        if r[key] >= target:
            return r["time_s"], r["bytes"]
    return None, None


def accuracy_at(curve: list[dict], budget_s: float, key: str = "accuracy") -> float:
    """Accuracy (`key`) of the last round finished within `budget_s` (0 if none)."""
    done = [r[key] for r in curve if r["time_s"] <= budget_s + 1e-12]
    return done[-1] if done else 0.0


def _predicted_at(curve: dict, budget_s: float) -> float:
    """Surrogate's accuracy after the last round finished within `budget_s` (0 if none)."""
    done = [a for a, t in zip(curve["accuracy"], np.cumsum(curve["round_time_s"])) if t <= budget_s + 1e-12]
    return done[-1] if done else 0.0


def _why_at_budget(res: dict, plan: str, key: str, prefix: str, acc: dict, budget: float) -> None:
    """Why the accuracy at the budget is won or lost: the surrogate's predicted accuracy at the (predicted)
    budget for the plan and the best measured baseline at the budget, against the measured ones; and the
    headroom (the best accuracy any configuration reached in any round, and for the global metric a centrally
    trained GCN, minus the best baseline at the budget)."""
    sel = res["selection"][plan]
    curves = sel["predicted_curves"]
    pbudget = float(np.sum(curves[plan]["round_time_s"]))
    base = [n for n in acc if not n.startswith("plan")]
    best = max(base, key=lambda n: acc[n])
    pred = {n: _predicted_at(curves[n], pbudget) for n in [plan] + base}
    best_pred = max(base, key=lambda n: pred[n])
    reached = max(r[key] for v in res["configs"].values() for r in v["curve"])
    why = {"best_baseline_at_budget": best, "measured_plan": acc[plan], "measured_best_baseline": acc[best],
           "predicted_plan": pred[plan], "predicted_best_baseline": pred[best_pred],
           "predicted_best_baseline_name": best_pred, "predicted_same_baseline": pred[best],
           "predicted_delta": pred[plan] - pred[best_pred], "measured_delta": acc[plan] - acc[best],
           "plan_prediction_error": acc[plan] - pred[plan], "baseline_prediction_error": acc[best] - pred[best],
           "budget_s_measured": budget, "budget_s_predicted": pbudget,
           "headroom_best_reached": reached - acc[best]}
    if key == "global_accuracy" and "central_accuracy" in res:
        why["headroom_central"] = res["central_accuracy"] - acc[best]
    res[prefix + "why_at_budget"] = why


def _compare(res: dict, plan: str, key: str, prefix: str) -> None:
    """Headline figures of plan config `plan` on accuracy `key` against every baseline, into `res`."""
    cfg = res["configs"]
    base = {n: v for n, v in cfg.items() if not n.startswith("plan")}
    target = TARGET_SHARE * cfg["full_full"]["curve"][-1][key]
    budget = cfg[plan]["curve"][-1]["time_s"]
    tt = {n: to_target(v["curve"], target, key) for n, v in cfg.items()}
    acc = {n: accuracy_at(v["curve"], budget, key) for n, v in cfg.items()}
    reach_t = [tt[n][0] for n in base if tt[n][0] is not None]
    reach_b = [tt[n][1] for n in base if tt[n][1] is not None]
    pt, pb = tt[plan]
    best_t = min(base, key=lambda n: (tt[n][0] is None, tt[n][0] or 0.0, -acc[n]))
    res[prefix + "target_accuracy"] = target
    res[prefix + "time_reduction"] = (1 - pt / min(reach_t)) if pt and reach_t else None
    res[prefix + "bytes_reduction"] = (1 - pb / min(reach_b)) if pb and reach_b else None
    res[prefix + "accuracy_delta_at_budget"] = acc[plan] - max(acc[n] for n in base)
    res[prefix + "stacked_minus_plan_accuracy_at_budget"] = acc["stacked"] - acc[plan]
    res[prefix + "best_baseline_to_target"] = best_t
    res[prefix + "per_config"] = {n: {"time_to_target_s": tt[n][0], "bytes_to_target": tt[n][1],
                                      "accuracy_at_budget": acc[n], "final_accuracy": cfg[n]["curve"][-1][key]}
                                  for n in cfg}
    _why_at_budget(res, plan, key, prefix, {n: a for n, a in acc.items() if n == plan or not n.startswith("plan")},
                   budget)


def rank_agreement(sel: dict, measured: dict, plan: str) -> float:
    """Share of config pairs (the plan and every baseline) that the surrogate's predicted time to target orders
    as the measured time to target does (not reached = infinite; pairs tied in both count as agreeing)."""
    inf = float("inf")
    pred = {n: v["time_to_target_s"] for n, v in sel["predicted"].items()}
    pred[plan] = pred[sel["chosen"].split(":", 1)[-1]]
    names = [n for n in measured if n in pred and (n == plan or not n.startswith("plan"))]
    agree = total = 0
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pa, pb = (pred[a] if pred[a] is not None else inf), (pred[b] if pred[b] is not None else inf)
            ma = measured[a]["time_to_target_s"] if measured[a]["time_to_target_s"] is not None else inf
            mb = measured[b]["time_to_target_s"] if measured[b]["time_to_target_s"] is not None else inf
            total += 1
            agree += int(np.sign(pa - pb if pa != pb else 0) == np.sign(ma - mb if ma != mb else 0))
    return agree / max(total, 1)


def one_seed(graph_spec: str, seed: int, rounds: int, episodes: int, selection: str = "accuracy_at_budget",
             constants: str | None = None) -> dict:
    """Every configuration of one seed: curves; per metric, time/bytes to target and accuracy at the plan's budget."""
    t0 = time.perf_counter()
    g, p, scheds, sel = schedules(graph_spec, seed, rounds, episodes, selection=selection, constants=constants)
    curves: dict[str, list[dict]] = {}
    trained: dict[bytes, str] = {}
    for name, s in scheds.items():
        key = s.adjacency.tobytes() + s.ratios.tobytes()
        # an adopted baseline's schedule is trained once (same seed, same start: the same curve)
        curves[name] = curves[trained[key]] if key in trained else train_schedule(g, p, s, seed)
        trained.setdefault(key, name)
    res = {"seed": seed, "selection": sel, "configs": {n: {"curve": c, "total_time_s": c[-1]["time_s"],
                                                            "total_bytes": c[-1]["bytes"]} for n, c in curves.items()},
           "central_accuracy": central_accuracy(g, seed, rounds * 5)}
    _compare(res, "plan", "global_accuracy", "")
    _compare(res, "plan_local", "accuracy", "local_")
    for prefix, plan in (("", "plan"), ("local_", "plan_local")):
        res[prefix + "rank_agreement"] = rank_agreement(sel[plan], res[prefix + "per_config"], plan)
    res["wall_s"] = time.perf_counter() - t0
    return res


def _spread(vals: list[float | None]) -> dict:
    v = [x for x in vals if x is not None]
    if not v:
        return {"median": None, "min": None, "max": None, "n": 0, "missing": len(vals)}
    return {"median": float(np.median(v)), "min": float(min(v)), "max": float(max(v)), "n": len(v),
            "missing": len(vals) - len(v)}


def main() -> None:
    """Run the seeds, print a table, write build/bench/dfgl.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 seeds, 1000 nodes, 12 rounds, 8 DDPG episodes")
    ap.add_argument("--graph", default=None, help="graph spec (default csbm:nodes=N,workers=8)")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds 0..N-1 (default: 3 quick, 5 full)")
    ap.add_argument("--seed-list", default=None, help="explicit seeds, e.g. 100,101,102 (decision seeds: never the "
                    "scored 0..4)")
    ap.add_argument("--selection", default="accuracy_at_budget", choices=("accuracy_at_budget", "bytes"),
                    help="the selection's second rule (solvers/dfgl/selection.py)")
    ap.add_argument("--constants", default=None, help="surrogate constants file (default: the planner's, "
                    "planner/families/dfgl/surrogate_csbm.json)")
    ap.add_argument("--out", default=str(OUT / "dfgl.json"), help="where the record goes")
    args = ap.parse_args()
    seeds = list(range(args.seeds)) if args.seeds else ([0, 1, 2] if args.quick else [0, 1, 2, 3, 4])
    if args.seed_list:
        seeds = [int(v) for v in args.seed_list.split(",")]
    nodes, rounds, episodes = (1000, 12, 8) if args.quick else (8000, 30, 40)
    spec = args.graph or f"csbm:nodes={nodes},workers=8"
    per_seed = []
    for s in seeds:
        r = one_seed(spec, s, rounds, episodes, args.selection, args.constants)
        per_seed.append(r)
        for prefix, plan in (("", "plan"), ("local_", "plan_local")):
            pc = r[prefix + "per_config"]
            print(f"seed {s} [{'global' if not prefix else 'local'}] target {r[prefix + 'target_accuracy']:.3f}; plan = "
                  f"{r['selection'][plan]['chosen']}; " + "; ".join(
                      f"{n} acc@budget {v['accuracy_at_budget']:.3f} t2t "
                      f"{v['time_to_target_s'] if v['time_to_target_s'] is None else round(v['time_to_target_s'], 3)}"
                      for n, v in pc.items()), flush=True)
        print(f"seed {s}: {r['wall_s']:.0f} s", flush=True)
    summary = {
        "time_to_target_reduction_vs_best_baseline": _spread([r["time_reduction"] for r in per_seed]),
        "bytes_to_target_reduction_vs_best_baseline": _spread([r["bytes_reduction"] for r in per_seed]),
        "accuracy_delta_at_budget": _spread([r["accuracy_delta_at_budget"] for r in per_seed]),
        "stacked_minus_plan_accuracy_at_budget": _spread([r["stacked_minus_plan_accuracy_at_budget"] for r in per_seed]),
        "plan_chosen": [r["selection"]["plan"]["chosen"] for r in per_seed],
        "best_baseline_to_target": [r["best_baseline_to_target"] for r in per_seed],
        "local_time_to_target_reduction_vs_best_baseline": _spread([r["local_time_reduction"] for r in per_seed]),
        "local_bytes_to_target_reduction_vs_best_baseline": _spread([r["local_bytes_reduction"] for r in per_seed]),
        "local_accuracy_delta_at_budget": _spread([r["local_accuracy_delta_at_budget"] for r in per_seed]),
        "local_stacked_minus_plan_accuracy_at_budget": _spread(
            [r["local_stacked_minus_plan_accuracy_at_budget"] for r in per_seed]),
        "local_plan_chosen": [r["selection"]["plan_local"]["chosen"] for r in per_seed],
        "rank_agreement": _spread([r["rank_agreement"] for r in per_seed]),
        "local_rank_agreement": _spread([r["local_rank_agreement"] for r in per_seed]),
        "local_best_baseline_to_target": [r["local_best_baseline_to_target"] for r in per_seed],
        "plan_rule": [r["selection"]["plan"]["rule"] for r in per_seed],
        "local_plan_rule": [r["selection"]["plan_local"]["rule"] for r in per_seed],
        "why_at_budget": {k: _spread([r["why_at_budget"][k] for r in per_seed])
                          for k in ("predicted_delta", "measured_delta", "plan_prediction_error",
                                    "baseline_prediction_error", "headroom_best_reached", "headroom_central")},
        "local_why_at_budget": {k: _spread([r["local_why_at_budget"][k] for r in per_seed])
                                for k in ("predicted_delta", "measured_delta", "plan_prediction_error",
                                          "baseline_prediction_error", "headroom_best_reached")},
        "seeds": seeds, "selection": args.selection, "constants": args.constants or "planner default",
        "metric": "headline keys: global accuracy (every worker's model on all held-out nodes, mean over workers), "
                  "plan made with --metric global; local_* keys: each worker's model on its own held-out nodes, "
                  "plan made with --metric local",
        "surrogate": "constants fitted on the calibration seed (planner/families/dfgl/surrogate_csbm.json), "
                     "never a scored seed",
        "graph": spec, "rounds": rounds, "workers": "gen:8:SEED",
        "time": "EMULATED: catalog-roofline compute + measured bytes / link rate + latency (as the runtime's transport)",
        "accuracy_and_bytes": "measured (real PyG GCN training in one process)",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(args.out), json.dumps({"summary": summary, "seeds": per_seed}, indent=1, sort_keys=True,
                                                      default=float) + "\n")
    print(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
