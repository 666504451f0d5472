"""The CLI's happy paths, in-process: the plan contract, determinism, inspect, diff, profile, hardware,
config files of any name. Bad input lives in tests/cli/test_bad_input_corpus.py; one subprocess test
checks the console entry point itself."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from planner.cli import main
from tests.planner.cli_runner import run_cli

MODEL, HW = "mixtral-8x7b", "a100_24gb"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plans") / "p.json"
    assert main(["plan", MODEL, "--hardware", HW, "-o", str(out), "--sim-tokens", "256", "-q"]) == 0
    return out


def test_console_entry_point_plans_and_says_the_scenario(tmp_path: Path) -> None:
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps({"model_type": "mixtral", "vocab_size": 256, "hidden_size": 32, "intermediate_size": 64,
                               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                               "num_local_experts": 4, "num_experts_per_tok": 2}))
    proc = run_cli("plan", str(cfg), "--hardware", HW, "-q", "-o", str(tmp_path / "p.json"))
    assert proc.returncode == 0, proc.stderr
    assert "scenario: moe-offload" in proc.stderr and (tmp_path / "p.json").is_file()


def test_plan_is_byte_identical_across_runs(plan_file: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.json"
    assert main(["plan", MODEL, "--hardware", HW, "-o", str(again), "--sim-tokens", "256", "-q"]) == 0
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
        assert {"budget_bytes", "split_ratio", "cached_experts", "misses_on"} <= set(lay)
    # the simulator replays llama.cpp's and the strongest baselines by default; the others say they were not replayed
    replayed = [b["simulated"] for b in d["baselines"].values() if "not_replayed" not in b["simulated"]]
    assert "not_replayed" not in d["baselines"]["llamacpp_cpu_moe"]["simulated"]
    for block in [d["predicted"], d["simulated"]] + [b["predicted"] for b in d["baselines"].values()] + replayed:
        assert {"tpot_ms", "hit_rate", "bytes_per_token"} <= set(block)
    assert "simulated" in d["simulated"]["label"]
    budget = d["constraints"]["expert_cache_budget_bytes"]
    assert sum(l["budget_bytes"] for l in layers) <= budget


def test_inspect_fits_80_columns_and_shows_what_the_plan_decided(plan_file: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", str(plan_file))
    assert code == 0
    for text in ("per MoE layer", "misses", "host", "plan vs baselines", "mixtral_offloading", "gap to bound"):
        assert text in out
    assert max(len(line) for line in out.splitlines()) <= 80
    code, wide, _ = run(capsys, "inspect", str(plan_file), "--wide")
    assert code == 0 and "policy parameters" in wide and "hit sim" in wide
    code, js, _ = run(capsys, "inspect", str(plan_file), "--json", "--plot", str(tmp_path / "p.svg"))
    assert code == 0 and js == plan_file.read_text()                 # --json and --plot together
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()[:400]
    for suffix, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
        assert main(["inspect", str(plan_file), "--plot", str(tmp_path / f"p.{suffix}")]) == 0
        assert (tmp_path / f"p.{suffix}").read_bytes()[:4] == magic  # the format the name asks for
    capsys.readouterr()


def test_diff_passes_identical_and_flags_regressions(plan_file: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "diff", str(plan_file), str(plan_file))
    assert code == 0 and "OK: no regression" in out
    d = json.loads(plan_file.read_text())
    d["objective"]["value"] *= 1.05
    d["predicted"][d["objective"]["metric"]] *= 1.05   # a consistent plan: the objective is the metric it names
    d["decisions"]["layers"][3]["predicted"]["stall_ms"] = 1.0
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(d))
    code, out, _ = run(capsys, "diff", str(plan_file), str(worse), "--tolerance", "1%")
    assert code == 1 and "REGRESSION" in out and "ms" in out
    # the plan's own decisions and objective come before the baselines
    first = [line for line in out.splitlines() if "objective.value" in line or "decisions." in line]
    base = [i for i, line in enumerate(out.splitlines()) if "baselines." in line]
    assert first and (not base or out.splitlines().index(first[0]) < base[0])
    assert main(["diff", str(plan_file), str(worse), "--tolerance", "10%"]) == 0
    d = json.loads(plan_file.read_text())
    d["decisions"]["layers"][1]["cached_experts"] = 8  # more tops than its budget holds
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(d))
    code, out, _ = run(capsys, "diff", str(plan_file), str(broken))
    assert code == 1 and "violation" in out


def test_hardware_list_show_and_capped_names(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hardware", "list")
    assert code == 0
    for name in ("a100_24gb", "h100_80gb", "jetson_orin_nano_8gb", "raspberry_pi5_8gb", "phone_midrange_8gb"):
        assert name in out
    assert "50 MB/s" in out                          # the emulated link, not "0 GB/s"
    assert max(len(line) for line in out.splitlines()) <= 80
    code, out, _ = run(capsys, "hardware", "show", "h100_24gb")
    assert code == 0 and "memory_bytes: 25769803776" in out and "base: h100_80gb" in out


def test_hardware_measure_writes_a_usable_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine.yaml"
    code, text, _ = run(capsys, "hardware", "measure", "-o", str(out))
    assert code == 0 and "matmul_fp32" in text
    code, text, _ = run(capsys, "hardware", "show", str(out))
    assert code == 0 and "measured: true" in text
    assert main(["hardware", "measure", "-o", str(out)]) == 0       # its own previous output is replaced


def test_profile_mixtral_acceptance(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profile", MODEL)
    assert code == 0
    assert "46.70 B" in out
    assert "32 MoE layers of 32 x 8 experts, top-2" in out
    # the time and peak memory are reported (speed targets live in benchmarks, not in timed tests)
    assert re.search(r"profiled in ([\d.]+) s, peak memory ([\d.]+) (MiB|GiB)", out), out


def test_models_from_config_files_of_any_name_and_factories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import transformers

    cfg = transformers.MixtralConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                     num_experts_per_tok=2, architectures=["MixtralForCausalLM"])
    cfg.save_pretrained(tmp_path / "mymoe")      # a plain Hugging Face config.json, use_cache at its default
    (tmp_path / "phimoe.json").write_text((tmp_path / "mymoe" / "config.json").read_text())
    for path in (tmp_path / "mymoe", tmp_path / "mymoe" / "config.json", tmp_path / "phimoe.json"):
        code, out, err = run(capsys, "profile", str(path))
        assert code == 0, err
        assert "2 MoE layers of 2 x 4 experts, top-2" in out
        code, _, err = run(capsys, "plan", str(path), "--hardware", HW, "-q")
        assert code == 0, err
    code, out, _ = run(capsys, "profile", "tests.untraceable_model:traceable_factory")
    assert code == 0 and "matmul FLOPs 192" in out


def test_a_full_size_plan_from_a_tiny_trace_names_the_way_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "olmoe.npz"
    assert main(["trace", "olmoe-1b-7b", "--preset", "moepic-calibrated", "--tokens", "50", "-o", str(trace)]) == 0
    code, _, err = run(capsys, "plan", MODEL, "--hardware", HW, "--trace", str(trace))
    assert code == 2 and "--preset" in err and "--tiny" in err
