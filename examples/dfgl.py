"""dfgl on a laptop CPU (a minute or two): plan Duplex's per-round topology and sampling ratios for 4 generated
workers on a 600-node contextual SBM split by Louvain, compare with the baselines under the cost model, then
emit and run 3 rounds with one gloo process per worker. Links are EMULATED in the transport.

    .venv/bin/python examples/dfgl.py
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from planner.api import emit_artifact, plan_from_argv, run_artifact


def main() -> None:
    ctx = plan_from_argv(["gcn", "--workers", "gen:4", "--graph", "csbm:nodes=600,workers=4", "--rounds", "3",
                          "--episodes", "5"])
    plan = ctx.plan
    print("config             sum t/progress   time s   bytes")
    for name, pred in [("plan", plan.predicted)] + [(n, b.predicted) for n, b in sorted(plan.baselines.items())]:
        print(f"{name:18} {pred['objective_sum']:14.4f} {pred['total_time_s']:8.3f} {pred['total_bytes']:9.0f}")
    for r in plan.decisions["schedule"]:
        print(f"round {r['round']}: links {r['links']} ratios {r['ratios']}")
    with tempfile.TemporaryDirectory() as tmp:
        art = emit_artifact(plan, Path(tmp) / "art")
        rec = json.loads(run_artifact(art).receipt_json)
    for r in rec["rounds"]:
        print(f"round {r['round']}: measured {r['measured_s']:.2f} s (pred {r['predicted_s']:.3f}), bytes "
              f"{r['measured_bytes']:.0f} (pred {r['predicted_bytes']:.0f}), accuracy {r['accuracy']:.3f}, "
              f"bound held: {r['bound_holds']}")


if __name__ == "__main__":
    main()
