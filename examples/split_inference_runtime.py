"""split-inference end to end on a laptop CPU (about a minute): plan the digits CNN for a Raspberry Pi 5 and an
A100 with a plan table over 0.2-50 Mbit/s, emit the edge and cloud halves, and serve the held-out digits
through them as two processes over gRPC on loopback: the plan's configuration, the all-cloud baseline, and
the all-cloud baseline with COACH's semantic cache answering at the edge. Prints each receipt.

    .venv/bin/python examples/split_inference_runtime.py [OUT_DIR]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from rich.console import Console

from planner.families.split_runtime import EmitOptions, RunOptions, emit, receipt_views, run
from planner.lowering.split_inference import SplitOptions
from planner.pipeline import PlanRequest, plan


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="split-")) / "build"
    opts = SplitOptions(link_bits_per_s=1e6, link_range_bits_per_s=(2e5, 5e7), table_levels=4)
    p = plan(PlanRequest("digits-cnn", "raspberry_pi5_8gb", cloud="a100_80gb", link="1mbps", split=opts)).plan
    print(f"plan: send {[t['name'] for t in p.decisions['cut_tensors']] or 'nothing (all on the edge)'}; "
          f"baselines: {', '.join(sorted(p.baselines))}")
    art = emit(p, out, EmitOptions(), force=False, progress=lambda s: print(f"  emit: {s}"))
    print(f"wrote {art}")
    console = Console(width=160)
    for config, cache in (("plan", None), ("all_cloud", False), ("all_cloud", True)):
        receipt = run(art, RunOptions(config=config, cache=cache, requests=120, emulate=False))
        console.rule(f"{config}{' + semantic cache' if cache else ''}")
        for view in receipt_views(receipt):
            console.print(view)


if __name__ == "__main__":
    main()
