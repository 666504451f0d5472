"""`--target llama.cpp`: plans in llama.cpp's space, VRAM accounting with sources, and the exported flags
applied to every GGUF tensor name with llama.cpp's own placement rule and three regex engines."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from codegen.llamacpp import SAFE_PATTERN, flag_lines, n_gpu_layers_flag, override_patterns
from planner.api import plan_from_argv
from planner.cli import main
from planner.families.moe_offload import GGUF_FILE_TYPES
from planner.families.moe_offload.llamacpp.lowering import GROUPS
from planner.families.moe_offload.llamacpp.phases import n_gpu_layers
from planner.pipeline import plan_validator
from planner.registry import resolve_model
from planner.serde import dumps
from profilers.gguf_inventory import FILE_TYPES, inventory
from profilers.models import transformers_config

HERE = Path(__file__).resolve().parents[1]
# llama.cpp common/common.h: LLM_FFN_EXPS_REGEX and llm_ffn_exps_block_regex(i) (what --n-cpu-moe i adds)
LLM_FFN_EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"


# ------------------------------------------------------------------ regex engines
Matcher = Callable[[list[str], list[str]], np.ndarray]   # (patterns, names) -> bool matrix [name, pattern]


def python_search(patterns: list[str], names: list[str]) -> np.ndarray:
    rx = [re.compile(p) for p in patterns]
    return np.array([[r.search(n) is not None for r in rx] for n in names], dtype=bool).reshape(len(names), len(patterns))


def node_search(patterns: list[str], names: list[str]) -> np.ndarray:
    """ECMAScript RegExp.prototype.test (a search) in Node."""
    script = ("const [p, n] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "const rx = p.map(s => new RegExp(s));"
              "console.log(JSON.stringify(n.map(x => rx.map(r => r.test(x)))));")
    out = subprocess.run(["node", "-e", script], input=json.dumps([patterns, names]), capture_output=True, text=True,
                         timeout=60, check=True)
    return np.array(json.loads(out.stdout), dtype=bool).reshape(len(names), len(patterns))


CXX = r"""
#include <iostream>
#include <regex>
#include <string>
#include <vector>
// std::regex with its default (ECMAScript) grammar and regex_search, as llama.cpp applies -ot patterns
int main() {
    std::string line; std::vector<std::string> pats, names; bool second = false;
    while (std::getline(std::cin, line)) { if (line.empty()) { second = true; continue; } (second ? names : pats).push_back(line); }
    std::vector<std::regex> rx; for (auto &p : pats) rx.emplace_back(p);
    for (auto &n : names) { std::string row; for (auto &r : rx) row += std::regex_search(n, r) ? '1' : '0'; std::cout << row << '\n'; }
}
"""


@pytest.fixture(scope="module")
def cxx_search(tmp_path_factory: pytest.TempPathFactory) -> Matcher | None:
    if shutil.which("g++") is None:
        return None
    d = tmp_path_factory.mktemp("cxx")
    (d / "m.cpp").write_text(CXX)
    subprocess.run(["g++", "-O0", "-std=c++17", str(d / "m.cpp"), "-o", str(d / "m")], check=True, timeout=300)

    def run(patterns: list[str], names: list[str]) -> np.ndarray:
        text = "\n".join(patterns) + "\n\n" + "\n".join(names) + "\n"
        out = subprocess.run([str(d / "m")], input=text, capture_output=True, text=True, timeout=60, check=True)
        return np.array([[c == "1" for c in row] for row in out.stdout.split()], dtype=bool).reshape(len(names), len(patterns))
    return run


def engines(cxx: Matcher | None) -> list[Matcher]:
    out: list[Matcher] = [python_search]
    if shutil.which("node"):
        out.append(node_search)
    if cxx is not None:
        out.append(cxx)
    return out


# ------------------------------------------------------------------ llama.cpp's placement rule
def llamacpp_host_set(names: list[str], n_layer: int, ngl: int, patterns: list[str], match: np.ndarray) -> set[str]:
    """Which tensors llama.cpp keeps in host memory for `-ngl ngl` and `-ot p=CPU` for each pattern
    (`match[i, j]`: pattern j searched in name i): the input embedding always; a block below
    n_layer - ngl wholly; the output head and its norm unless ngl > n_layer; any tensor an override matches."""
    first_gpu = n_layer - min(ngl, n_layer)
    host = set()
    for i, name in enumerate(names):
        m = re.match(r"blk\.(\d+)\.", name)
        if match[i].any() or name == "token_embd.weight":
            host.add(name)
        elif m and int(m.group(1)) < first_gpu:
            host.add(name)
        elif not m and name.startswith("output") and ngl <= n_layer:
            host.add(name)
    return host


def planned_host_set(decisions: dict, names: list[str]) -> set[str]:
    """The tensors the plan's decisions keep in host memory (weights and their biases)."""
    host = {"token_embd.weight"}
    by_block = {l["index"]: l for l in decisions["layers"]}
    for name in names:
        m = re.match(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)$", name)
        if m:
            lay = by_block[int(m.group(1))]
            if lay["host_block"] or m.group(2) in lay["host_groups"]:
                host.add(name)
        elif name.startswith("output") and not decisions["output_on_gpu"]:
            host.add(name)
    return host


def applied_host_set(decisions: dict, names: list[str], match: Matcher) -> set[str]:
    import shlex

    # each line as a shell (or xargs) reads it: quotes removed, one flag and its value
    lines = [shlex.split(l) for l in flag_lines(decisions)]
    assert all(len(l) == 2 for l in lines)
    ngl = int(next(v for f, v in lines if f == "-ngl"))
    patterns = [v.rsplit("=", 1)[0] for f, v in lines if f == "-ot"]
    assert all(v.endswith("=CPU") for f, v in lines if f == "-ot")
    m = match(patterns, names) if patterns else np.zeros((len(names), 0), dtype=bool)
    return llamacpp_host_set(names, int(decisions["n_layer"]), ngl, patterns, m)


def random_decisions(names: list[str], n_layer: int, rng: np.random.Generator) -> dict:
    """A random placement in the plan's decision format (host prefix, host groups per block, output side)."""
    host_layers = int(rng.choice([0, 0, int(rng.integers(0, n_layer + 1))]))
    out_gpu = host_layers == 0 and bool(rng.integers(0, 2))
    layers = []
    for l in range(n_layer):
        present = [g for g in GROUPS if f"blk.{l}.{g}.weight" in names]
        host = [] if l < host_layers else [g for g in present if rng.random() < 0.4]
        layers.append({"block": f"blk.{l}", "index": l, "host_block": l < host_layers,
                       "gpu_groups": [] if l < host_layers else [g for g in present if g not in host],
                       "host_groups": present if l < host_layers else host})
    return {"groups": list(GROUPS), "layers": layers, "host_layers": host_layers, "output_on_gpu": out_gpu,
            "n_layer": n_layer, "n_gpu_layers": n_gpu_layers(host_layers, n_layer, out_gpu), "ubatch": 512,
            "batch": 1, "memory": {"n_ctx": 4096}}


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("model", ["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "gpt-oss-20b"])
def test_exported_regexes_put_exactly_the_planned_tensors_in_host_memory(model: str, cxx_search: Matcher | None) -> None:
    m = inventory(transformers_config(resolve_model(model), tiny=False).to_dict())
    names = m.names()
    rng = np.random.default_rng(abs(hash(model)) % 2**32)
    cases = [random_decisions(names, m.n_layer, rng) for _ in range(6)]
    # the plan that reproduces --n-cpu-moe 7 (and a host-layer prefix of 3) must select what llama.cpp's own list selects
    ncm = random_decisions(names, m.n_layer, rng)
    for lay in ncm["layers"]:
        lay["host_block"] = False
        lay["host_groups"] = [g for g in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")
                              if lay["index"] < 7 and f"blk.{lay['index']}.{g}.weight" in names]
    ncm.update(host_layers=0, output_on_gpu=True, n_gpu_layers=m.n_layer + 1)
    cases.append(ncm)
    for dec in cases:
        pats = override_patterns(dec)
        assert all(SAFE_PATTERN.match(p) and "," not in p and "=" not in p for p in pats)
        want = planned_host_set(dec, names)
        results = [applied_host_set(dec, names, eng) for eng in engines(cxx_search)]
        for got in results:
            assert got == want, (sorted(got ^ want)[:6], pats)
    own = [f"blk\\.{i}{LLM_FFN_EXPS_REGEX}" for i in range(7)]
    llama_own = llamacpp_host_set(names, m.n_layer, 99, own, python_search(own, names))
    assert llama_own == planned_host_set(ncm, names)


@pytest.fixture(scope="module")
def mixtral_plan() -> object:
    return plan_from_argv(["mixtral-8x7b", "--hardware", "rtx4090_24gb", "--target", "llama.cpp", "--context", "4096"]).plan


def test_plan_is_optimal_in_its_space_with_accounting_sources(mixtral_plan: object, cxx_search: Matcher | None) -> None:
    p = mixtral_plan
    d = p.decisions
    assert plan_validator(p) == []
    assert d["target"] == "llama.cpp" and p.solver.status == "OPTIMAL"
    for name, b in p.baselines.items():
        if b.predicted["fits"]:
            assert p.objective.value <= b.predicted["tpot_ms"] * (1 + 1e-9), name
    assert set(p.baselines) == {"cpu_moe", "n_cpu_moe", "layer_fill"}
    assert p.baselines["n_cpu_moe"].params["n_cpu_moe"] >= 1
    mem = d["memory"]
    for key in ("weights", "kv_cache", "compute_buffer", "margin", "input_embedding", "output_head", "cuda_context",
                "driver_reserved"):
        assert mem["sources"][key]
    # Mixtral: 32 blocks x 2 x 8 KV heads x 128 x f16 per token at n_ctx 4096
    assert mem["kv_cache_bytes_all_blocks"] == 32 * 2 * 8 * 128 * 2 * 4096
    assert p.predicted["vram_bytes"] <= p.constraints["weights_and_kv_budget_bytes"]
    assert mem["weights_and_kv_budget_bytes"] == (mem["device_memory_bytes"] - mem["compute_buffer_bytes"]
                                                  - mem["margin_bytes"] - mem["cuda_context_bytes"]
                                                  - mem["driver_reserved_bytes"])
    assert d["tensor_types"]["ffn_down_exps"] == {"Q4_K": 16, "Q6_K": 16}
    names = inventory(transformers_config(resolve_model("mixtral-8x7b"), tiny=False).to_dict()).names()
    for eng in engines(cxx_search):
        assert applied_host_set(dict(d), names, eng) == planned_host_set(dict(d), names)
    assert n_gpu_layers_flag(d) == 99 or d["host_layers"] > 0 or not d["output_on_gpu"]
    # prompt processing: with 512-token micro-batches llama.cpp copies every used expert of a host tensor to the GPU;
    # Mixtral's 512 tokens use all 8 experts, so --cpu-moe moves all its host expert bytes over the link once
    cm = p.baselines["cpu_moe"].predicted
    link = 2.5e10  # rtx4090_24gb host_to_device_bytes_per_s
    assert cm["ttft_ms"] >= 0.999 * cm["host_group_bytes"] / link * 1e3
    assert p.predicted["ttft_ms"] < cm["ttft_ms"]
    assert p.predicted["e2e_ms"] == pytest.approx(p.predicted["ttft_ms"] + 256 * p.predicted["tpot_ms"])


def test_plans_are_deterministic_and_more_context_costs_vram() -> None:
    a = plan_from_argv(["qwen3-30b-a3b", "--hardware", "a100_24gb", "--target", "llama.cpp", "--quant", "q8_0"]).plan
    b = plan_from_argv(["qwen3-30b-a3b", "--hardware", "a100_24gb", "--target", "llama.cpp", "--quant", "q8_0"]).plan
    assert dumps(a) == dumps(b)
    c = plan_from_argv(["qwen3-30b-a3b", "--hardware", "a100_24gb", "--target", "llama.cpp", "--quant", "q8_0",
                        "--context", "32768"]).plan
    assert c.decisions["memory"]["kv_cache_bytes_all_blocks"] == 16 * a.decisions["memory"]["kv_cache_bytes_all_blocks"]
    assert c.objective.value >= a.objective.value


def test_export_cli_writes_the_flags(mixtral_plan: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(dumps(mixtral_plan))
    assert main(["export", str(plan_file), "--to", "llama.cpp", "-o", str(tmp_path / "flags.txt")]) == 0
    out = capsys.readouterr().out
    assert "-ngl " in out and "-ub 512" in out and "-c 4096" in out
    # host tensors: pinned host buffers, not the file mapping (llama.cpp warns about mmap with CPU overrides)
    assert "\n--load-mode none\n" in out and "--no-mmap" in out.split("-ngl ")[0]
    written = (tmp_path / "flags.txt").read_text()
    assert [l for l in written.splitlines() if not l.startswith("#")] == [l for l in out.splitlines() if not l.startswith("#")]


@pytest.mark.parametrize("argv,fragment", [
    (["plan", "mixtral-8x7b", "--hardware", "a100_24gb", "--quant", "q8_0"], "--quant applies to --target llama.cpp only"),
    (["plan", "mixtral-8x7b", "--hardware", "a100_24gb", "--target", "llama.cpp", "--expert-bits", "4"], "--expert-bits"),
    (["plan", "mixtral-8x7b", "--hardware", "a100_24gb", "--target", "llama.cpp", "--quant", "q9_k"], "--quant"),
    (["plan", "mixtral-8x7b", "--hardware", "cpu_emulated_link", "--target", "llama.cpp"], "host memory bandwidth"),
    (["export", str(HERE / "golden" / "mixtral-8x7b.a100_24gb.json"), "--to", "llama.cpp"], "--target llama.cpp"),
])
def test_bad_requests_are_one_line_errors(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_file_type_choices_match_the_inventory() -> None:
    assert set(GGUF_FILE_TYPES) == set(FILE_TYPES)
