"""fed-expand on a laptop CPU: plan FedBE's added blocks and per-client allocation for three clients on the tiny
SmolLM2 architecture, compare with the baselines, then emit (the expansion checked to be the identity) and run
one federated round through Flower's simulation; the receipt checks every client-round against its budgets
(device speeds EMULATED from the hardware profiles; memory counted on this CPU).

    .venv/bin/python examples/fed_expand.py

Real weights: replace `--tiny` and use `smollm2-135m:8L` (examples/fed_expand_clients.yaml, docs/fed-expand.md).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from planner.api import emit_artifact, plan_from_argv, run_artifact

POPULATION = """devices:
  - {id: orin, kind: jetson_orin_nano_8gb, memory: 2GiB, link: 100mbps}
  - {id: pi, kind: raspberry_pi5_8gb, memory: 1GiB, link: 50mbps}
  - {id: phone, kind: phone_midrange_8gb, memory: 1GiB, link: 20mbps}
"""


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="fed-expand-example-"))
    pop = work / "clients.yaml"
    pop.write_text(POPULATION)
    ctx = plan_from_argv(["smollm2-135m:8L", "--tiny", "--scenario", "fed-expand", "--clients", str(pop),
                          "--data", "instruct:4tasks,total=80,test_per_task=4", "--local-steps", "2", "--rounds", "1",
                          "--batch-size", "4", "--seq-len", "32"])
    p = ctx.plan
    d = p.decisions
    print(f"{d['added_blocks']} added blocks after base blocks {d['added_after']} (layers {d['added_layers']})")
    for cid, c in d["clients"].items():
        e = p.predicted["clients"][cid]
        print(f"  {cid:6} cluster {c['cluster']}, blocks {c['blocks']}, memory {e['memory_bytes'] / 2**20:.2f} of "
              f"{e['memory_budget_bytes'] / 2**20:.0f} MiB, round {e['round_time_s']:.3f} s")
    for name, b in sorted(p.baselines.items()):
        print(f"  baseline {name:17}: round {b.predicted['round_time_s']:.3f} s, "
              f"{b.predicted['bytes_per_round'] / 2**20:.2f} MiB per round")
    art = emit_artifact(p, work / "build")
    receipt = json.loads(run_artifact(art).receipt_json)
    print(f"budget check: {receipt['budget_check']}")
    print("held-out answer-token accuracy by round: " + ", ".join(f"{r['token_accuracy']:.3f}" for r in receipt["rounds"]))


if __name__ == "__main__":
    main()
