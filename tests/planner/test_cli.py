"""The CLI end to end: plan, inspect, diff, profile, hardware, and every bad-input path (exit 2, one line)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.planner.cli_runner import assert_one_line_error, run_cli

MODEL, HW = "mixtral-8x7b", "a100_24gb"


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plans") / "p.json"
    proc = run_cli("plan", MODEL, "--hardware", HW, "-o", str(out), "--sim-tokens", "256", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "scenario: moe-offload" in proc.stderr
    return out


def test_plan_is_byte_identical_across_runs(plan_file: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.json"
    proc = run_cli("plan", MODEL, "--hardware", HW, "-o", str(again), "--sim-tokens", "256", "-q")
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == plan_file.read_bytes()


def test_plan_json_has_the_contract(plan_file: Path) -> None:
    d = json.loads(plan_file.read_text())
    for key in ("schema_version", "family", "model", "hardware", "solver", "decisions", "predicted", "baselines", "bound"):
        assert key in d
    assert d["family"] == "moe-offload" and d["model"]["name"] == MODEL
    for key in ("name", "config", "status", "wall_time_s"):
        assert key in d["solver"]
    layers = d["decisions"]["layers"]
    assert len(layers) == 32
    for lay in layers:
        assert {"budget_bytes", "split_ratio", "cached_experts"} <= set(lay)
    for block in [d["predicted"], d["simulated"]] + [b["predicted"] for b in d["baselines"].values()] \
            + [b["simulated"] for b in d["baselines"].values()]:
        assert {"tpot_ms", "hit_rate", "bytes_per_token"} <= set(block)
    assert "simulated" in d["simulated"]["label"]
    budget = d["constraints"]["expert_cache_budget_bytes"]
    assert sum(l["budget_bytes"] for l in layers) <= budget


def test_inspect_tables_json_and_plot(plan_file: Path, tmp_path: Path) -> None:
    proc = run_cli("inspect", str(plan_file))
    assert proc.returncode == 0, proc.stderr
    for text in ("per MoE layer", "plan vs baselines", "mixtral_offloading", "gap to bound"):
        assert text in proc.stdout
    js = run_cli("inspect", str(plan_file), "--json")
    assert js.stdout == plan_file.read_text()
    png = tmp_path / "plot.png"
    proc = run_cli("inspect", str(plan_file), "--plot", str(png))
    assert proc.returncode == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_diff_passes_identical_and_flags_regressions(plan_file: Path, tmp_path: Path) -> None:
    same = run_cli("diff", str(plan_file), str(plan_file))
    assert same.returncode == 0 and "OK: no regression" in same.stdout
    d = json.loads(plan_file.read_text())
    d["objective"]["value"] *= 1.05
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(d))
    proc = run_cli("diff", str(plan_file), str(worse), "--tolerance", "1%")
    assert proc.returncode == 1 and "REGRESSION" in proc.stdout
    assert run_cli("diff", str(plan_file), str(worse), "--tolerance", "10%").returncode == 0
    d = json.loads(plan_file.read_text())
    d["decisions"]["layers"][1]["cached_experts"] = 8  # more tops than its budget holds
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(d))
    proc = run_cli("diff", str(plan_file), str(broken))
    assert proc.returncode == 1 and "violation" in proc.stdout


def test_hardware_list_show_and_capped_names() -> None:
    proc = run_cli("hardware", "list")
    assert proc.returncode == 0
    for name in ("a100_24gb", "h100_80gb", "jetson_orin_nano_8gb", "raspberry_pi5_8gb", "phone_midrange_8gb"):
        assert name in proc.stdout
    show = run_cli("hardware", "show", "h100_24gb")
    assert show.returncode == 0
    assert "memory_bytes: 25769803776" in show.stdout and "base: h100_80gb" in show.stdout


def test_hardware_measure_writes_a_usable_profile(tmp_path: Path) -> None:
    out = tmp_path / "mine.yaml"
    proc = run_cli("hardware", "measure", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "matmul_fp32" in proc.stdout
    show = run_cli("hardware", "show", str(out))
    assert show.returncode == 0 and "measured: true" in show.stdout


def test_profile_mixtral_acceptance() -> None:
    proc = run_cli("profile", MODEL)
    assert proc.returncode == 0, proc.stderr
    assert "46.70 B" in proc.stdout
    assert "32 MoE layers of 32 x 8 experts, top-2" in proc.stdout
    m = re.search(r"profiled in ([\d.]+) s, peak memory ([\d.]+) (MiB|GiB)", proc.stdout)
    assert m, proc.stdout
    seconds, mem, unit = float(m.group(1)), float(m.group(2)), m.group(3)
    assert seconds < 30
    assert (mem / 1024 if unit == "MiB" else mem) < 2.0


@pytest.mark.parametrize("args,fragments", [
    (("plan", "mixtral-8x7", "--hardware", HW), ("unknown model 'mixtral-8x7'", "mixtral-8x7b")),
    (("plan", MODEL, "--hardware", "a100_24g"), ("unknown hardware", "a100_24gb")),
    (("plan", MODEL, "--hardware", "a100_2gb"), ("need", "at least")),
    (("plan", MODEL, "--hardware", HW, "--expert-budget", "40GiB"), ("does not fit", "--expert-budget")),
    (("plan", MODEL, "--hardware", "a100_200gb"), ("more memory than",)),
    (("plan", "gpt2", "--hardware", HW), ("no scenario applies",)),
    (("profile", "tests.untraceable_model:factory"), ("cannot capture the graph",)),
    (("inspect", "does/not/exist.json"), ("does not exist",)),
    (("diff", "a.json", "b.json", "--tolerance", "x"), ()),
])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    assert_one_line_error(run_cli(*args), *fragments)


def test_malformed_and_wrong_version_plans(plan_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_error(run_cli("inspect", str(bad)), "not valid JSON")
    d = json.loads(plan_file.read_text())
    d["schema_version"] = 99
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    assert_one_line_error(run_cli("inspect", str(old)), "schema_version 99")


def test_trace_for_another_model_is_rejected(tmp_path: Path) -> None:
    trace = tmp_path / "olmoe.npz"
    proc = run_cli("trace", "olmoe-1b-7b", "--preset", "moepic-calibrated", "--tokens", "50", "-o", str(trace))
    assert proc.returncode == 0, proc.stderr
    assert_one_line_error(run_cli("plan", MODEL, "--hardware", HW, "--trace", str(trace)), "trace", "mixtral-8x7b")


def test_model_from_config_json_and_factory(tmp_path: Path) -> None:
    import transformers

    cfg = transformers.MixtralConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                     num_experts_per_tok=2, architectures=["MixtralForCausalLM"])
    cfg.save_pretrained(tmp_path / "mymoe")
    proc = run_cli("profile", str(tmp_path / "mymoe" / "config.json"))
    assert proc.returncode == 0, proc.stderr
    assert "2 MoE layers of 2 x 4 experts, top-2" in proc.stdout
    fac = run_cli("profile", "tests.untraceable_model:traceable_factory")
    assert fac.returncode == 0 and "matmul FLOPs 192" in fac.stdout
    assert_one_line_error(run_cli("profile", str(tmp_path / "missing" / "config.json")), "does not exist")
    assert_one_line_error(run_cli("profile", "no_such_module:factory"), "cannot import")
