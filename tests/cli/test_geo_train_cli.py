"""geo-train through the CLI, in-process: plan (deterministic bytes), inspect, emit (one job per configuration)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from planner.cli import main


def _regions(tmp: Path, rate: str = "2mbps") -> Path:
    path = tmp / "regions.yaml"
    two = [{"name": "us", "hardware": "cpu_server_xeon", "step_time": "300ms"},
           {"name": "eu", "hardware": "cpu_server_xeon", "step_time": "300ms"}]
    path.write_text(yaml.safe_dump({"regions": two, "wan": {"rate": rate, "rtt": "80ms"}}), encoding="utf-8")
    return path


def test_plan_inspect_emit(tmp_path: Path, capsys) -> None:
    reg = _regions(tmp_path)
    argv = ["plan", "lm-small", "--regions", str(reg), "--data", "synthetic:by-source", "--inner-steps", "32",
            "--merge", "taylor"]
    assert main(argv + ["-o", str(tmp_path / "a.json")]) == 0
    assert main(argv + ["-o", str(tmp_path / "b.json")]) == 0
    a = (tmp_path / "a.json").read_bytes()
    assert a == (tmp_path / "b.json").read_bytes()                  # same inputs, same plan bytes
    plan = json.loads(a)
    assert plan["family"] == "geo-train"                             # claimed by --regions alone
    d, p = plan["decisions"], plan["predicted"]
    assert d["merge"] == "taylor" and "forced" in d["merge_reason"]
    assert d["slot_steps_h"] * d["sends_per_window_N"] == d["inner_steps_H"] == 32
    assert 0 < d["delay_steps_tau"] < d["slot_steps_h"]
    assert all(f["hidden"] for f in d["fragments"])                   # 2 Mbit/s hides a fragment of lm-small
    diloco = plan["baselines"]["diloco"]["predicted"]
    assert diloco["exposed_comm_s_per_step"] > 0 and p["exposed_comm_s_per_step"] == 0
    assert p["step_time_s"] < diloco["step_time_s"]
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "in-flight delay tau" in out and "streaming_diloco" in out
    assert main(["emit", str(tmp_path / "a.json"), "-o", str(tmp_path / "art")]) == 0
    jobs = {q.stem: json.loads(q.read_text()) for q in (tmp_path / "art" / "jobs").glob("*.json")}
    assert set(jobs) == {"plan", "diloco", "streaming_diloco", "streaming_diloco_equal_bytes", "cocodc_lambda0",
                         "cocodc_round_robin"}
    assert jobs["plan"]["algorithm"] == "cocodc" and jobs["plan"]["adaptive"] and jobs["plan"]["lam0"] == 1.0
    assert jobs["plan"]["compensation"] == "bounded" and jobs["plan"]["kappa"] == 0.0        # kappa auto
    assert jobs["cocodc_lambda0"]["lam0"] == 0.0 and not jobs["cocodc_round_robin"]["adaptive"]
    assert jobs["streaming_diloco"]["algorithm"] == "streaming" and jobs["streaming_diloco"]["alpha"] == 0.5
    assert jobs["diloco"]["algorithm"] == "diloco"
    sde = jobs["streaming_diloco_equal_bytes"]
    assert sde["H"] == len(sde["groups"]) * jobs["plan"]["H"] // jobs["plan"]["N"]   # the plan's slot and bytes per step


def test_auto_merge_never_recommends_what_streaming_diloco_beats(tmp_path: Path) -> None:
    """Without a measurement of CoCoDC winning in this regime the plan IS torchft's Streaming DiLoCo at
    equal bytes (same fragments, slot, delay), says why, and keeps CoCoDC as a baseline to run."""
    reg = _regions(tmp_path)
    argv = ["plan", "lm-small", "--regions", str(reg), "--data", "synthetic:by-source", "--inner-steps", "32"]
    assert main(argv + ["-o", str(tmp_path / "auto.json")]) == 0
    assert main(argv + ["--merge", "taylor", "-o", str(tmp_path / "t.json")]) == 0
    auto, forced = json.loads((tmp_path / "auto.json").read_text()), json.loads((tmp_path / "t.json").read_text())
    d = auto["decisions"]
    assert d["merge"] == "alpha-blend" and d["choice"] == "round-robin" and d["alpha"] == 0.5
    assert "Streaming DiLoCo" in d["merge_reason"] and any("--merge taylor" in n for n in auto["notes"])
    sde = auto["baselines"]["streaming_diloco_equal_bytes"]
    assert {k: d[k] for k in ("fragments", "slot_steps_h", "delay_steps_tau", "inner_steps_H")} == \
        {k: sde["decisions"][k] for k in ("fragments", "slot_steps_h", "delay_steps_tau", "inner_steps_H")}
    assert auto["predicted"]["step_time_s"] == sde["predicted"]["step_time_s"]
    assert auto["baselines"]["cocodc"]["decisions"]["merge"] == "taylor"
    assert auto["baselines"]["cocodc"]["decisions"]["slot_steps_h"] == forced["decisions"]["slot_steps_h"]
    assert main(["emit", str(tmp_path / "auto.json"), "-o", str(tmp_path / "art")]) == 0
    jobs = {q.stem: json.loads(q.read_text()) for q in (tmp_path / "art" / "jobs").glob("*.json")}
    assert jobs["plan"]["algorithm"] == "streaming" and jobs["plan"]["alpha"] == 0.5
    assert {k: v for k, v in jobs["plan"].items() if k != "name"} == \
        {k: v for k, v in jobs["streaming_diloco_equal_bytes"].items() if k != "name"}
    assert jobs["cocodc"]["algorithm"] == "cocodc"


def test_smollm2_is_planned_not_trained(tmp_path: Path) -> None:
    reg = _regions(tmp_path, rate="10gbps")
    assert main(["plan", "smollm2-135m", "--regions", str(reg), "--inner-steps", "64", "-o", str(tmp_path / "s.json")]) == 0
    plan = json.loads((tmp_path / "s.json").read_text())
    assert sum(len(f["layers"]) for f in plan["decisions"]["fragments"]) == 30
    assert plan["decisions"]["model_bytes"] > 200e6                   # 134.5 M params in bf16
