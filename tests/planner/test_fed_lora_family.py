"""The fed-lora family end to end on the planning side: plan contract, determinism, validation, inspect,
emit, and one-line errors for bad populations (tiny GPT-2, profiled on this CPU in a second)."""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from core.errors import PlannerError

POP = """defaults: {link: 20mbps}
devices:
  - {kind: jetson_agx_orin_32gb, count: 2, memory: 64MiB, samples: 300}
  - {kind: jetson_orin_nano_8gb, count: 2, memory: 24MiB, samples: 200}
  - {id: phone-7, kind: phone_midrange_8gb, memory: 14MiB, uplink: 5mbps, downlink: 20mbps, samples: 100}
"""
ARGS = ["gpt2", "--tiny", "--scenario", "fed-lora", "--batch-size", "2", "--seq-len", "16", "--local-steps", "5"]


@pytest.fixture(scope="module")
def pop_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("pop") / "clients.yaml"
    p.write_text(POP)
    return p


@pytest.fixture(scope="module")
def planned(pop_file: Path):
    from planner.api import plan_from_argv

    return plan_from_argv([*ARGS, "--clients", str(pop_file)])


def test_plan_contract_and_optimality(planned) -> None:
    plan = planned.plan
    assert plan.family == "fed-lora" and plan.solver.status == "OPTIMAL"
    L = plan.decisions["num_blocks"]
    clients = plan.decisions["clients"]
    assert sorted(clients) == ["jetson_agx_orin_32gb-0", "jetson_agx_orin_32gb-1", "jetson_orin_nano_8gb-0",
                               "jetson_orin_nano_8gb-1", "phone-7"]
    for cid, c in clients.items():
        assert {"lora_depth", "act_quant_layers", "act_bits"} <= set(c)
        d = c["lora_depth"]
        assert 1 <= d <= L and c["act_quant_layers"] == list(range(L - d, L - d + len(c["act_quant_layers"])))
        e = plan.predicted["clients"][cid]
        assert e["peak_memory_bytes"] <= 0.9 * e["memory_budget_bytes"]
    assert plan.predicted["round_time_s"] == pytest.approx(max(e["round_time_s"] for e in plan.predicted["clients"].values()))
    for name, b in plan.baselines.items():
        assert "clients" in b.decisions and "round_time_s" in b.predicted, name
    # 5 devices: the exact reference applies and FedQuad (no coverage) matches it
    assert plan.bound is not None and plan.bound.gap == pytest.approx(0.0, abs=1e-9)
    from planner.pipeline import plan_validator

    assert plan_validator(plan) == []
    # the plan never recommends what a baseline within the same constraints beats; the bound bounds every row
    # that keeps those constraints
    obj = plan.predicted["progress_rate_per_s"]
    for name, b in plan.baselines.items():
        if b.predicted["feasible"]:
            assert b.predicted["progress_rate_per_s"] <= obj * (1 + 1e-9), name
            assert b.predicted["progress_rate_per_s"] <= plan.bound.value * (1 + 1e-9), name


def test_same_inputs_same_plan_bytes(planned, pop_file: Path) -> None:
    from planner.api import plan_from_argv
    from planner.serde import dumps

    again = plan_from_argv([*ARGS, "--clients", str(pop_file)])
    assert dumps(again.plan) == dumps(planned.plan)


def test_validator_catches_a_tampered_plan(planned) -> None:
    from planner.pipeline import plan_validator

    plan = planned.plan
    clients = json.loads(json.dumps(plan.decisions["clients"]))
    cid = next(c for c in clients if clients[c]["lora_depth"] >= 2)
    clients[cid]["act_quant_layers"] = [plan.decisions["num_blocks"] - 1]     # the top block, not the lowest
    bad = dataclasses.replace(plan, decisions={**plan.decisions, "clients": clients})
    assert any("lowest" in m for m in plan_validator(bad))
    pc = json.loads(json.dumps(plan.predicted["clients"]))
    pc[cid]["memory_budget_bytes"] = 1
    bad2 = dataclasses.replace(plan, predicted={**plan.predicted, "clients": pc})
    assert any("after the margin" in m for m in plan_validator(bad2))


def test_inspect_fits_80_columns_and_shows_the_spread(planned) -> None:
    from planner.inspect_view import render

    buf = io.StringIO()
    Console(file=buf, width=80, force_terminal=False).print(render(planned.plan, planned.family, False))
    text = buf.getvalue()
    assert "spread" in text and "phone-7" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_large_population_aggregates_and_solves(tmp_path: Path) -> None:
    from planner.api import plan_from_argv
    from planner.families.fed_lora.views import device_table

    ctx = plan_from_argv([*ARGS, "--clients", "gen:300:1", "--allow-sit-out"])
    plan = ctx.plan
    assert len(plan.decisions["clients"]) == 300
    table = device_table(plan)
    assert table.row_count < 60          # aggregated by kind and configuration
    assert "clients" in next(iter(plan.baselines.values())).decisions


def test_emit_writes_the_flower_config_map_and_adapters(planned, tmp_path: Path) -> None:
    import yaml

    from planner.api import emit_artifact

    out = emit_artifact(planned.plan, tmp_path / "build")
    cfg = yaml.safe_load((out / "runtime.yaml").read_text())
    clients = cfg["clients"]
    assert sorted(clients) == sorted(planned.plan.decisions["clients"])
    for cid, rec in clients.items():
        assert all(isinstance(v, (int, float, str)) for v in rec.values())
        assert rec["lora-depth"] == planned.plan.decisions["clients"][cid]["lora_depth"]
        assert (out / "adapters" / f"depth-{rec['lora-depth']}" / "adapter_config.json").is_file()
    ac = json.loads((out / "adapters" / f"depth-{clients['phone-7']['lora-depth']}" / "adapter_config.json").read_text())
    L = planned.plan.decisions["num_blocks"]
    assert ac["layers_to_transform"] == list(range(L - clients["phone-7"]["lora-depth"], L))
    with pytest.raises(PlannerError, match="federated dataset"):
        from planner.api import run_artifact

        run_artifact(out)


@pytest.mark.parametrize("pop, words", [
    ("devices: [{id: phone-1, kind: phone_midrange_8gb, memory: 100KiB}]", ["phone-1", "needs", "KiB", "at least 1MiB"]),
    ("devices: [{kind: jetson_nanoo, count: 2}]", ["jetson_nanoo", "entry 1"]),
    ("devices: [{kind: jetson_tx2_8gb, ram: 4GiB}]", ["unknown field", "ram"]),
])
def test_bad_populations_are_one_line_errors(tmp_path: Path, pop: str, words: list[str]) -> None:
    from planner.api import plan_from_argv

    f = tmp_path / "c.yaml"
    f.write_text(pop)
    with pytest.raises(PlannerError) as info:
        plan_from_argv([*ARGS, "--clients", str(f)])
    for w in words:
        assert w in info.value.one_line(), info.value.one_line()


def test_cli_exit_code_for_a_device_that_cannot_hold_depth_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from planner.cli import main

    f = tmp_path / "c.yaml"
    f.write_text("devices: [{id: cam-3, kind: raspberry_pi5_8gb, memory: 100KiB}]")
    capsys.readouterr()
    code = main(["plan", *ARGS, "--clients", str(f)])       # in-process: the same entry point, no interpreter start
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, out.err)
    assert "Traceback" not in out.err and "cam-3" in lines[0] and "depth 1 needs" in lines[0], lines[0]
