"""fed-expand's rewrite: the expanded model computes exactly what the base computes (tiny and full SmolLM2), and
the measured memory/time model predicts a configuration it was not fitted on."""
from __future__ import annotations

import pytest
import torch
import transformers

from codegen.fed_expand import IDENTITY_TOLERANCE, expand_for_plan, identity_gap
from core.errors import InputMismatchError


def _tiny(layers: int = 4) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_expansion_is_the_identity_on_the_tiny_model() -> None:
    base = _tiny()
    decisions = {"num_base_blocks": 4, "added_after": [1, 3], "added_layers": [2, 5]}
    big = expand_for_plan(base, decisions)
    assert len(big.model.layers) == 6
    assert identity_gap(base, big, 256) <= IDENTITY_TOLERANCE
    with pytest.raises(InputMismatchError):
        expand_for_plan(base, {**decisions, "num_base_blocks": 8})


def test_expansion_is_the_identity_on_full_smollm2(smollm2_model) -> None:
    decisions = {"num_base_blocks": 30, "added_after": [6, 14, 22, 29], "added_layers": [7, 16, 25, 33]}
    big = expand_for_plan(smollm2_model, decisions)
    assert identity_gap(smollm2_model, big, int(smollm2_model.config.vocab_size), seq=16) <= IDENTITY_TOLERANCE


def test_memory_model_predicts_an_unfitted_configuration() -> None:
    from profilers.block_expansion import base_model_bytes, profile_block_expansion, validate_profile
    from testbeds.block_expansion import expand_blocks

    torch.set_num_threads(1)
    base = _tiny()
    big, new = expand_blocks(base, after=[1, 3])
    prof = profile_block_expansion(big, base_model_bytes(base), "tiny", 4, 24, 6, repeats=1)
    check = validate_profile(big, prof, new, repeats=1)               # two trained blocks, lowest = 2
    assert abs(check["activation_error"]) <= 0.02, check               # saved-tensor bytes: deterministic
