"""fed-compress on a laptop CPU (about a minute): plan Caesar's per-device compression for 12 generated
devices over 6 rounds, show how the download ratio follows staleness and the upload ratio follows data
importance, then emit the plan and train digits-cnn on it with Flower (embedded simulation), one
device dropping out mid-round. Device speeds and links are EMULATED from the hardware profiles.

    .venv/bin/python examples/fed_compress.py
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from planner.api import emit_artifact, plan_from_argv, run_artifact


def main() -> None:
    ctx = plan_from_argv(["digits-cnn", "--clients", "gen:12:1", "--scenario", "fed-compress", "--rounds", "6",
                          "--participation", "50%"])
    plan = ctx.plan
    p = plan.predicted
    print(f"{len(plan.decisions['population'])} devices, 6 rounds, 6 per round: traffic "
          f"{p['traffic_bytes_per_round'] / 1e6:.2f} MB/round (no compression "
          f"{plan.baselines['no_compression'].predicted['traffic_bytes_per_round'] / 1e6:.2f}), round "
          f"{p['round_time_s']:.3f} s, mean kept down {p['mean_download_ratio']:.2f} / up {p['mean_upload_ratio']:.2f}")
    counts = {c["id"]: c for c in plan.decisions["population"]}
    last = plan.decisions["rounds"][-1]
    print(f"round {last['round']}: staleness -> download kept; samples -> upload kept; batch")
    for cid, c in sorted(last["clients"].items(), key=lambda kv: -kv[1]["staleness"]):
        print(f"  {cid:26} stale {c['staleness']}: down {c['download_ratio']:.2f}   "
              f"{counts[cid]['samples']:3d} samples: up {c['upload_ratio']:.2f}   batch {c['batch_size']}")
    with tempfile.TemporaryDirectory() as tmp:
        art = emit_artifact(plan, Path(tmp) / "build")
        report = run_artifact(art, ["--rounds", "3", "--dropout", "15%", "--target-accuracy", "30%"])
        import json

        r = json.loads(report.receipt_json)
        for row in r["totals"]["rounds"][1:]:
            print(f"  round {row['round']}: accuracy {row['accuracy']:.3f}, {row['traffic_payload_bytes'] / 1e6:.2f} MB "
                  f"measured = {row['predicted_traffic_bytes'] / 1e6:.2f} MB predicted, {row['dropped']} dropped")


if __name__ == "__main__":
    main()
