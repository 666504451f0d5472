"""split-inference benchmark: COACH plans vs every baseline, predicted by the COACH cost model.

Models resnet50, mobilenetv2, vit-b16, bert-base, minilm and digits-cnn; edge devices
jetson_orin_nano_8gb, raspberry_pi5_8gb and phone_midrange_8gb; cloud a100_80gb; uplinks 1, 5, 20
and 100 Mbit/s (RTT 20 ms). Stage times are catalog rooflines (PREDICTED, not measured); accuracy is
measured where the model has real weights (digits-cnn, MiniLM) and a per-tensor SQNR proxy otherwise.
Also: the gap to the CP-SAT reference on one link per model, and solver time on a 1 000-node graph.

    .venv/bin/python -m benchmarks.split_inference      # from the repository root; writes build/bench/split_inference.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from core.atomic_io import write_text_atomic
from planner.families.split_inference.lowering import SplitOptions, joint_check, lower
from planner.registry import resolve_hardware, resolve_model
from profilers.graph import profile_model
from solvers.split_inference.baselines import BASELINES
from solvers.split_inference.coach import solve
from solvers.split_inference.cost import evaluate
from solvers.split_inference.exact import solve_cpsat

MODELS = ("resnet50", "mobilenetv2", "vit-b16", "bert-base", "minilm", "digits-cnn")
EDGES = ("jetson_orin_nano_8gb", "raspberry_pi5_8gb", "phone_midrange_8gb")
LINKS_MBPS = (1, 5, 20, 100)


def cell(spec, prof, edge: str, mbps: float, cloud, exact: bool) -> dict:
    """Plan one (model, edge, link) and every baseline on the same problem."""
    low = lower(spec, prof, resolve_hardware(edge), cloud, SplitOptions(link_bits_per_s=mbps * 1e6))
    p = low.problem
    t0 = time.perf_counter()
    sol = solve(p)
    solve_s = time.perf_counter() - t0
    bits, joint, _ = joint_check(low, dict(sol.bits))
    m = evaluate(p, sol.on_edge, bits) if bits != dict(sol.bits) else sol.metrics
    rows = {"plan": {"latency_ms": m.latency_s * 1e3, "throughput_rps": 1 / m.period_s, "J_ms": m.objective_s * 1e3,
                     "bytes": m.bytes_per_request, "accuracy_drop": joint if joint is not None else m.accuracy_drop,
                     "tensors": len(bits), "bits": sorted(set(bits.values())), "feasible": sol.feasible}}
    for base in BASELINES:
        b = base.solve(p)
        rows[base.name] = {"latency_ms": b.metrics.latency_s * 1e3, "throughput_rps": 1 / b.metrics.period_s,
                      "J_ms": b.objective * 1e3, "bytes": b.metrics.bytes_per_request,
                      "accuracy_drop": b.metrics.accuracy_drop, "feasible": b.feasible}
    out = {"model": spec.name, "edge": edge, "mbps": mbps, "nodes": p.num_nodes, "solve_s": solve_s,
           "accuracy_kind": low.accuracy_kind, "rows": rows}
    if exact and p.num_nodes <= 600:
        ref = solve_cpsat(p, time_scale=1e9)  # integer ns (µs rounding distorts tiny graphs)
        bound = float(ref.params.get("bound_s", ref.objective))
        out["exact"] = {"status": ref.status.value, "J_ms": ref.objective * 1e3, "bound_ms": bound * 1e3,
                        "gap": (sol.objective - bound) / bound}
    return out


def fmt(cells: list[dict]) -> str:
    """Plain-text table: plan figures and ratios against each baseline (latency and throughput)."""
    names = ("all_edge", "all_cloud", "neurosurgeon", "dads", "neurosurgeon_8bit", "throughput_cut")
    head = (f"{'model':12} {'edge':21} {'Mb/s':>4} | {'lat ms':>8} {'req/s':>7} {'acc.drop':>9} {'kind':>5} | "
            + " ".join(f"{n[:12]:>13}" for n in names) + f" | {'solve ms':>8}")
    lines = ["ratios: baseline latency / plan latency and plan throughput / baseline throughput (>1 = plan better); "
             "'*' = baseline breaks a constraint", head, "-" * len(head)]
    for c in cells:
        r = c["rows"]
        pl = r["plan"]
        parts = []
        for n in names:
            b = r[n]
            star = "" if b["feasible"] else "*"
            parts.append(f"{b['latency_ms'] / pl['latency_ms']:5.2f}/{pl['throughput_rps'] / b['throughput_rps']:5.2f}{star:1}")
        lines.append(f"{c['model']:12} {c['edge']:21} {c['mbps']:4g} | {pl['latency_ms']:8.2f} {pl['throughput_rps']:7.1f} "
                     f"{pl['accuracy_drop']:9.2g} {c['accuracy_kind'][:5]:>5} | " + " ".join(f"{x:>13}" for x in parts)
                     + f" | {c['solve_s'] * 1e3:8.1f}")
    return "\n".join(lines)


def thousand_node_timing(repeats: int = 5) -> dict:
    """Solver time on a 1 000-node chain of residual and inception blocks (random costs)."""
    from tests.split_instances import chain_of_blocks, make_problem

    n, edges = chain_of_blocks(286)
    p = make_problem(n, edges, np.random.default_rng(0))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        solve(p)
        times.append(time.perf_counter() - t0)
    return {"nodes": n, "edges": len(edges), "best_s": min(times), "median_s": float(np.median(times))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--edges", nargs="+", default=list(EDGES))
    ap.add_argument("--links", nargs="+", type=float, default=list(LINKS_MBPS))
    ap.add_argument("-o", "--output", default="build/bench/split_inference.json")
    args = ap.parse_args(argv)
    t0 = time.time()
    cloud = resolve_hardware("a100_80gb")
    cells = []
    for name in args.models:
        spec = resolve_model(name)
        prof = profile_model(spec)
        for edge in args.edges:
            for mbps in args.links:
                cells.append(cell(spec, prof, edge, mbps, cloud, exact=(edge == args.edges[0] and mbps == 20)))
                print(f"[{time.time() - t0:5.0f}s] {name} {edge} {mbps:g} Mb/s", file=sys.stderr, flush=True)
    print("PREDICTED by the COACH cost model (catalog rooflines), not measured")
    print(fmt(cells))
    for c in cells:
        if "exact" in c:
            e = c["exact"]
            print(f"exact reference {c['model']} ({c['nodes']} nodes, {c['edge']}, 20 Mb/s): CP-SAT {e['status']}, "
                  f"bound {e['bound_ms']:.3f} ms, plan J gap {e['gap']:+.2%}")
    tn = thousand_node_timing()
    print(f"solver time, {tn['nodes']}-node chain of blocks: best {tn['best_s'] * 1e3:.0f} ms, median {tn['median_s'] * 1e3:.0f} ms "
          "(target 100 ms)")
    write_text_atomic(args.output, json.dumps({"cells": cells, "thousand_node": tn, "wall_s": time.time() - t0,
                                               "label": "predicted (cost model), not measured"},
                                              indent=1, sort_keys=True, default=float))
    print(f"wrote {args.output} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
