"""spec-serve through the CLI in-process on the tiny random SmolLM2-architecture model: plan -> inspect -> emit ->
run (in-process nodes), plan bytes reproducible from the cached calibration, greedy outputs equal to target-only,
and a drafter node killed mid-run is recovered from (its requests re-routed, every request finished).

The tiny model's acceptance and times mean nothing; the mechanics are real (drafters, fusion, verification, KV
rollback, MiniLM routing, LP batches). The real-model figures come from benchmarks/spec_serve.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from planner.cli import main

NODES = {"nodes": [{"name": "hub", "hardware": "jetson_agx_orin_32gb", "role": "verifier"},
                   {"name": "edge1", "hardware": "jetson_orin_nano_8gb", "role": "drafter"},
                   {"name": "edge2", "hardware": "raspberry_pi5_8gb", "role": "drafter"}],
         "links": [{"between": ["hub", "edge1"], "rate": "1gbps", "delay": "1ms"},
                   {"between": ["hub", "edge2"], "rate": "100mbps", "delay": "5ms"}]}


def test_plan_inspect_emit_run_and_recovery(smollm2_cache: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump(NODES))
    plan = ["plan", "smollm2-135m", "--tiny", "--scenario", "spec-serve", "--nodes", str(nodes), "--workload",
            "mix:code,chat,math:6", "--new-tokens", "8", "--calibration-prompts", "1", "--gamma-max", "4",
            "--drafters", "ee1", "-q"]
    assert main(plan + ["-o", str(tmp_path / "a.json")]) == 0
    assert main(plan + ["-o", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    p = json.loads((tmp_path / "a.json").read_text())
    assert p["family"] == "spec-serve"
    assert set(p["baselines"]) >= {"target-only", "assisted-ee1", "no-routing", "no-fusion", "no-pipelining",
                                   "fixed-gamma"}
    # the plan recommends the best predicted goodput among CoSine, target-only and the single drafters, all scored
    # by the same replay (a simpler one when within the predictor's measured error), never what one of them beats
    # by more than that error
    from solvers.spec_serve.cosine import MARGIN

    rec = p["decisions"]["recommendation"]
    chosen = p["decisions"]["configuration"]
    assert rec["configuration"] == chosen
    g = {n: v for n, v in rec["predicted_goodput_tps"].items()
         if n in ("cosine", "target-only") or n.startswith("assisted-")}
    assert p["predicted"]["goodput_tps"] == pytest.approx(g[chosen], rel=1e-4)
    assert g[chosen] * (1 + MARGIN) >= max(g.values()) * (1 - 1e-6)
    assert chosen == max(g, key=g.get) or chosen == "target-only" or chosen.startswith("assisted-")
    cosine = p["predicted"] if chosen == "cosine" else p["baselines"]["cosine"]["predicted"]
    for b in ("no-routing", "no-fusion", "fixed-gamma"):
        assert cosine["goodput_tps"] >= p["baselines"][b]["predicted"]["goodput_tps"] - 1e-6
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "a.json")]) == 0
    shown = capsys.readouterr().out
    assert "routing table" in shown and "drafter placement" in shown and "recommended:" in shown
    art = tmp_path / "art"
    assert main(["emit", str(tmp_path / "a.json"), "-o", str(art)]) == 0
    cfg = yaml.safe_load((art / "runtime.yaml").read_text())
    assert {"plan", "target-only", "no-pipelining", "assisted-ee1", "replicas-target-only"} <= set(cfg["configs"])
    # equal node count: target-only on the verifier and both drafter nodes (8 GB each hold the target)
    reps = cfg["configs"]["replicas-target-only"]["replicas"]
    assert [r["node"] for r in reps] == ["hub", "edge1", "edge2"]
    cos = "plan" if chosen == "cosine" else "cosine"
    outs = {}
    # the plan's own configuration, target-only (the same when recommended), CoSine's when not recommended, and
    # target-only replicated on every node (requests split by the plan's router, each replica on its node's clock)
    for name in sorted({"plan", cos, "replicas-target-only"} | ({"target-only"} if chosen != "target-only" else set())):
        rec_path = tmp_path / f"{name}.json"
        argv = ["run", str(art), "--transport", "local", "--requests", "3", "--json", str(rec_path)]
        if name != "plan":
            argv += ["--baseline", name]
        assert main(argv) == 0
        rec = json.loads(rec_path.read_text())
        assert rec["totals"]["requests"] == 3 and rec["totals"]["clock"] == "EMULATED"
        outs[name] = [r["out"] for r in rec["rows"]]
        if name == "replicas-target-only":
            from core.request_router import assign

            where = assign(3, [1 / r["scale"] for r in reps], cfg["configs"][name]["router"])
            assert [r["replica"] for r in rec["rows"]] == [reps[i]["node"] for i in where]
            assert any("replicated on" in e for e in rec["totals"]["events"])
    outs.setdefault("target-only", outs["plan"])
    for name in outs:                                      # greedy speculation = target-only tokens
        assert outs[name] == outs["target-only"], name
    # a drafter node dies at cycle 1: its requests are re-routed and every request finishes
    placed = [n for n, d in cfg["configs"][cos]["nodes"].items() if d.get("drafter")]
    assert placed                                          # ee1 is the only neural drafter: it must hold a node
    if placed:
        rec_path = tmp_path / "kill.json"
        assert main(["run", str(art), "--transport", "local", "--requests", "3", "--kill", f"{placed[0]}@1",
                     "--json", str(rec_path)] + ([] if cos == "plan" else ["--baseline", cos])) == 0
        rec = json.loads(rec_path.read_text())
        assert any(f"node {placed[0]} died" in e for e in rec["totals"]["events"])
        assert [r["out"] for r in rec["rows"]] == outs["target-only"]
    # --kill names a drafter node to lose; a replicated configuration has none: one line, exit 2, nothing written
    capsys.readouterr()
    bad = tmp_path / "kill-replicas.json"
    assert main(["run", str(art), "--transport", "local", "--requests", "3", "--kill", "edge1@1",
                 "--baseline", "replicas-target-only", "--json", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--kill does not apply to 'replicas-target-only'" in err[0], err
    assert not bad.exists()
