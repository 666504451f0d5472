"""split-inference on a laptop CPU (under a minute): plan ResNet-50 across a Raspberry Pi 5 and an A100
for uplinks from 1 to 100 Mbit/s and show where the cut and the bits move (accuracy: per-tensor SQNR
proxy on real activations, since no pretrained CNN weights are reachable offline). Then the digits
CNN, whose accuracy drop is measured on held-out scikit-learn digits.

    .venv/bin/python examples/split_inference.py
"""
from __future__ import annotations

from planner.api import plan_from_argv


def main() -> None:
    ctx = plan_from_argv(["resnet50", "--hardware", "raspberry_pi5_8gb", "--cloud", "a100_80gb",
                          "--link", "1mbps..100mbps", "--table-levels", "5"])
    p = ctx.plan
    print(f"resnet50, raspberry_pi5_8gb -> 10 Mbit/s -> a100_80gb: J {p.predicted['objective_ms']:.3f} ms, "
          f"period {p.predicted['period_ms']:.3f} ms, latency {p.predicted['latency_ms']:.2f} ms, "
          f"accuracy drop {p.predicted['accuracy_drop']:.4f} ({p.predicted['accuracy_kind']})")
    for t in p.decisions["cut_tensors"]:
        print(f"  sends {t['name']} {t['shape']} at {t['bits']} bits ({t['bytes']:.0f} bytes)")
    print("plan table:")
    for row in p.decisions["plan_table"]:
        print(f"  {row['uplink_bits_per_s'] / 1e6:8.2f} Mbit/s: send {row['cut_tensors'] or ['nothing']} at {row['bits']} bits,"
              f" latency {row['latency_ms']:.2f} ms")
    for name in ("all_edge", "all_cloud", "neurosurgeon", "dads"):
        b = p.baselines[name].predicted
        print(f"  {name:13}: latency {b['latency_ms']:.2f} ms, period {b['period_ms']:.3f} ms")
    digits = plan_from_argv(["digits-cnn", "--hardware", "raspberry_pi5_8gb", "--cloud", "a100_80gb",
                             "--link", "1mbps"]).plan
    print(f"digits-cnn on the Pi at 1 Mbit/s: {digits.decisions['cut_tensors'] or 'nothing sent (all on the device)'}; "
          f"accuracy drop {digits.predicted['accuracy_drop']:.4f} ({digits.predicted['accuracy_kind']})")


if __name__ == "__main__":
    main()
