"""GGUF tensor inventory: names and shapes against the transformers models, types and sizes against llama.cpp's rules."""
from __future__ import annotations

import pytest
import torch
import transformers

from core.errors import PlannerError
from planner.registry import resolve_model
from profilers.gguf_inventory import (GGML_TYPES, bits_per_weight, inventory, tensor_bytes, tensor_types)
from profilers.models import transformers_config

ARCHS = ["mixtral-8x7b", "qwen3-30b-a3b", "qwen1.5-moe-a2.7b", "olmoe-1b-7b", "deepseek-v2-lite", "deepseek-v3",
         "gpt-oss-20b"]


@pytest.mark.parametrize("name", ARCHS)
def test_gguf_tensors_hold_exactly_the_models_parameters(name: str) -> None:
    cfg = transformers_config(resolve_model(name), tiny=True)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    hf = sum(p.numel() for p in model.parameters())
    m = inventory(cfg.to_dict())
    # DeepSeek-V3's router bias (exp_probs_b) is a buffer in transformers, a tensor in GGUF
    extra = sum(t.elements for t in m.tensors if t.stem == "exp_probs_b")
    assert sum(t.elements for t in m.tensors) - extra == hf
    names = m.names()
    assert len(names) == len(set(names))
    for i in m.moe_layers:
        for stem in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
            assert f"blk.{i}.{stem}.weight" in names


def test_block_sizes_give_the_documented_bits_per_weight() -> None:
    expect = {"Q4_0": 4.5, "Q8_0": 8.5, "Q2_K": 2.625, "Q3_K": 3.4375, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625,
              "MXFP4": 4.25, "BF16": 16, "F32": 32}
    for typ, bpw in expect.items():
        assert bits_per_weight(typ) == bpw


def test_quant_rules_of_llama_quantize() -> None:
    mix = inventory(transformers_config(resolve_model("mixtral-8x7b"), tiny=False).to_dict())
    ty = tensor_types(mix, "q4_k_m")
    assert ty["output.weight"] == "Q6_K" and ty["token_embd.weight"] == "Q4_K"
    assert ty["blk.5.attn_v.weight"] == "Q8_0" and ty["blk.5.attn_k.weight"] == "Q8_0"   # 8 experts
    assert ty["blk.5.attn_output.weight"] == "Q5_K"
    # use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2
    assert ty["blk.0.ffn_down_exps.weight"] == "Q6_K" and ty["blk.6.ffn_down_exps.weight"] == "Q6_K"
    assert ty["blk.5.ffn_down_exps.weight"] == "Q4_K" and ty["blk.5.ffn_gate_exps.weight"] == "Q4_K"
    assert ty["blk.5.ffn_norm.weight"] == "F32" and ty["blk.5.ffn_gate_inp.weight"] == "F32"
    oss = inventory(transformers_config(resolve_model("gpt-oss-20b"), tiny=False).to_dict())
    ty = tensor_types(oss, "q4_k_m")
    # 2880 columns are not a multiple of 256: Q4_K falls back to Q5_0
    assert ty["blk.0.ffn_gate_exps.weight"] == "Q5_0" and ty["blk.0.ffn_gate_exps.bias"] == "F32"
    ty = tensor_types(oss, "mxfp4_moe")
    assert ty["blk.0.ffn_up_exps.weight"] == "MXFP4" and ty["blk.0.attn_q.weight"] == "Q8_0"
    assert set(tensor_types(oss, "bf16").values()) == {"BF16", "F32"}
    with pytest.raises(PlannerError, match="--quant"):
        tensor_types(oss, "q4_k_xl")


@pytest.mark.parametrize("name,quant,gb", [
    # sizes shown on the Hugging Face listings of the published GGUF files (decimal GB)
    ("qwen3-30b-a3b", "q4_k_m", 18.6),     # Qwen/Qwen3-30B-A3B-GGUF
    ("qwen3-30b-a3b", "q8_0", 32.5),
    ("gpt-oss-20b", "mxfp4_moe", 12.1),    # ggml-org/gpt-oss-20b-GGUF
    ("mixtral-8x7b", "q8_0", 49.6),        # TheBloke/Mixtral-8x7B-v0.1-GGUF
])
def test_file_sizes_match_published_gguf_files(name: str, quant: str, gb: float) -> None:
    m = inventory(transformers_config(resolve_model(name), tiny=False).to_dict())
    ty = tensor_types(m, quant)
    total = sum(tensor_bytes(t, ty[t.name]) for t in m.tensors)
    assert total / 1e9 == pytest.approx(gb, rel=0.01)


def test_unknown_architecture_is_a_one_line_error() -> None:
    with pytest.raises(PlannerError, match="model_type 'llama'"):
        inventory({"model_type": "llama", "hidden_size": 8})
    assert all(GGML_TYPES[t][1] > 0 for t in GGML_TYPES)
