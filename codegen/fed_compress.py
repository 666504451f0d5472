"""fed-compress codegen: the model as a saved torch.export program, and one runtime job per configuration.

Codegen applies decisions, it does not make them: `job_for` turns a plan's decisions (plain data:
the population, the per-round schedule of kept fractions and batches, the codec) into the JSON job
that `runtime/fed/compress_run.py` runs on Flower; `export_model` saves the (initial, untrained)
model with a dynamic batch dimension so that every client and the server load the same weights
without the planner's code.

    export_model(DigitsCNN(), Path("build/model/digits-cnn.pt2"), example=torch.zeros(2, 1, 8, 8))
    job = job_for(plan.decisions, plan.decisions, "plan", seed=0)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

JOB_FORMAT = 1
MAX_BATCH = 4096


def export_model(model: torch.nn.Module, path: Path, example: torch.Tensor) -> Path:
    """Save `model` as a torch.export program with a dynamic batch dimension (written atomically)."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")   # torch.export wants the .pt2 suffix
    torch.export.save(program, str(tmp))
    os.replace(tmp, path)
    return path


def job_for(decisions: Mapping[str, Any], config: Mapping[str, Any], name: str, seed: int,
            cpu_flops_per_s: float | None = None, emulate_wall_clock: bool = False) -> dict[str, Any]:
    """The runtime job of configuration `name`: `decisions` holds the population, data split and training
    settings (the plan's), `config` the schedule and codec (the plan's own or a baseline's decisions).

    Each client carries its device's FLOP/s; its `compute_scale` (emulated device seconds per second of
    compute on this CPU) is `cpu_flops_per_s / device FLOP/s`, set here when the CPU figure is known and
    otherwise by the runtime's caller, which measures the CPU the job runs on.
    """
    codec = config["codec"]
    rounds = []
    for r in config["rounds"]:
        clients = {}
        for cid, c in r["clients"].items():
            clients[cid] = {"keep_down": float(c["download_ratio"]), "keep_up": float(c["upload_ratio"]),
                            "batch": int(c["batch_size"]), "drop": False,
                            "predicted": {"bytes_down": float(c["predicted"]["bytes_down"]),
                                          "bytes_up": float(c["predicted"]["bytes_up"]),
                                          "time_s": float(c["predicted"]["time_s"])}}
        rounds.append({"round": int(r["round"]), "clients": clients})
    clients = [{"id": c["id"], "index": int(c["index"]), "samples": int(c["samples"]),
                "uplink_bytes_per_s": float(c["uplink_bytes_per_s"]), "downlink_bytes_per_s": float(c["downlink_bytes_per_s"]),
                "latency_s": float(c["latency_s"]), "flops_per_s": float(c["flops_per_s"]),
                **({"compute_scale": float(cpu_flops_per_s) / float(c["flops_per_s"])} if cpu_flops_per_s else {})}
               for c in decisions["population"]]
    return {"format": JOB_FORMAT, "config": name, "seed": int(seed),
            "data": dict(decisions["data"]), "training": dict(decisions["training"]),
            # a dense upload is top-k at keep 1 (the schedule says 1), so the runtime knows two upload codecs
            "codec": {"up_codec": "quant" if codec["upload"] == "quant" else "topk",
                      "quant_bits": int(codec.get("quant_bits", 0)),
                      "error_feedback": bool(codec.get("error_feedback", False)),
                      "recovery": bool(codec.get("recovery", True)),
                      "min_numel": int(codec.get("min_compress_numel", 1024))},
            "clients": clients, "rounds": rounds, "emulate_wall_clock": bool(emulate_wall_clock)}
