"""A small fed-lora artifact for runtime tests: a 4-block digits transformer (seeded, not pretrained), the
PEFT adapter files written by codegen, and a runtime.yaml with a hand-written per-client plan."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from codegen.fed_lora import LoraSpec, client_config_map, emit_adapters
from profilers.fine_tuning import block_layout
from runtime.fed.digits_model import DigitsTransformer

ARCH = {"hidden": 32, "layers": 4, "heads": 2, "intermediate": 64}


def make_artifact(root: Path, clients: dict[str, tuple[int, int]], local_steps: int = 2, batch_size: int = 8,
                  bits: int = 8) -> Path:
    """`clients`: id -> (LoRA depth, quantised blocks); depth 0 = sits out."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    model = DigitsTransformer(**ARCH, seed=0)
    lay = block_layout(model)
    spec = LoraSpec(blocks_path=lay.path, layers_pattern=lay.pattern, num_blocks=lay.num_blocks,
                    target_modules=lay.target_modules, head_modules=lay.head_modules, rank=4, alpha=8)
    L = spec.num_blocks
    emit_adapters(model, spec, [d for d, _ in clients.values()], root, seed=0)
    (root / "model").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "model" / "weights.safetensors"))
    decisions = {cid: {"lora_depth": d, "act_quant_layers": list(range(L - d, L - d + q)), "act_bits": bits,
                       "local_steps": local_steps, "batch_size": batch_size} for cid, (d, q) in clients.items()}
    cmap = client_config_map(decisions)
    for rec in cmap.values():
        rec.update({"compute-slowdown": 0.5, "uplink-bytes-per-s": 1e6, "downlink-bytes-per-s": 4e6, "latency-s": 0.01})
    cfg = {"format": 1, "family": "fed-lora",
           "model": {"name": "digits-transformer-test", "fingerprint": "test", "task": "digits", "arch": ARCH,
                     "weights": "model/weights.safetensors"},
           "lora": spec.to_dict(), "adapters": {"initial": "adapters/initial_lora.safetensors"},
           "training": {"rounds": 2, "lr": 3e-3, "data": {"dataset": "sklearn digits", "alpha": 1.0, "seed": 0},
                        "batch_size": batch_size, "local_steps": local_steps},
           "emulation": {"host_flops_per_cpu_s": 1e10}, "predicted": {"round_time_s": 1.0},
           "clients": cmap,
           "baselines": {"uniform_depth": {"description": "test", "clients": client_config_map(
               {cid: {**d, "lora_depth": 1 if d["lora_depth"] else 0, "act_quant_layers": []}
                for cid, d in decisions.items()})}}}
    for rec in cfg["baselines"]["uniform_depth"]["clients"].values():
        rec.update({"compute-slowdown": 0.5, "uplink-bytes-per-s": 1e6, "downlink-bytes-per-s": 4e6, "latency-s": 0.01})
    (root / "runtime.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    torch.manual_seed(0)
    return root
