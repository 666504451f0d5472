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

from planner.api import emit_artifact, plan_from_argv, run_artifact


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="split-")) / "build"
    p = plan_from_argv(["digits-cnn", "--hardware", "raspberry_pi5_8gb", "--cloud", "a100_80gb",
                        "--link", "200kbps..50mbps", "--table-levels", "4"]).plan
    print(f"plan: send {[t['name'] for t in p.decisions['cut_tensors']] or 'nothing (all on the edge)'}; "
          f"baselines: {', '.join(sorted(p.baselines))}")
    art = emit_artifact(p, out, progress=lambda s: print(f"  emit: {s}"))
    print(f"wrote {art}")
    console = Console(width=160)
    for title, argv in (("plan", []), ("all_cloud", ["--baseline", "all_cloud"]),
                        ("all_cloud + semantic cache", ["--baseline", "all_cloud", "--cache", "on"])):
        report = run_artifact(art, [*argv, "--requests", "120", "--no-emulate"])
        console.rule(title)
        for view in report.views:
            console.print(view)


if __name__ == "__main__":
    main()
