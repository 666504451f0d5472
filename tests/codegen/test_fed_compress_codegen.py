"""fed-compress codegen: the exported program computes what the model computes; jobs carry the plan's decisions."""
from __future__ import annotations

from pathlib import Path

import torch

from codegen.fed_compress import export_model, job_for
from profilers.digits_cnn import DigitsCNN


def test_exported_model_is_semantically_equivalent_and_trainable(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = DigitsCNN().eval()
    path = export_model(model, tmp_path / "m.pt2", torch.zeros(2, 1, 8, 8))
    loaded = torch.export.load(str(path)).module()
    x = torch.rand(37, 1, 8, 8, generator=torch.Generator().manual_seed(0))   # another batch size than traced
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert [k for k in loaded.state_dict()] == [k for k in model.state_dict()]
    loss = torch.nn.functional.cross_entropy(loaded(x), torch.zeros(37, dtype=torch.long))
    loss.backward()
    assert all(p.grad is not None for p in loaded.parameters())


def test_job_carries_the_schedule_codec_and_emulation_scale() -> None:
    decisions = {
        "population": [{"id": "a", "index": 0, "samples": 12, "uplink_bytes_per_s": 1e6, "downlink_bytes_per_s": 4e6,
                        "latency_s": 0.05, "flops_per_s": 2e11}],
        "data": {"alpha": 0.3, "split_seed": 0, "num_clients": 1}, "training": {"local_iters": 5, "lr": 0.1},
        "codec": {"download": "caesar", "upload": "dense", "error_feedback": False, "recovery": True,
                  "quant_bits": 0, "min_compress_numel": 1024},
        "rounds": [{"round": 1, "clients": {"a": {"download_ratio": 0.75, "upload_ratio": 1.0, "batch_size": 12,
                                                  "predicted": {"bytes_down": 10.0, "bytes_up": 20.0, "time_s": 0.3}}}}],
    }
    job = job_for(decisions, decisions, "no_compression", seed=4, cpu_flops_per_s=1e11)
    assert job["codec"]["up_codec"] == "topk" and job["config"] == "no_compression" and job["seed"] == 4
    assert job["rounds"][0]["clients"]["a"] == {"keep_down": 0.75, "keep_up": 1.0, "batch": 12, "drop": False,
                                                "predicted": {"bytes_down": 10.0, "bytes_up": 20.0, "time_s": 0.3}}
    assert job["clients"][0]["compute_scale"] == 0.5
