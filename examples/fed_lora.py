"""fed-lora on a laptop CPU: plan FedQuad LoRA depths for a mixed federation of phones and Jetsons, compare
with the baselines, then emit the plan and run two federated rounds of the digits transformer through
Flower's simulation (device speeds EMULATED from the hardware profiles; memory counted on this CPU).

    .venv/bin/python examples/fed_lora.py

The first run measures the model's fine-tuning profile and pretrains the digits transformer (cached after).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from planner.api import emit_artifact, plan_from_argv, run_artifact

POPULATION = """# memory caps are scaled to the tiny model (a 270 k-parameter transformer)
defaults: {link: 20mbps}
devices:
  - {kind: jetson_agx_orin_32gb, count: 1, memory: 24MiB, samples: 400}
  - {kind: jetson_orin_nano_8gb, count: 1, memory: 9MiB, samples: 300}
  - {id: phone-a, kind: phone_midrange_8gb, memory: 5MiB, uplink: 5mbps, samples: 200}
  - {id: phone-b, kind: phone_midrange_8gb, memory: 6MiB, samples: 250}
"""


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="fed-lora-example-"))
    pop = work / "clients.yaml"
    pop.write_text(POPULATION)
    ctx = plan_from_argv(["digits-transformer", "--scenario", "fed-lora", "--clients", str(pop), "--batch-size", "32",
                          "--local-steps", "5", "--rounds", "2"])
    p = ctx.plan
    print(f"FedQuad plan for {len(p.decisions['clients'])} clients: round time {p.predicted['round_time_s']:.3f} s "
          f"(spread {p.predicted['round_time_spread']:.0%}), progress {p.predicted['progress_rate_per_s']:.3g}/s")
    for cid, c in p.decisions["clients"].items():
        e = p.predicted["clients"][cid]
        print(f"  {cid:24} depth {c['lora_depth']}, quantised blocks {c['act_quant_layers']}, "
              f"peak {e['peak_memory_bytes'] / 2**20:.1f} of {e['memory_budget_bytes'] / 2**20:.0f} MiB, "
              f"round {e['round_time_s']:.3f} s, waits {e['wait_s']:.3f} s")
    for name in ("uniform_depth", "memory_fit", "full_depth"):
        b = p.baselines[name].predicted
        print(f"  baseline {name:13}: round {b['round_time_s']:.3f} s, progress {b['progress_rate_per_s']:.3g}/s, "
              f"{b['participants']} training")
    art = emit_artifact(p, work / "build")
    report = run_artifact(art, ["--rounds", "2"])
    import json

    receipt = json.loads(report.receipt_json)
    for cid, e in receipt["devices"].items():
        print(f"  ran {cid:24} depth {e['lora_depth']} (trained as planned: {e['trained_planned_depth']}), memory "
              f"{e['measured_memory_bytes'] / 2**20:.1f} MiB measured vs {e['predicted_memory_bytes'] / 2**20:.1f} "
              f"predicted, round {e['emulated_round_s']:.3f} s emulated vs {e['predicted_round_s']:.3f} s predicted")
    print("accuracy by round: " + ", ".join(f"{r['accuracy']:.3f}" for r in receipt["rounds"]))


if __name__ == "__main__":
    main()
