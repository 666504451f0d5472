"""Graph split + workers + options -> the DfglProblem (arrays in worker file order), and back to plan names."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import json
from dataclasses import fields
from pathlib import Path

from planner.families.dfgl.graph_input import GraphSplit
from planner.families.dfgl.workers import Workers
from solvers.dfgl.problem import DfglProblem, Schedule, SurrogateParams


@dataclass(frozen=True)
class DfglOptions:
    """Typed options of a dfgl plan (units in the names)."""

    rounds: int = 20
    degree: int = 2
    r_min: float = 0.1
    c_max: float = 0.5
    rho: float = 10.0
    hidden: int = 32
    layer: str = "gcn"
    local_steps: int = 5
    lr: float = 0.05
    episodes: int = 40
    seed: int = 0
    metric: str = "global"               # accuracy the plan aims at: global (all held-out nodes) or local (own)
    target_accuracy: float | None = None  # None: 95 % of the full topology's predicted final accuracy
    round_overhead_s: float = 0.0        # per-round software overhead added to every predicted round time


MULTIPLICITY_BINS = 16   # halo nodes with 16 or more edges into one worker share the last bin


def halo_counts(g: GraphSplit, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(local edge counts (m,), halo counts (m, m): distinct nodes of worker j adjacent to worker i's nodes,
    multiplicities (m, m, MULTIPLICITY_BINS): those halo nodes by their number of edges into i's nodes)."""
    src, dst = g.edge_index
    ps, pd = g.part[src], g.part[dst]
    local = np.bincount(ps[ps == pd], minlength=m).astype(float)
    halo = np.zeros((m, m))
    mult = np.zeros((m, m, MULTIPLICITY_BINS))
    cross = ps != pd
    # (worker i, remote node) distinct, with how many of i's edges reach that node
    pairs, counts = np.unique(np.stack([ps[cross], dst[cross]]), axis=1, return_counts=True)
    np.add.at(halo, (pairs[0], g.part[pairs[1]]), 1.0)
    np.add.at(mult, (pairs[0], g.part[pairs[1]], np.minimum(counts, MULTIPLICITY_BINS) - 1), 1.0)
    return local, halo, mult


def model_bytes(features: int, hidden: int, classes: int, layer: str = "gcn") -> float:
    """fp32 bytes of a 2-layer GCN/SAGE (SAGE has a root weight per layer too: counted)."""
    weights = 2 if layer == "sage" else 1     # SAGEConv has a neighbour and a root weight per layer
    return 4.0 * (weights * (features * hidden + hidden * classes) + hidden + classes)


def lower(g: GraphSplit, w: Workers, opts: DfglOptions) -> DfglProblem:
    """The problem: per-worker train nodes, halos, degrees, compute constants from the hardware, links."""
    m = len(w.ids)
    local, halo, mult = halo_counts(g, m)
    deg = np.bincount(g.edge_index[0], minlength=g.x.shape[0]).astype(float)
    mean_deg = np.array([deg[g.part == i].mean() if np.any(g.part == i) else 0.0 for i in range(m)])
    train = np.bincount(g.part[g.train_mask], minlength=m).astype(float)
    # each worker's training-label distribution (a few numbers per worker; the surrogate's personalisation term)
    labels = np.zeros((m, g.num_classes))
    np.add.at(labels, (g.part[g.train_mask], g.y[g.train_mask]), 1.0)
    labels /= np.maximum(labels.sum(axis=1, keepdims=True), 1.0)
    f = g.x.shape[1]
    # FLOPs per node-neighbour unit per layer: aggregate + transform, forward and backward (x3), local steps
    flops_unit = 6.0 * f * opts.hidden * opts.local_steps
    rate = np.array([p.peak_flops_per_s.get("fp32", 1e11) * p.efficiency_compute for p in w.profiles])
    return DfglProblem(
        worker_ids=w.ids, nodes_train=train, local_edges=local, cross_edges=halo, mean_degree=mean_deg,
        kappa_s=flops_unit / rate, bandwidth_Bps=w.rate_bps / 8.0, latency_s=w.latency_s,
        model_bytes=model_bytes(f, opts.hidden, g.num_classes, opts.layer), embedding_bytes=4.0 * f, exchanged_layers=1,
        gcn_layers=2, degree=opts.degree, r_min=opts.r_min, c_max=opts.c_max, rho=opts.rho,
        surrogate=surrogate_constants(opts.metric), round_overhead_s=opts.round_overhead_s,
        halo_multiplicity=mult, label_share=labels)


CONSTANTS_FILE = Path(__file__).with_name("surrogate_csbm.json")


def surrogate_constants(metric: str, path: Path = CONSTANTS_FILE) -> SurrogateParams:
    """The surrogate constants fitted for `metric` (global|local) by benchmarks/dfgl_calibration.py on the cSBM
    test bed; the assumed defaults when the file has none for it."""
    if not path.is_file():
        return SurrogateParams()
    data = json.loads(path.read_text(encoding="utf-8"))
    entry = data.get("metrics", {}).get(metric)
    if entry is None:
        return SurrogateParams()
    names = {f.name for f in fields(SurrogateParams)}
    consts = {k: float(v) for k, v in entry["constants"].items() if k in names and k not in ("source", "fit_rmse")}
    return SurrogateParams(**consts, fit_rmse=float(entry.get("rmse", 0.0)),
                           source=f"{metric} accuracy; {data['source']}")


def schedule_record(p: DfglProblem, sched: Schedule, met) -> list[dict]:
    """Per-round decisions by worker id: links (pairs of ids), ratios, predicted time/bytes/consensus/loss."""
    out = []
    ids = p.worker_ids
    for k in range(p.rounds):
        a = sched.adjacency[k]
        links = [[ids[i], ids[j]] for i in range(p.num_workers) for j in range(i + 1, p.num_workers) if a[i, j]]
        out.append({"round": k, "links": links,
                    "ratios": {ids[i]: round(float(sched.ratios[k, i]), 6) for i in range(p.num_workers)},
                    "predicted": {"round_time_s": round(float(met.round_time_s[k]), 9),
                                  "bytes": round(float(met.bytes[k]), 3),
                                  "consensus": round(float(met.consensus[k]), 6),
                                  "loss": round(float(met.loss[k]), 6),
                                  "link_bytes": {f"{ids[j]}->{ids[i]}": round(float(b), 3)
                                                 for (i, j), b in np.ndenumerate(_lb(p, a, sched.ratios[k])) if b > 0}}})
    return out


def _lb(p: DfglProblem, adj: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    from solvers.dfgl.cost import link_bytes

    return link_bytes(p, adj, ratios)


def predicted_of(met) -> dict:
    """Headline predicted metrics of a schedule (surrogate loss and consensus are labelled as such)."""
    return {"total_time_s": round(float(met.round_time_s.sum()), 6), "total_bytes": round(float(met.bytes.sum()), 1),
            "mean_round_time_s": round(float(met.round_time_s.mean()), 6),
            "surrogate_final_loss": round(float(met.loss[-1]), 6),
            "surrogate_mean_consensus": round(float(met.consensus.mean()), 6),
            "objective_sum": round(float(met.objective.sum()), 6)}
