"""The LoRA fine-tuning memory model against measurement on this CPU (issue 10; docs/fed-lora.md, "What was measured").

Tiny same-architecture versions of MiniLM (BERT encoder), GPT-2 and BERT with 4 blocks: the profile is
fitted from four measured steps ((1,0), (1,1), (L,0), (L,L)); other (depth, quantised blocks, bits)
points are predicted and then measured with a real PEFT training step, counting the bytes autograd
saves for backward (saved_tensors_hooks, deduplicated by storage) plus parameter, gradient and Adam
bytes. The full-size check is in benchmarks/fed_lora.py.
"""
from __future__ import annotations

import pytest
import torch
import transformers

from profilers.fine_tuning import measure_step, profile_fine_tuning, task_model

TINY = {
    # MiniLM is a 6-layer BERT encoder with hidden 384 / 12 heads; the tiny version keeps head dim 32.
    "minilm": (lambda: transformers.BertModel(transformers.BertConfig(
        vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=256,
        max_position_embeddings=64)), "encoder"),
    "gpt2": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=256, n_positions=64, n_embd=64, n_layer=4, n_head=4, bos_token_id=0, eos_token_id=0)), "causal-lm"),
    "bert": (lambda: transformers.BertModel(transformers.BertConfig(
        vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64)), "encoder"),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


POINTS = [(2, 0, 8), (3, 0, 8), (2, 1, 8), (3, 3, 8), (3, 2, 4)]


@pytest.mark.parametrize("name", sorted(TINY))
def test_memory_model_within_10_percent_of_measurement(name: str) -> None:
    build, task = TINY[name]
    torch.manual_seed(0)
    model = task_model(build(), task)
    prof = profile_fine_tuning(model, name, batch_size=2, seq_len=24, repeats=1, local_steps=1)
    assert prof.num_blocks == 4
    for d, q, bits in POINTS:
        meas = measure_step(model, prof.layout, d, q, bits, batch_size=2, seq_len=24, count_flops=False)
        # Structure: gradients reach exactly the top d blocks.
        assert meas.trainable_blocks == tuple(range(4 - d, 4)), (d, meas.trainable_blocks)
        saved_err = prof.saved_bytes(d, q, bits) / meas.activation_bytes - 1
        total_err = prof.training_bytes(d, q, bits) / meas.training_bytes - 1
        assert abs(saved_err) <= 0.10, (name, d, q, bits, saved_err)
        assert abs(total_err) <= 0.10, (name, d, q, bits, total_err)
    # Quantisation and depth move memory the way the planner assumes.
    assert prof.saved_bytes(4, 4, 8) < prof.saved_bytes(4, 2, 8) < prof.saved_bytes(4, 0, 8)
    assert prof.saved_bytes(4, 4, 4) < prof.saved_bytes(4, 4, 8)
    assert prof.saved_bytes(1, 0) < prof.saved_bytes(2, 0) < prof.saved_bytes(4, 0)
    assert prof.backward_flops_mid > 0 and prof.forward_flops > prof.backward_flops_mid


def test_workspace_covers_the_loss_heads_transients_measured_at_the_allocator() -> None:
    """A causal LM with a large vocabulary: the logits (batch × seq × vocab fp32), their gradient and the loss's
    temporaries never reach the saved-tensor hooks; the workspace, measured at torch's CPU allocator, holds
    them, and the model's peak M(d, q) matches the allocator's peak of steps it was not fitted on within 10 %."""
    from profilers.fine_tuning import transient_bytes

    torch.manual_seed(0)
    vocab, batch, seq = 8192, 2, 32
    model = task_model(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_positions=64, n_embd=64, n_layer=4, n_head=4, bos_token_id=0, eos_token_id=0)),
        "causal-lm")
    prof = profile_fine_tuning(model, "gpt2-bigvocab", batch_size=batch, seq_len=seq, repeats=1, local_steps=1)
    logits = batch * seq * vocab * 4
    assert prof.workspace_bytes >= 1.5 * logits, (prof.workspace_bytes, logits)
    for d, q in ((2, 0), (3, 1)):
        meas = measure_step(model, prof.layout, d, q, 8, batch_size=batch, seq_len=seq, count_flops=False,
                            track_allocator=True)
        assert meas.step_peak_bytes > meas.activation_bytes + 1.5 * logits
        measured_peak = (meas.weight_bytes + meas.lora_param_bytes + meas.head_param_bytes + meas.step_peak_bytes)
        err = prof.peak_bytes(d, q, 8) / measured_peak - 1
        assert abs(err) <= 0.10, (d, q, err)
        assert transient_bytes(meas, meas.step_peak_bytes) <= meas.step_peak_bytes
