"""kv-budget through the CLI in-process on the tiny random SmolLM2-architecture model: plan -> inspect -> emit ->
run, determinism of the plan bytes, and the receipt's predicted-vs-measured bytes.

The prompts are random token ids (the tiny model has no use for real text; the real workload path runs in
benchmarks/kv_budget.py), so scores are not meaningful here; the mechanics are (real keep sets, real presses,
the ragged cache's measured bytes).
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("kvpress")

from planner.cli import main  # noqa: E402
from planner.families.kv_budget import workload as wl  # noqa: E402
from planner.families.kv_budget.measure import KvRequest  # noqa: E402

PLAN = ["plan", "smollm2-135m", "--tiny", "--hardware", "a100_24gb", "--scenario", "kv-budget",
        "--workload", "ruler:niah,kv@96:4", "--p-nuc", "0.5,1", "--samples", "2", "--window", "4",
        "--presses", "snapkv,streamingllm", "--press-ratios", "0.01", "--max-accuracy-drop", "100%", "--spans", "1:2",
        "-q"]


def _tiny_lm(spec, tiny, weights, seed):
    import torch
    import transformers

    from profilers.models import transformers_config

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(transformers_config(spec, True), dtype=torch.float32)
    model.set_attn_implementation("sdpa")
    return wl.LoadedLM(model.eval(), None, sum(p.numel() for p in model.parameters()), 512, 512, (),
                       lambda ids: " ".join(map(str, ids)),
                       lambda req, text: float(text.split(" ")[:1] == req.answer.split(" ")[:1]))


def _requests(text, lm, seed, spec, tiny):
    import random

    rng = random.Random(seed)
    out = []
    for i in range(4):
        n = 80 + 16 * i
        ids = tuple(rng.randrange(512) for _ in range(n))
        out.append(KvRequest(("niah", "kv")[i % 2], ids, (), str(ids[-1]), 3))
    return out


@pytest.fixture()
def tiny_workload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wl, "load_lm", _tiny_lm)
    monkeypatch.setattr(wl, "make_requests", _requests)
    monkeypatch.setattr(wl, "parse_workload", lambda text, spec, tiny: SimpleNamespace(length=96))


def test_plan_inspect_emit_run(tiny_workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(PLAN + ["-o", "a.json"]) == 0
    assert main(PLAN + ["-o", "b.json"]) == 0
    assert Path("a.json").read_bytes() == Path("b.json").read_bytes()          # deterministic plan bytes
    plan = json.loads(Path("a.json").read_text())
    d, p = plan["decisions"], plan["predicted"]
    assert d["knobs"]["method"] == "gvote" and d["knobs"]["p_nuc"] == 0.5        # least memory at a 100-point drop
    assert {b for b in plan["baselines"]} == {"full", "snapkv", "streamingllm"}
    assert len(d["curve"]) == 1 + 2 + 2 and len(d["requests"]) == 4
    kv = [r["kv_bytes"] for r in d["requests"]]
    assert len(set(kv)) > 1                                                      # budgets differ per request
    assert p["mean_kv_bytes"] < plan["baselines"]["full"]["predicted"]["mean_kv_bytes"]
    assert p["concurrency_p95"] >= plan["baselines"]["full"]["predicted"]["concurrency_p95"]
    assert p["oracle_mean_kv_bytes"] > 0 and plan["bound"] is None
    capsys.readouterr()
    assert main(["inspect", "a.json"]) == 0
    shown = capsys.readouterr().out
    assert "budget per task" in shown and "accuracy vs memory" in shown and "concurrency" in shown
    for task in ("niah", "kv"):                                                 # each task's budget range
        kept = sorted(r["kept_fraction"] for r in d["requests"] if r["task"] == task)
        assert f"{kept[0]:.2f}-{kept[-1]:.2f}" in shown
    assert main(["emit", "a.json", "-o", "build"]) == 0
    assert main(["run", "build", "--json", "receipt.json"]) == 0
    rec = json.loads(Path("receipt.json").read_text())
    assert rec["family"] == "kv-budget" and rec["totals"]["prompts"] == 4
    tot = rec["totals"]
    assert tot["calibration_prompts"] == 4 and p["accuracy_stderr"] > 0 and tot["accuracy_stderr_measured"] > 0
    assert tot["accuracy_within_sampling_error"] == (
        abs(tot["accuracy_measured"] - p["accuracy"]) <= 1.96 * (tot["accuracy_stderr_measured"] ** 2
                                                                 + p["accuracy_stderr"] ** 2) ** 0.5)


def test_a_press_that_beats_gvote_becomes_the_plan_and_run_compares_bytes(
        tiny_workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([a if a != "0.01" else "0.5" for a in PLAN] + ["-o", "a.json"]) == 0
    plan = json.loads(Path("a.json").read_text())
    assert plan["decisions"]["knobs"] == {"method": "snapkv", "ratio": 0.5}          # half the memory, same target
    assert plan["baselines"]["gvote"]["decisions"]["knobs"]["method"] == "gvote"
    assert any("snapkv" in n for n in plan["notes"])
    assert main(["emit", "a.json", "-o", "build"]) == 0
    from planner.families.kv_budget.artifact import run
    from planner.cli import family_values

    report = run(Path("build"), family_values("run", []), lambda s: None)
    rec = json.loads(report.receipt_json)
    assert rec["config"] == "plan" and rec["totals"]["prompts"] == 4
    for row in rec["rows"]:
        assert row["kv_bytes_measured"] > 0 and row["kv_bytes_predicted"] > 0
    assert rec["totals"]["full_accuracy_measured"] >= 0.0
    full = run(Path("build"), family_values("run", ["--baseline", "full"]), lambda s: None)
    frec = json.loads(full.receipt_json)
    assert all(r["kv_bytes_rel_error"] == pytest.approx(0.0) for r in frec["rows"])   # full cache: exact prediction
    assert frec["totals"]["mean_kv_bytes_measured"] > rec["totals"]["mean_kv_bytes_measured"]
