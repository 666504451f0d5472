"""moe-offload end to end on a laptop CPU (under a minute): plan Mixtral-8x7B for a 24 GB A100, then
plan, emit and run the tiny same-architecture Mixtral through the offloading engine (emulated link).

    .venv/bin/python examples/moe_offload.py
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from planner.api import emit_artifact, plan_from_argv
from planner.registry import resolve_model
from profilers.models import build_model
from profilers.moe import record_trace
from runtime.moe_offload.run import generate, load


def main() -> None:
    full = plan_from_argv(["mixtral-8x7b", "--hardware", "a100_24gb", "--sim-tokens", "256"]).plan
    print(f"Mixtral-8x7B on a100_24gb: predicted TPOT {full.predicted['tpot_ms']:.0f} ms "
          f"(simulated {full.simulated['tpot_ms']:.0f} ms); best baseline "
          f"{min((b.simulated['tpot_ms'], n) for n, b in full.baselines.items())}")
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(resolve_model("mixtral-8x7b"), tiny=True).module
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(0, 512, (12,), generator=g).tolist() for _ in range(3)]
        trace = record_trace(model, prompts, 80, model_name="mixtral-8x7b", temperature=1.0, seed=0)
        tpath = trace.save(Path(tmp) / "trace.npz")
        tiny = plan_from_argv(["mixtral-8x7b", "--tiny", "--hardware", "cpu_emulated_link", "--trace", str(tpath),
                               "--expert-budget", "40%"]).plan
        art = emit_artifact(tiny, Path(tmp) / "build")
        receipt = generate(load(art, device="cpu"), list(range(30, 42)), 24, temperature=1.0, seed=5)
        t = receipt.totals
        print(f"tiny Mixtral through the engine ({receipt.link}):")
        print(f"  hit rate measured {t['hit_rate_measured']:.1%} vs predicted {t['hit_rate_predicted']:.1%}; "
              f"{t['bytes_h2d_per_token'] / 1024:.0f} KiB/token over the link; TPOT {t['tpot_ms_measured']:.1f} ms measured")
        for row in receipt.rows:
            print(f"  {row['layer']}: f_top {row['f_top_applied']}, {row['capacity_applied']} top slots, "
                  f"hits {row['hits']}/{row['activations']}")


if __name__ == "__main__":
    main()
